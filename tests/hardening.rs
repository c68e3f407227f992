//! Regression tests of the hardening issue: every input that once ate the machine, ran
//! without a sign of life, was found wrong only after the work, disagreed with itself, or
//! was accepted silently now gets one line naming the value and the rule, exit status 2,
//! before any work starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{hypdbg, hypdbg_capped, temp_file};

/// A scenario with `ops` (TOML tables) appended to a small program.
fn scenario(extra: &str, ops: &str) -> String {
    format!(
        "name = \"h\"\ncpus = [\"cortex-a57\"]\n{extra}code = \"\"\"\nloop: nop\nstop #0\nb loop\n\"\"\"\n{ops}"
    )
}

/// `hypdbg run` of `text`: exit status and the first line of stderr.
fn run_text(name: &str, text: &str, args: &[&str]) -> (i32, String, String) {
    let p = temp_file(name, text);
    let mut all = vec!["run", p.to_str().unwrap()];
    all.extend_from_slice(args);
    hypdbg_capped(&all)
}

fn refused(name: &str, text: &str, words: &[&str]) {
    let (code, out, err) = run_text(name, text, &[]);
    assert_eq!(code, 2, "{name}: {out}{err}");
    let first = err.lines().next().unwrap_or("");
    for w in words {
        assert!(first.contains(w), "{name}: {first}");
    }
}

