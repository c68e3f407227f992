//! The command line and the scenario runner, fuzzed as a new user would try them: random
//! argument vectors for every subcommand, and the shipped scenario files with their numbers
//! pushed to the extremes, each run as a subprocess under a memory and time cap
//! ([`common::MEMORY_CAP_BYTES`], [`common::TIME_CAP_S`]). Whatever the input: no panic, an
//! exit status of 0, 1, 2 or 3, one line of error for status 2, and nothing killed by a cap.
//! `HYPDBG_FUZZ_CASES` sets the number of cases per property (default 64).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{hypdbg_capped, temp_file};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("HYPDBG_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// The outcome every invocation must have, whatever it was given.
fn judge(args: &[String], (code, out, err): (i32, String, String)) -> Result<(), TestCaseError> {
    let shown = format!("hypdbg {args:?}\nstatus {code}\nstdout: {out}\nstderr: {err}");
    prop_assert!(!err.contains("panicked"), "a panic: {}", shown);
    prop_assert!(code != 124, "ran past the time cap: {}", shown);
    prop_assert!(
        matches!(code, 0..=3),
        "status outside 0..=3 (a cap killed it?): {}",
        shown
    );
    if code == 2 {
        // One line, or (a scenario file with several problems) one located line per problem.
        let file = args.iter().find(|a| a.ends_with(".toml"));
        let located = |l: &str| file.is_some_and(|f| l.starts_with(&format!("{f}:")));
        prop_assert!(
            err.lines().count() == 1 || err.lines().all(located),
            "{}",
            shown
        );
    }
    Ok(())
}

/// Values a user might type anywhere.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("0x10".to_string()),
        Just("0b101".to_string()),
        Just("-1".to_string()),
        Just("4294967295".to_string()),
        Just("0xffffffffffffffff".to_string()),
        Just("18446744073709551616".to_string()),
        Just("0x1e7".to_string()),
        Just("0x10305106".to_string()),
        Just("".to_string()),
        Just("min".to_string()),
        Just("max".to_string()),
        Just("pentium".to_string()),
        Just("era1".to_string()),
        Just("seed-v2".to_string()),
        Just("store".to_string()),
        Just("rw".to_string()),
        Just("é\\n".to_string()),
        "[a-z0-9_]{1,12}",
    ]
}

fn flag() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "--cpu",
        "--variant",
        "--random",
        "--json",
        "--list",
        "--timeout",
        "--trace",
        "--flow",
        "--bcr",
        "--bvr",
        "--pc",
        "--el",
        "--contextidr",
        "--unit",
        "--wcr",
        "--wvr",
        "--addr",
        "--size",
        "--access",
        "--len",
        "--max-actions",
        "--max-budget",
        "--help",
    ])
    .prop_map(str::to_string)
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![3 => flag(), 2 => value()]
}

/// A subcommand with the arguments that keep it quick (check: one CPU, bounded).
fn command() -> impl Strategy<Value = Vec<String>> {
    let head = proptest::sample::select(vec![
        vec!["decode", "dbgbcr"],
        vec!["decode", "dbgwcr"],
        vec!["decode", "mdscr"],
        vec!["decode", "mdcr"],
        vec!["decode", "esr"],
        vec!["decode", "id_aa64dfr0"],
        vec!["decode"],
        vec!["match", "break"],
        vec!["match", "watch"],
        vec!["encode", "break"],
        vec!["encode", "watch"],
        vec!["check", "--cpu", "min", "--random", "2", "--timeout", "5"],
        vec!["check", "--list"],
        vec!["run", "--timeout", "5"],
        vec!["--timeout", "5"],
    ]);
    (head, proptest::collection::vec(token(), 0..6)).prop_map(|(h, rest)| {
        let mut v: Vec<String> = h.iter().map(|s| s.to_string()).collect();
        v.extend(rest);
        v
    })
}

#[test]
fn random_argument_vectors() {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&command(), |args| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        judge(&args, hypdbg_capped(&refs))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every shipped scenario file.
fn shipped() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "toml").then(|| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                (name, std::fs::read_to_string(&p).unwrap())
            })
        })
        .collect();
    v.sort();
    v
}

/// The `k`-th number of `text` (modulo how many it has) replaced by `with`.
fn replace_number(text: &str, k: usize, with: &str) -> String {
    let starts: Vec<usize> = text
        .char_indices()
        .filter(|&(i, c)| {
            c.is_ascii_digit() && !text[..i].ends_with(|p: char| p.is_ascii_alphanumeric())
        })
        .map(|(i, _)| i)
        .collect();
    if starts.is_empty() {
        return text.to_string();
    }
    let s = starts[k % starts.len()];
    let e = text[s..]
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .map_or(text.len(), |n| s + n);
    format!("{}{with}{}", &text[..s], &text[e..])
}

#[test]
fn shipped_scenarios_with_extreme_numbers() {
    let files = shipped();
    assert!(files.len() >= 13);
    let extremes = vec![
        "0",
        "1",
        "3",
        "64",
        "65536",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "0xffffffffffffffff",
    ];
    let strategy = (
        0..files.len(),
        any::<usize>(),
        proptest::sample::select(extremes),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(f, k, with, trace)| {
        let (name, text) = &files[f];
        let mutated = replace_number(text, k, with);
        let p = temp_file(&format!("extreme-{name}"), &mutated);
        let mut args = vec!["run".to_string(), p.display().to_string()];
        args.extend(["--timeout".to_string(), "5".to_string()]);
        if trace {
            args.push("--trace".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        judge(&args, hypdbg_capped(&refs))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
