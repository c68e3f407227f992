//! The shipped scenario files (scenarios/*.toml) all pass; the traces show what the design
//! notes promise (a lazy switch moves no debug register, a dirty 6/4 switch moves exactly
//! 2x(6+6+4+4) registers plus MDCCINT_EL1 per direction, in the kernel's order); a
//! validator counterexample replays with the violation where it happens; bad files are
//! reported as FILE:LINE:COL with exit status 2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hypdbg::play::trace::{Record, TextRenderer};
use hypdbg::play::{PlayOptions, Report, play};
use hypdbg::scenario::source::ScenarioFile;
use hypdbg::scenario::{Scenario, to_toml};

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn shipped() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn load(name: &str) -> ScenarioFile {
    ScenarioFile::load(&scenario_dir().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn play_traced(f: &ScenarioFile) -> (Report, Vec<Record>) {
    let mut records = Vec::new();
    let opts = PlayOptions {
        trace: true,
        ..PlayOptions::default()
    };
    let report = play(f, &opts, &mut |r| records.push(r)).unwrap();
    (report, records)
}

fn hypdbg(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hypdbg"))
        .args(args)
        .output()
        .expect("run hypdbg");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn every_shipped_scenario_passes() {
    let files = shipped();
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let f = ScenarioFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let report = play(&f, &PlayOptions::default(), &mut |_| {}).unwrap();
        assert!(report.passed, "{}:\n{}", path.display(), report.text());
        assert!(report.actions > 0, "{}", path.display());
    }
}

#[test]
fn shipped_scenarios_pass_through_the_cli() {
    for name in ["debug-exceptions-os-lock.toml", "debugger-session.toml"] {
        let p = scenario_dir().join(name);
        let (code, out, err) = hypdbg(&["run", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(
            out.contains("PASS") && out.contains("expectations:"),
            "{out}"
        );
    }
}

#[test]
fn the_shipped_set_covers_the_public_tests() {
    let names: Vec<String> = shipped()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let combos = names
        .iter()
        .filter(|n| n.starts_with("debug-exceptions-") && n.contains("-b"))
        .count();
    assert!(combos >= 3, "{names:?}");
    for want in [
        "debug-exceptions-os-lock",
        "userspace-single-step",
        "kvm-unit-tests-bp-migration",
        "kvm-unit-tests-wp-migration",
        "kvm-unit-tests-ss-migration",
        "lazy-switch",
        "dirty-switch-cortex-a57",
        "seed-v2-replay",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    // The userspace single-step test makes 200 iterations of its loop, each with five step
    // exits (the stop's completion, then four instructions).
    let f = load("userspace-single-step.toml");
    let report = play(&f, &PlayOptions::default(), &mut |_| {}).unwrap();
    assert!(report.passed, "{}", report.text());
    assert_eq!(report.exits.debug, 200 * 5, "{}", report.text());
    assert_eq!(report.exits.stop, 201, "{}", report.text());
}

fn is_debug_state_reg(reg: &str) -> bool {
    reg.starts_with("DBGB") || reg.starts_with("DBGW") || reg == "MDCCINT_EL1"
}

#[test]
fn a_lazy_switch_moves_no_debug_register() {
    let f = load("lazy-switch.toml");
    let (report, records) = play_traced(&f);
    assert!(report.passed, "{}", report.text());
    let entries = records
        .iter()
        .filter(
            |r| matches!(r, Record::Event { text, .. } if text.starts_with("switch to the guest")),
        )
        .count();
    // Interrupts every 2 instructions: many entries, none moving debug state.
    assert!(entries >= 6, "{entries} entries");
    for r in &records {
        if let Record::Access { reg, func, .. } = r {
            assert!(
                !is_debug_state_reg(reg) && !func.starts_with("__debug_"),
                "a lazy switch touched {reg} in {func}"
            );
        }
        if let Record::Event { text, .. } = r
            && text.starts_with("guest runs with")
        {
            assert!(text.contains("TDA=1"), "traps not armed: {text}");
        }
    }
    // The text trace says so too.
    let mut tr = TextRenderer::new();
    let text: String = records.iter().map(|r| tr.render(r)).collect();
    assert!(text.contains("no debug register moved (lazy)"), "{text}");
    assert!(!text.contains("DBGBCR0_EL1 "), "{text}");
}

/// (kernel function, read or write, register) of one debug-state access.
type Move = (String, String, String);

/// The registers one direction of a 6/4 switch moves, in the kernel's order.
fn order_6_4() -> Vec<String> {
    let mut v = Vec::new();
    for (stem, n) in [("DBGBCR", 6), ("DBGBVR", 6), ("DBGWCR", 4), ("DBGWVR", 4)] {
        for i in (0..n).rev() {
            v.push(format!("{stem}{i}_EL1"));
        }
    }
    v.push("MDCCINT_EL1".into());
    v
}

#[test]
fn a_dirty_6_4_switch_moves_exactly_2x20_registers_plus_mdccint_in_order() {
    let f = load("dirty-switch-cortex-a57.toml");
    let (report, records) = play_traced(&f);
    assert!(report.passed, "{}", report.text());
    // Group the debug-state accesses by event.
    let mut by_event: Vec<(usize, Vec<Move>)> = Vec::new();
    for r in &records {
        if let Record::Access {
            seq,
            func,
            access,
            reg,
            ..
        } = r
            && is_debug_state_reg(reg)
        {
            match by_event.last_mut() {
                Some((s, v)) if s == seq => v.push((func.clone(), access.clone(), reg.clone())),
                _ => by_event.push((*seq, vec![(func.clone(), access.clone(), reg.clone())])),
            }
        }
    }
    assert!(
        by_event.len() >= 4,
        "{} switches moved state",
        by_event.len()
    );
    let order = order_6_4();
    let expect = |first: &str, second: &str| -> Vec<Move> {
        let mut v: Vec<_> = order
            .iter()
            .map(|r| (first.to_string(), "read".to_string(), r.clone()))
            .collect();
        v.extend(
            order
                .iter()
                .map(|r| (second.to_string(), "write".to_string(), r.clone())),
        );
        v
    };
    let entry = expect("__debug_save_state(host)", "__debug_restore_state(guest)");
    let exit = expect("__debug_save_state(guest)", "__debug_restore_state(host)");
    let mut entries = 0;
    let mut exits = 0;
    for (seq, moves) in &by_event {
        assert_eq!(
            moves.len(),
            2 * (6 + 6 + 4 + 4) + 2,
            "event {seq}: {moves:?}"
        );
        if moves[0].0 == "__debug_save_state(host)" {
            assert_eq!(moves, &entry, "entry at event {seq}");
            entries += 1;
        } else {
            assert_eq!(moves, &exit, "exit at event {seq}");
            exits += 1;
        }
    }
    assert!(
        entries >= 2 && exits >= 2,
        "{entries} entries, {exits} exits"
    );
}

#[test]
fn a_seed_v2_counterexample_replays_with_the_host_value_live() {
    let dir = std::env::temp_dir().join(format!("hypdbg-ce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, out, err) = hypdbg(&[
        "check",
        "--variant",
        "seed-v2",
        "--write-counterexamples",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let file = dir.join("seed-v2.toml");
    assert!(err.contains("replay: hypdbg run"), "{err}");
    // The counterexample names its action as the replay's trace numbers it.
    let written = std::fs::read_to_string(&file).unwrap();
    let header = written.lines().nth(1).unwrap();
    assert!(
        header.contains("[min] guest writes MDSCR_EL1 = MDE, PSTATE.D masked")
            && header.contains("DBGBCR0_EL1 held the host's")
            && header.contains("(inv 1, action 3: "),
        "{header}"
    );
    let (code, out, err) = hypdbg(&["run", file.to_str().unwrap(), "--trace"]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("VIOLATION inv1:guest-state-loaded"))
        .unwrap_or_else(|| panic!("no inv1 violation line:\n{out}"));
    assert!(lines[at].contains("held the host's"), "{}", lines[at]);
    assert!(lines[at].contains("(action 3 at "), "{}", lines[at]);
    // The shipped hand-reduced replay (without the sweep's SMCCC filter action) shows the
    // same first violation at its second action.
    let shipped = scenario_dir().join("seed-v2-replay.toml");
    let (code, replay, _) = hypdbg(&["run", shipped.to_str().unwrap(), "--trace"]);
    assert_eq!(code, 0, "{replay}");
    let first = replay
        .lines()
        .find(|l| l.contains("VIOLATION"))
        .unwrap_or_else(|| panic!("{replay}"));
    assert!(
        first.contains("inv1:guest-state-loaded (action 2 at ")
            && first.contains("DBGBCR0_EL1 held the host's"),
        "{first}"
    );
    // The line before the violation is the entry's live state: the host's breakpoint value
    // (the host's DBGBVR0_EL1 is 0xffff8000100...) is in the hardware while the guest runs.
    let live = lines[..at]
        .iter()
        .rev()
        .find(|l| l.contains("guest runs with"))
        .unwrap();
    assert!(live.contains("DBGBVR0_EL1=0xffff800010"), "{live}");
    assert!(out.contains("FAIL"), "{out}");
    // JSON lines: the same records, each a JSON object with a type.
    let (code, out, _) = hypdbg(&["run", file.to_str().unwrap(), "--trace", "--json"]);
    assert_eq!(code, 1);
    let mut violations = 0;
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let t = v["type"].as_str().unwrap();
        if t == "violation" && v["invariant"] == "inv1:guest-state-loaded" {
            violations += 1;
        }
    }
    assert!(violations > 0);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["passed"], false);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flow_override_and_expected_violations() {
    let p = scenario_dir().join("seed-v2-replay.toml");
    let p = p.to_str().unwrap();
    let (code, out, _) = hypdbg(&["run", p]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("inv1:guest-state-loaded"), "{out}");
    // The merged code: clean, and the file's expected violations do not apply.
    let (code, out, _) = hypdbg(&["run", p, "--flow", "era1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("none broken"), "{out}");
    // A clean scenario under a broken flow fails.
    let lazy = scenario_dir().join("lazy-switch.toml");
    let (code, out, _) = hypdbg(&["run", lazy.to_str().unwrap(), "--flow", "tda-inverted"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("inv6:lazy"), "{out}");
    let dirty = scenario_dir().join("dirty-switch-cortex-a57.toml");
    let (code, out, _) = hypdbg(&["run", dirty.to_str().unwrap(), "--flow", "count-minus-one"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("inv5:no-short-copy"), "{out}");
    let (code, _, err) = hypdbg(&["run", p, "--flow", "no-such-flow"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown flow"), "{err}");
}

#[test]
fn validator_scenarios_round_trip_through_toml() {
    use hypdbg::validate::sweep::{points, smp_scenario};
    use hypdbg_model::profiles::parse_cpu;
    let cpu = parse_cpu("cortex-a57").unwrap().remove(0);
    let mut all: Vec<Scenario> = points()
        .iter()
        .enumerate()
        .map(|(i, p)| p.scenario(&format!("sweep-{i}"), &cpu))
        .collect();
    all.push(smp_scenario(&cpu));
    for mut sc in all {
        sc.flow = Some("era2".into());
        let text = to_toml(&sc).unwrap();
        let back =
            ScenarioFile::parse("roundtrip.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.scenario, sc, "{text}");
        let report = play(&back, &PlayOptions::default(), &mut |_| {}).unwrap();
        assert!(report.passed, "{}\n{text}", report.text());
    }
}

/// (file text, line, column, words the message must contain).
const BAD: &[(&str, usize, usize, &str)] = &[
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"nop\"\nops = [\n",
        4,
        8,
        "TOML syntax",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\nbogus = 1\ncode = \"nop\"\nops = []\n",
        3,
        1,
        "unknown field `bogus`",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"nop\"\n\n[[ops]]\ndo = \"run\"\nfrob = 2\n",
        7,
        1,
        "unknown field `frob`",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"nop\"\n[[ops]]\ndo = \"repeat\"\ntimes = 2\n[[ops.ops]]\ndo = \"run\"\nwat = 3\n",
        9,
        1,
        "unknown field `wat`",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"nop\"\n[[ops]]\ndo = \"run_until_stop\"\nstop = 70000\n",
        6,
        8,
        "expected u16",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"nop\"\n[[ops]]\ndo = \"break\"\naddr = \"nowhere\"\n",
        6,
        8,
        "unknown label 'nowhere'",
    ),
    (
        "name = \"x\"\ncpus = [\"min\", \"cortex-a99\"]\ncode = \"nop\"\nops = []\n",
        2,
        16,
        "cortex-a99",
    ),
    (
        "name = \"x\"\ncpus = [\"min\", \"max\"]\ncode = \"nop\"\nops = []\n",
        2,
        16,
        "same counts",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"\"\"\nnop\n  frob x1\n\"\"\"\nops = []\n",
        5,
        3,
        "guest code line 2: `frob x1`",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"break\"\naddr = \"a\"\nexpect = { ec = \"BRK64\" }\n",
        7,
        12,
        "cannot be evaluated",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"kvm_run\"\nvcpu = 3\n",
        6,
        8,
        "vcpu 3 does not exist",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"migrate\"\ncpu = 2\n",
        6,
        7,
        "physical CPU 2",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"kvm_run\"\nexpect = { regs = { x99 = 1 } }\n",
        6,
        21,
        "unknown register 'x99'",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"kvm_run\"\nexpect = { regs = { DBGBCR7_EL1 = 1 } }\n",
        6,
        21,
        "not implemented",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"restore\"\nname = \"s\"\n",
        6,
        8,
        "no snapshot named 's'",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"kvm_run\"\nexpect = { exit = \"step\", stop = 1 }\n",
        6,
        27,
        "cannot hold together",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\nflow = \"era9\"\ncode = \"a: nop\"\nops = []\n",
        3,
        8,
        "unknown flow 'era9'",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\nexpect_violations = [\"inv10\"]\nops = []\n",
        4,
        22,
        "not an invariant",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[symbols]\na = 4\n",
        5,
        1,
        "also a label",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"repeat\"\ntimes = 100000\n[[ops.ops]]\ndo = \"repeat\"\ntimes = 100\n[[ops.ops.ops]]\ndo = \"check\"\nexpect = {}\n",
        6,
        9,
        "limit",
    ),
    (
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"watch\"\naddr = 0x1001\nlen = 0\n",
        6,
        8,
        "length 0",
    ),
    ("", 1, 1, "missing field `name`"),
];

#[test]
fn bad_files_are_reported_with_line_and_column() {
    for (text, line, col, words) in BAD {
        let e = match ScenarioFile::parse("bad.toml", text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        let first = &e.errors[0];
        assert_eq!(
            (first.line, first.col),
            (*line, *col),
            "{first}\n---\n{text}"
        );
        assert!(first.message.contains(words), "{first}");
        assert!(
            first
                .to_string()
                .starts_with(&format!("bad.toml:{line}:{col}: ")),
            "{first}"
        );
    }
}

#[test]
fn bad_files_exit_with_status_2_and_one_line_per_problem() {
    let dir = std::env::temp_dir().join(format!("hypdbg-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("two.toml");
    std::fs::write(
        &p,
        "name = \"x\"\ncpus = [\"min\"]\ncode = \"a: nop\"\n[[ops]]\ndo = \"break\"\naddr = \"b\"\n[[ops]]\ndo = \"kvm_run\"\nvcpu = 4\n",
    )
    .unwrap();
    let (code, out, err) = hypdbg(&["run", p.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].ends_with("unknown label 'b': the program and the symbols define a"),
        "{err}"
    );
    assert!(lines[0].contains("two.toml:6:8:"), "{err}");
    assert!(lines[1].contains("two.toml:9:8:"), "{err}");
    std::fs::write(&p, [0xffu8, 0xfe, 0x00]).unwrap();
    let (code, _, err) = hypdbg(&["run", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("two.toml:1:1: the file is not UTF-8"), "{err}");
    let (code, _, err) = hypdbg(&["run", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unmet_expectations_and_action_errors_fail_with_a_location() {
    let text = "name = \"x\"\ncpus = [\"min\"]\ncode = \"\"\"\na: nop\nstop #3\nb: nop\n\"\"\"\n\
                [[ops]]\ndo = \"run\"\nexpect = { exit = \"stop\", stop = 2 }\n\
                [[ops]]\ndo = \"kvm_run\"\nexpect = { exit = \"program_end\", pc = \"a\" }\n\
                [[ops]]\ndo = \"break\"\naddr = \"a\"\n[[ops]]\ndo = \"break\"\naddr = \"a\"\n";
    let f = ScenarioFile::parse("t.toml", text).unwrap();
    let r = play(&f, &PlayOptions::default(), &mut |_| {}).unwrap();
    assert!(!r.passed);
    assert_eq!((r.expectations, r.met), (2, 0), "{}", r.text());
    assert_eq!(r.failures[0].location, "t.toml:10:34");
    assert!(
        r.failures[0]
            .difference
            .contains("expected stop #2, got stop #3"),
        "{}",
        r.text()
    );
    assert_eq!(r.failures[1].location, "t.toml:13:39");
    assert!(
        r.failures[1]
            .difference
            .contains("expected PC a (0x10000), got 0x1000c <b+0x4>"),
        "{}",
        r.text()
    );
    let err = r.error.as_deref().unwrap();
    assert!(
        err.starts_with("t.toml:17:1: action 4 (`break`) failed") && err.contains("EEXIST"),
        "{err}"
    );
}

#[test]
fn the_readme_example_passes() {
    let readme = std::fs::read_to_string(scenario_dir().join("README.md")).unwrap();
    let start = readme.find("```toml").unwrap() + "```toml".len();
    let end = start + readme[start..].find("```").unwrap();
    let f = ScenarioFile::parse("README.md example", &readme[start..end])
        .unwrap_or_else(|e| panic!("{e}"));
    let r = play(&f, &PlayOptions::default(), &mut |_| {}).unwrap();
    assert!(r.passed, "{}", r.text());
    assert_eq!((r.expectations, r.stops), (2, 1), "{}", r.text());
}

#[test]
fn shipped_scenarios_round_trip_through_to_toml() {
    for path in shipped() {
        let f = ScenarioFile::load(&path).unwrap();
        let text = to_toml(&f.scenario).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let back = ScenarioFile::parse("again.toml", &text)
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
        assert_eq!(back.scenario, f.scenario, "{}", path.display());
    }
}

#[test]
fn a_guest_that_ran_off_its_code_is_not_run_again() {
    // Past the program-end stop there is only memory the program never wrote: the driver
    // refuses to run the vcpu on (both backends would otherwise disagree about garbage).
    let text = "name = \"x\"\ncpus = [\"min\"]\ncode = \"\"\"\na: nop\n\"\"\"\n\
                [[ops]]\ndo = \"kvm_run\"\nexpect = { exit = \"program_end\" }\n\
                [[ops]]\ndo = \"kvm_run\"\nexpect = { error = \"ran off the end of its code\" }\n\
                [[ops]]\ndo = \"run_until_stop\"\nstop = 0\nexpect = { error = \"vcpu 0 ran off\" }\n";
    let f = ScenarioFile::parse("t.toml", text).unwrap();
    let r = play(&f, &PlayOptions::default(), &mut |_| {}).unwrap();
    assert!(r.passed, "{}", r.text());
    assert_eq!((r.expectations, r.met), (3, 3), "{}", r.text());
    assert_eq!(r.exits.total, 1, "one KVM_RUN, then none: {}", r.text());
}
