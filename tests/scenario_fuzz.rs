//! Fuzzing the scenario parser (proptest): arbitrary bytes, arbitrary TOML-like text,
//! generated documents made of the format's own keys and values, and mutations of the
//! shipped scenario files. Whatever the input: no panic, and every error carries a line and
//! column inside the file. Mutants that still parse are also played (with a small
//! instruction budget): the runner must not panic either.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use hypdbg::play::{PlayOptions, play};
use hypdbg::scenario::Op;
use hypdbg::scenario::source::{ScenarioFile, SourceErrors};
use proptest::prelude::*;

fn check_errors(name: &str, text: &str, e: &SourceErrors) {
    assert!(!e.errors.is_empty(), "an error without a problem");
    let lines: Vec<&str> = text.split('\n').collect();
    for x in &e.errors {
        assert!(x.line >= 1 && x.col >= 1, "{x}");
        assert!(
            x.line <= lines.len(),
            "{x}: the file has {} lines",
            lines.len()
        );
        let len = lines[x.line - 1].chars().count();
        assert!(
            x.col <= len + 1,
            "{x}: line {} has {len} characters",
            x.line
        );
        assert!(!x.message.trim().is_empty(), "{x}");
        assert!(
            x.to_string()
                .starts_with(&format!("{name}:{}:{}: ", x.line, x.col)),
            "{x}"
        );
        assert!(!x.message.contains('\n'), "one line per problem: {x:?}");
    }
}

fn expanded(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|o| match o {
            Op::Repeat { times, ops } => u64::from(*times).saturating_mul(expanded(ops)),
            Op::Run { count, .. } | Op::Step { count, .. } => u64::from(count.unwrap_or(1)),
            _ => 1,
        })
        .fold(0u64, u64::saturating_add)
}

/// Parse; on success play a small enough scenario with a small budget.
fn parse_and_maybe_play(text: &str) {
    match ScenarioFile::parse("fuzz.toml", text) {
        Err(e) => check_errors("fuzz.toml", text, &e),
        Ok(mut f) => {
            if expanded(&f.scenario.ops) <= 200 {
                f.scenario.budget = Some(f.scenario.budget.unwrap_or(2000).min(2000));
                let _ = play(&f, &PlayOptions::default(), &mut |_| {});
            }
        }
    }
}

fn shipped() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| !p.ends_with("userspace-single-step.toml"))
        .collect();
    v.sort();
    v.into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// A mutation of a file's text.
#[derive(Clone, Debug)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceNumber(usize, String),
    ReplaceWord(usize, String),
    InsertLine(usize, String),
    Truncate(usize),
    InsertChar(usize, char),
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % n);
            }
        }
        Mutation::DuplicateLine(i) => {
            if let Some(l) = lines.get(i % n).cloned() {
                lines.insert(i % n, l);
            }
        }
        Mutation::SwapLines(a, b) => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
        }
        Mutation::ReplaceNumber(k, with) => {
            // The k-th run of digits (with an optional 0x prefix) becomes `with`.
            let mut out = String::new();
            let mut count = 0;
            let mut chars = text.char_indices().peekable();
            let mut last = 0;
            let mut target = None;
            while let Some((i, c)) = chars.next() {
                if c.is_ascii_digit() {
                    let start = i;
                    let mut end = i + c.len_utf8();
                    while let Some(&(j, d)) = chars.peek() {
                        if d.is_ascii_hexdigit() || d == 'x' || d == '_' {
                            end = j + d.len_utf8();
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    count += 1;
                    target = Some((start, end));
                    if count > *k {
                        break;
                    }
                }
            }
            if let Some((s, e)) = target {
                out.push_str(&text[last..s]);
                out.push_str(with);
                last = e;
            }
            out.push_str(&text[last..]);
            return out;
        }
        Mutation::ReplaceWord(k, with) => {
            // The k-th quoted string's content becomes `with`.
            let quotes: Vec<usize> = text.match_indices('"').map(|(i, _)| i).collect();
            if quotes.len() >= 2 {
                let pair = (k % (quotes.len() / 2)) * 2;
                let (a, b) = (quotes[pair], quotes[pair + 1]);
                return format!("{}\"{with}\"{}", &text[..a], &text[b + 1..]);
            }
        }
        Mutation::InsertLine(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
        Mutation::Truncate(at) => {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return text[..at].to_string();
        }
        Mutation::InsertChar(at, c) => {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return format!("{}{c}{}", &text[..at], &text[at..]);
        }
    }
    lines.join("\n")
}

const KEYS: &[&str] = &[
    "name",
    "description",
    "flow",
    "cpus",
    "vcpus",
    "vcpu_cpus",
    "budget",
    "code",
    "symbols",
    "ops",
    "do",
    "vcpu",
    "imm",
    "control",
    "bcr",
    "bvr",
    "wcr",
    "wvr",
    "cpu",
    "every",
    "until_stop",
    "count",
    "on",
    "addr",
    "len",
    "access",
    "name",
    "reg",
    "value",
    "bytes",
    "after",
    "times",
    "expect",
    "exit",
    "hvc",
    "ec",
    "far",
    "pc",
    "stops",
    "regs",
    "memory",
    "exceptions",
    "all_exceptions",
    "error",
    "elr",
    "expect_violations",
    "x0",
    "MDSCR_EL1",
    "DBGBCR9_EL1",
];

const WORDS: &[&str] = &[
    "run",
    "kvm_run",
    "run_until_stop",
    "set_guest_debug",
    "migrate",
    "irq",
    "run_concurrently",
    "step",
    "single_step",
    "break",
    "delete_break",
    "watch",
    "delete_watch",
    "sw_break",
    "delete_sw_break",
    "detach",
    "snapshot",
    "restore",
    "migrate_vm",
    "set_one_reg",
    "get_one_reg",
    "write_memory",
    "preempt",
    "check",
    "repeat",
    "era1",
    "era3",
    "seed-v2",
    "min",
    "max",
    "cortex-a57",
    "0x10305106",
    "all",
    "hvc",
    "step",
    "breakpoint",
    "BRK64",
    "WATCHPT_LOW",
    "ENABLE|SINGLESTEP",
    "ENABLE|BOGUS",
    "write",
    "read",
    "a",
    "a+4",
    "b-8",
    "nowhere",
    "x0",
    "pc",
    "DBGBVR0_EL1",
    "inv1",
    "nop\nstop #0",
    "a: nop\nb: stop #1\n",
    "frob",
    "",
    "0xffffffffffffffff",
    "mov x0, #0x10000\nstr x0, [x0]\nstop #0",
];

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0u64..0x20).prop_map(|v| v.to_string()),
        (0u64..0x20_0000).prop_map(|v| format!("{v:#x}")),
        proptest::sample::select(WORDS).prop_map(|w| format!("{w:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("1.5".to_string()),
        Just("1979-05-27".to_string()),
        "[a-z0-9_+-]{0,8}".prop_map(|s| format!("\"{s}\"")),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..4).prop_map(
                |kv| {
                    let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", body.join(", "))
                }
            ),
        ]
    })
}