#[test]
fn unbounded_inputs_are_refused_before_they_run() {
    refused(
        "irq0.toml",
        &scenario(
            "",
            "[[ops]]\ndo = \"irq\"\nevery = 0\n[[ops]]\ndo = \"kvm_run\"\n",
        ),
        &["every = 0", "1 or more"],
    );
    refused(
        "count.toml",
        &scenario("", "[[ops]]\ndo = \"run\"\ncount = 4294967295\n"),
        &["4294967295 actions", "limit is 2000000", "--max-actions"],
    );
    refused(
        "stepcount.toml",
        &scenario("", "[[ops]]\ndo = \"step\"\ncount = 4294967295\n"),
        &["limit is 2000000"],
    );
    refused(
        "budget.toml",
        &scenario(
            "budget = 100000000\n",
            "[[ops]]\ndo = \"run\"\nuntil_stop = 7\n",
        ),
        &["budget = 100000000", "1000000", "--max-budget"],
    );
    let (code, _, err) = hypdbg_capped(&["run", "/dev/zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("longer than 1048576 bytes") && err.contains("--max-file-bytes"));
    let (code, _, err) = hypdbg_capped(&["check", "--random", "4294967295"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(err.contains("at most 10000"), "{err}");
}

#[test]
fn a_long_run_stays_flat_and_a_limit_can_be_raised() {
    // 100,000 runs of a loop: bounded memory (the cap would kill a growing one) and linear.
    let text = scenario("", "[[ops]]\ndo = \"run\"\ncount = 100000\n");
    let (code, out, err) = run_text("long.toml", &text, &[]);
    assert_eq!(code, 0, "{out}{err}");
    // The limits are limits, not walls.
    let text = scenario("", "[[ops]]\ndo = \"run\"\ncount = 3\n");
    let (code, _, err) = run_text("small.toml", &text, &["--max-actions", "2"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = run_text("small.toml", &text, &["--max-actions", "0x3"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_wall_clock_limit_stops_a_run_with_status_3() {
    // A branch to itself: every KVM_RUN spends its whole budget (10^6 instructions, the
    // default limit) and `run until_stop` tries 64 of them, twice.
    let text = "name = \"spin\"\ncpus = [\"min\"]\nbudget = 1000000\ncode = \"spin: b spin\"\n[[ops]]\ndo = \"run\"\nuntil_stop = 7\n[[ops]]\ndo = \"run\"\nuntil_stop = 7\n";
    let started = std::time::Instant::now();
    let (code, out, err) = run_text("spin.toml", text, &["--timeout", "1"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("--timeout"), "{out}");
    assert!(started.elapsed().as_secs() < 15);
}

#[test]
fn output_paths_are_checked_before_the_work() {
    let file = temp_file("not-a-dir", "x");
    let (code, out, err) = hypdbg(&[
        "check",
        "--write-counterexamples",
        file.join("sub").to_str().unwrap(),
    ]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, out, err) = hypdbg(&["bench", "--plot", "/nonexistent-dir/x.svg"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn numbers_agree_between_run_and_trace() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/seed-v2-replay.toml");
    let (_, plain, _) = hypdbg(&["run", p]);
    let (_, traced, _) = hypdbg(&["run", p, "--trace"]);
    let events = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.trim_start().starts_with("VIOLATION"))
            .map(|l| {
                l.split("event ")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let numbers = events(&plain);
    assert_eq!(numbers, ["14", "14", "20", "20", "25", "25"]);
    for n in numbers {
        assert!(
            traced.lines().any(
                |l| l.trim_start().starts_with(&format!("{n} ")) && l.contains("!!! VIOLATION")
            ),
            "event {n} is not a violation line of the trace"
        );
    }
}

#[test]
fn flags_are_consistent() {
    let (code, out, _) = hypdbg(&["check", "--list", "--json"]);
    assert_eq!(code, 0);
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["variant"].is_string(), "{l}");
    }
    let (code, _, err) = hypdbg(&["check", "--list", "--cpu", "foo"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    let (code, out, err) = hypdbg(&["--variant", "era1", "--cpu", "min", "--random", "0x2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("era1") && out.contains("OK"), "{out}");
    for args in [
        &["check", "--frobnicate"][..],
        &["run"],
        &["decode", "dbgbcr"],
        &["match", "watch", "--wcr", "1"],
        &[
            "encode", "watch", "--addr", "zz", "--len", "1", "--access", "r",
        ],
        &["bench", "--quick", "extra"],
        &["nosuchcommand"],
    ] {
        let (code, out, err) = hypdbg(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("hypdbg: error: "), "{args:?}: {err}");
    }
}

#[test]
fn silently_accepted_values_are_refused() {
    let base = "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\\nstop #0\"\n";
    refused(
        "wrap.toml",
        &format!("{base}[[ops]]\ndo = \"break\"\naddr = \"a+0xffffffffffffffff\"\n"),
        &["past the top of the 64-bit address space"],
    );
    refused(
        "wmem.toml",
        &format!(
            "{base}[[ops]]\ndo = \"write_memory\"\naddr = \"0xfffffffffffffffe\"\nbytes = [1, 2, 3]\n"
        ),
        &["runs past the top"],
    );
    refused(
        "vcpucpus.toml",
        "name = \"x\"\ncpus = [\"min\", \"min\"]\nvcpus = 2\nvcpu_cpus = [1]\ncode = \"nop\"\n",
        &["vcpu_cpus lists 1 entries", "none"],
    );
    refused(
        "pc.toml",
        &format!("{base}[[ops]]\ndo = \"set_one_reg\"\nreg = \"pc\"\nvalue = 0x10002\n"),
        &["not 4-byte aligned"],
    );
    refused(
        "sym.toml",
        &format!("{base}[symbols]\nfoo = \"foo+4\"\n[[ops]]\ndo = \"break\"\naddr = \"foo\"\n"),
        &["symbol 'foo'"],
    );
    let (code, _, err) = hypdbg(&[
        "match",
        "watch",
        "--wcr",
        "0x1ff7",
        "--wvr",
        "0",
        "--addr",
        "0xfffffffffffffffc",
        "--size",
        "8",
        "--access",
        "store",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("past the top"), "{err}");
}

#[test]
fn one_vocabulary_for_access_directions() {
    for (word, lsc) in [
        ("load", "0x1"),
        ("read", "0x1"),
        ("store", "0x2"),
        ("w", "0x2"),
        ("rw", "0x3"),
        ("both", "0x3"),
    ] {
        let (code, out, err) = hypdbg(&[
            "encode", "watch", "--addr", "0x1000", "--len", "8", "--access", word, "--json",
        ]);
        assert_eq!(code, 0, "{word}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let wcr = u64::from_str_radix(
            v["slots"][0]["wcr"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
        assert_eq!(format!("{:#x}", (wcr >> 3) & 3), lsc, "{word}");
    }
    // A scenario's watch takes `store` too; match watch takes `access` as a read-modify-write.
    let text = "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\\nstop #0\"\n[[ops]]\ndo = \"watch\"\naddr = 0x80000\nlen = 8\naccess = \"store\"\n";
    let (code, out, err) = run_text("store.toml", text, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let m = |access: &str| {
        hypdbg(&[
            "match", "watch", "--wcr", "0x1fef", "--wvr", "0x1000", "--addr", "0x1000", "--size",
            "8", "--access", access,
        ])
        .1
    };
    // 0x1fef watches loads only (LSC = 0b01): an atomic read-modify-write is also a load.
    assert!(m("load").contains("hit") && m("store").contains("miss") && m("rw").contains("hit"));
}

#[test]
fn decode_flags_res0_and_unallocated_classes() {
    for (reg, value, words) in [
        ("mdscr", "0x80000000_00000000", "RES0"),
        ("mdcr", "0x8000_0000_0000_0000", "RES0"),
        ("esr", "0xff00_0000_0000_0000", "RES0"),
        ("esr", "0xfe000000", "unallocated"),
        (
            "dbgbcr",
            "0x2001e7",
            "CONTEXTIDR_EL1 equals DBGBVR<n>_EL1[31:0]",
        ),
        ("id_aa64dfr0", "0x00101006", "1 context-aware breakpoint,"),
    ] {
        let (code, out, _) = hypdbg(&["decode", reg, value]);
        assert_eq!(code, 0);
        assert!(out.contains(words), "{reg} {value}: {out}");
    }
    let (_, help, _) = hypdbg(&["match", "break", "--help"]);
    assert!(!help.contains('\\'), "{help}");
}