fn op_table() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("[[ops]]"), Just("[[ops.ops]]"), Just("[ops.expect]")],
        proptest::sample::select(WORDS),
        proptest::collection::vec((proptest::sample::select(KEYS), value()), 0..5),
    )
        .prop_map(|(header, d, fields)| {
            let mut s = format!("{header}\ndo = {d:?}\n");
            for (k, v) in fields {
                s += &format!("{k} = {v}\n");
            }
            s
        })
}

fn document() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(&["min", "cortex-a57", "max", "0x10305106", "nope"][..]),
        proptest::sample::select(WORDS),
        proptest::collection::vec((proptest::sample::select(KEYS), value()), 0..4),
        proptest::collection::vec(op_table(), 0..6),
    )
        .prop_map(|(cpu, code, extra, ops)| {
            let mut s = format!(
                "name = \"fuzz\"\ncpus = [\"{cpu}\"]\ncode = \"\"\"\na: nop\n{code}\nb: stop #0\n\"\"\"\n"
            );
            for (k, v) in extra {
                s += &format!("{k} = {v}\n");
            }
            for o in ops {
                s += &o;
            }
            s
        })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (
            0usize..80,
            prop_oneof![
                any::<u64>().prop_map(|v| v.to_string()),
                any::<i64>().prop_map(|v| v.to_string()),
                (0u64..64).prop_map(|v| v.to_string()),
                Just("0x".to_string()),
                Just("99999999999999999999".to_string()),
            ]
        )
            .prop_map(|(k, w)| Mutation::ReplaceNumber(k, w)),
        (0usize..40, proptest::sample::select(WORDS))
            .prop_map(|(k, w)| Mutation::ReplaceWord(k, w.replace('\n', "\\n"))),
        (
            any::<usize>(),
            (proptest::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}"))
        )
            .prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                Just('"'),
                Just('['),
                Just(']'),
                Just('{'),
                Just('='),
                Just('\n'),
                Just('#'),
                Just('\\'),
                any::<char>()
            ]
        )
            .prop_map(|(i, c)| Mutation::InsertChar(i, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        match ScenarioFile::parse_bytes("fuzz.toml", &bytes) {
            Ok(_) => {}
            Err(e) => {
                let good = match std::str::from_utf8(&bytes) {
                    Ok(t) => t.to_string(),
                    Err(u) => String::from_utf8_lossy(&bytes[..u.valid_up_to()]).into_owned(),
                };
                check_errors("fuzz.toml", &good, &e);
            }
        }
    }

    #[test]
    fn arbitrary_toml_like_text_never_panics(text in "[a-z_=\\[\\]{}\"'#0-9x., \n+-]{0,400}") {
        parse_and_maybe_play(&text);
    }

    #[test]
    fn generated_documents_never_panic(text in document()) {
        parse_and_maybe_play(&text);
    }

    #[test]
    fn mutated_shipped_files_never_panic(
        which in any::<usize>(),
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let files = shipped();
        let mut text = files[which % files.len()].clone();
        for m in &muts {
            text = apply(&text, m);
        }
        parse_and_maybe_play(&text);
    }
}

#[test]
fn every_shipped_file_survives_every_single_line_deletion() {
    for text in shipped() {
        for i in 0..text.lines().count() {
            let t = apply(&text, &Mutation::DeleteLine(i));
            if let Err(e) = ScenarioFile::parse("fuzz.toml", &t) {
                check_errors("fuzz.toml", &t, &e);
            }
        }
    }
}
