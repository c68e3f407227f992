//! `hypdbg check --kernel-source`: kernel-style C run inside the simulator, over the whole
//! sweep (every 15 x 15 BRPs/WRPs value) and the random search.
//!
//! The hermetic tests use hypdbg-kernelc's own fixtures (written for hypdbg) and slipped
//! copies of them; they need the system C compiler and fail without one. The `#[ignore]`d
//! ones run Debian's real debug-sr files, fetched by `.ci/kernel-sources` into
//! `$HYPDBG_CACHE` (default ~/.cache/hypdbg): `cargo test --release --test kernel_c --
//! --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use hypdbg::validate::check::{CheckOptions, VariantReport, Verdict, check};
use hypdbg_kernelc::{LoadOptions, describe_cpu, load};
use hypdbg_model::profiles::parse_cpu;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kernelc/tests/fixtures")
        .join(rel)
}

/// The whole check of `source` (with `patch`), as `hypdbg check --kernel-source` runs it.
fn check_source(source: &Path, patch: Option<&Path>) -> VariantReport {
    let k = load(&LoadOptions {
        source: source.to_path_buf(),
        patch: patch.map(Path::to_path_buf),
        ..LoadOptions::default()
    })
    .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let cpus = parse_cpu("all").unwrap();
    let opts = CheckOptions {
        variants: vec![k.variant()],
        random_cpu: CheckOptions::random_cpu_of(&cpus).unwrap(),
        cpus,
        count_sweep: true,
        random_cases: 48,
        deadline: None,
    };
    let mut r = check(&opts, &|_| {}).unwrap();
    assert_eq!(r.len(), 1);
    r.remove(0)
}

/// A text edit of a source file.
type Edit<'a> = &'a dyn Fn(&str) -> String;
/// A named slip.
type Slip<'a> = (&'a str, Edit<'a>);

/// `text` with the first `from` (which must be there) replaced by `to`.
fn slip(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the source has no {from:?}");
    text.replacen(from, to, 1)
}

/// The fall-through after `case 8:` of the first switch (save_debug) turned into a break.
fn break_at_case_8(text: &str) -> String {
    let case8 = text.find("case 8:").expect("no case 8:");
    let ft = case8
        + text[case8..]
            .find("fallthrough;")
            .expect("no fallthrough after case 8");
    format!(
        "{}break;{}",
        &text[..ft],
        &text[ft + "fallthrough;".len()..]
    )
}

/// A copy of the files of `tree` (a directory) or of one file, with `edit` applied to the
/// file at `rel` (or the one file).
fn edited_copy(
    src: &Path,
    rel: Option<&str>,
    edit: &dyn Fn(&str) -> String,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    if src.is_dir() {
        let mut stack = vec![src.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let to = dir.path().join(p.strip_prefix(src).unwrap());
                if p.is_dir() {
                    stack.push(p);
                } else {
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(&p, &to).unwrap();
                }
            }
        }
        let target = dir.path().join(rel.unwrap());
        let text = std::fs::read_to_string(&target).unwrap();
        std::fs::write(&target, edit(&text)).unwrap();
        let root = dir.path().to_path_buf();
        (dir, root)
    } else {
        let to = dir.path().join(src.file_name().unwrap());
        let text = std::fs::read_to_string(src).unwrap();
        std::fs::write(&to, edit(&text)).unwrap();
        (dir, to)
    }
}

fn assert_ok(what: &str, r: &VariantReport) {
    assert_eq!(
        r.verdict,
        Verdict::Ok,
        "{what}: {:?}",
        r.counterexample.as_ref().map(|c| c.text())
    );
    println!(
        "{what}: OK ({} scenarios, {} random)",
        r.scenarios, r.random_cases
    );
}

/// VIOLATES, with a counterexample naming a register and a CPU whose counts are known.
fn assert_violates(what: &str, r: &VariantReport) {
    assert_eq!(r.verdict, Verdict::Violates, "{what}");
    let c = r.counterexample.as_ref().expect("a counterexample");
    let reg =
        c.violation.register.clone().unwrap_or_else(|| {
            panic!("{what}: the counterexample names no register: {}", c.text())
        });
    assert!(c.text().contains(&reg), "{what}: {}", c.text());
    let cpu = describe_cpu(&c.cpu).unwrap_or_else(|| panic!("{what}: CPU {} has no counts", c.cpu));
    println!("{what}: VIOLATES {reg} on {cpu}\n    {}", c.text());
}

#[test]
fn era1_seed_kde_twice_violates_and_the_merged_form_is_ok() {
    let seed = fixture("era1/debug-sr.c");
    assert_violates("era1 seed (KDE twice)", &check_source(&seed, None));
    assert_ok(
        "era1 with the v4.5 fix as --patch",
        &check_source(&seed, Some(&fixture("era1/kde-mde.patch"))),
    );
}

/// The era-1 fixture with the merged v4.5 test (KDE || MDE) and then `slip`.
fn era1_fixed(slip_it: Edit<'_>) -> (tempfile::TempDir, PathBuf) {
    edited_copy(&fixture("era1/debug-sr.c"), None, &|t| {
        slip_it(&slip(
            t,
            "(mdscr & DBG_MDSCR_KDE) || (mdscr & DBG_MDSCR_KDE)",
            "(mdscr & DBG_MDSCR_KDE) || (mdscr & DBG_MDSCR_MDE)",
        ))
    })
}

#[test]
fn era1_slips_violate() {
    let slips: [Slip<'_>; 3] = [
        ("era1 break at case 8", &break_at_case_8),
        ("era1 BRPs from bit 13", &|t| {
            slip(t, "nbrp = (dfr0 >> 12)", "nbrp = (dfr0 >> 13)")
        }),
        ("era1 save/restore swapped in the host's half", &|t| {
            let t = slip(
                t,
                "__debug_save_state(vcpu, &vcpu->arch.host_debug_state",
                "__debug_SWAP(vcpu, &vcpu->arch.host_debug_state",
            );
            let t = slip(
                &t,
                "__debug_restore_state(vcpu, &vcpu->arch.host_debug_state",
                "__debug_save_state(vcpu, &vcpu->arch.host_debug_state",
            );
            slip(&t, "__debug_SWAP(", "__debug_restore_state(")
        }),
    ];
    let (_d, fixed) = era1_fixed(&|t| t.to_string());
    assert_ok("era1 (KDE || MDE)", &check_source(&fixed, None));
    for (what, s) in slips {
        let (_d, src) = era1_fixed(s);
        assert_violates(what, &check_source(&src, None));
    }
}

#[test]
fn era2_fixture_is_ok_and_its_slips_violate() {
    let h = fixture("era2/debug-sr.h");
    assert_ok("era2", &check_source(&h, None));
    let slips: [Slip<'_>; 4] = [
        ("era2 break at case 8", &break_at_case_8),
        ("era2 BRPs from bit 13", &|t| {
            slip(t, "(dfr0 >> 12)", "(dfr0 >> 13)")
        }),
        ("era2 guest restored before the host is saved", &|t| {
            slip(
                t,
                "__debug_save_state(hdbg, hctxt);\n\t__debug_restore_state(gdbg, gctxt);",
                "__debug_restore_state(gdbg, gctxt);\n\t__debug_save_state(hdbg, hctxt);",
            )
        }),
        ("era2 DEBUG_DIRTY never cleared", &|t| {
            slip(t, "vcpu_clear_flag(vcpu, DEBUG_DIRTY);", "")
        }),
    ];
    for (what, s) in slips {
        let (_d, src) = edited_copy(&h, None, s);
        assert_violates(what, &check_source(&src, None));
    }
    // The v6.10+ per-CPU layout of the same code.
    let (_d, percpu) = edited_copy(&h, None, &|t| {
        t.replace(
            "&this_cpu_ptr(&kvm_host_data)->host_ctxt",
            "host_data_ptr(host_ctxt)",
        )
        .replace(
            "&vcpu->arch.host_debug_state.regs",
            "host_data_ptr(host_debug_state.regs)",
        )
    });
    assert_ok("era2, per-CPU host state", &check_source(&percpu, None));
}

#[test]
fn era3_fixture_is_ok_and_its_slips_violate() {
    let h = fixture("era3/debug-sr.h");
    assert_ok("era3", &check_source(&h, None));
    let slips: [Slip<'_>; 3] = [
        ("era3 break at case 8", &break_at_case_8),
        ("era3 BRPs read from debug_wrps", &|t| {
            slip(
                t,
                "*host_data_ptr(debug_brps)",
                "*host_data_ptr(debug_wrps)",
            )
        }),
        ("era3 owner restored before the host is saved", &|t| {
            slip(
                t,
                "__debug_save_state(host_data_ptr(host_debug_state.regs), host_data_ptr(host_ctxt));\n\t__debug_restore_state(__vcpu_debug_regs(vcpu), &vcpu->arch.ctxt);",
                "__debug_restore_state(__vcpu_debug_regs(vcpu), &vcpu->arch.ctxt);\n\t__debug_save_state(host_data_ptr(host_debug_state.regs), host_data_ptr(host_ctxt));",
            )
        }),
    ];
    for (what, s) in slips {
        let (_d, src) = edited_copy(&h, None, s);
        assert_violates(what, &check_source(&src, None));
    }
}

#[test]
fn era3_tree_with_nvhe_host_buffers_is_ok() {
    // The era-3 header under the fixture's nVHE wrappers (host buffers parked around the
    // guest; the modelled host uses none) and VHE wrappers, laid out as a kernel tree.
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("era3/debug-sr.h", HEADER),
        (
            "tree-era3/nvhe-debug-sr.c",
            "arch/arm64/kvm/hyp/nvhe/debug-sr.c",
        ),
        (
            "tree-era3/vhe-debug-sr.c",
            "arch/arm64/kvm/hyp/vhe/debug-sr.c",
        ),
    ] {
        let dst = dir.path().join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(fixture(from), &dst).unwrap();
    }
    assert_ok("era3 tree (nVHE wrappers)", &check_source(dir.path(), None));
    let (_d, slipped) = edited_copy(dir.path(), Some(HEADER), &break_at_case_8);
    assert_violates("era3 tree, break at case 8", &check_source(&slipped, None));
}

// ---- Debian's real files (fetched by .ci/kernel-sources; never committed) ----

const HEADER: &str = "arch/arm64/kvm/hyp/include/hyp/debug-sr.h";

fn debian_tree(version: &str) -> PathBuf {
    let cache = std::env::var_os("HYPDBG_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hypdbg")))
        .expect("HYPDBG_CACHE or HOME");
    let tree = cache.join("kernel-sources").join(version);
    assert!(
        tree.join(HEADER).is_file(),
        "{}: missing; run .ci/kernel-sources first",
        tree.display()
    );
    tree
}

/// The real tree `version` is OK and each slip of its debug-sr.h VIOLATES.
fn real_kernel(version: &str, slips: &[Slip<'_>]) {
    let tree = debian_tree(version);
    assert_ok(
        &format!("linux-source-{version}"),
        &check_source(&tree, None),
    );
    for (what, s) in slips {
        let (_d, src) = edited_copy(&tree, Some(HEADER), *s);
        assert_violates(
            &format!("linux-source-{version}: {what}"),
            &check_source(&src, None),
        );
    }
}

fn swap_guest_common(t: &str) -> String {
    slip(
        t,
        "__debug_save_state(host_dbg, host_ctxt);\n\t__debug_restore_state(guest_dbg, guest_ctxt);",
        "__debug_restore_state(guest_dbg, guest_ctxt);\n\t__debug_save_state(host_dbg, host_ctxt);",
    )
}

fn era2_real_slips() -> [Slip<'static>; 4] {
    [
        ("break at case 8 of save_debug", &break_at_case_8),
        ("(aa64dfr0 >> 13) for BRPs", &|t| {
            slip(t, "(aa64dfr0 >> 12)", "(aa64dfr0 >> 13)")
        }),
        (
            "guest restored before the host is saved",
            &swap_guest_common,
        ),
        ("vcpu_clear_flag(vcpu, DEBUG_DIRTY) dropped", &|t| {
            slip(t, "vcpu_clear_flag(vcpu, DEBUG_DIRTY);", "")
        }),
    ]
}

#[test]
#[ignore = "needs Debian's linux-source-6.1 (.ci/kernel-sources)"]
fn debian_6_1() {
    real_kernel("6.1", &era2_real_slips());
}

#[test]
#[ignore = "needs Debian's linux-source-6.12 (.ci/kernel-sources)"]
fn debian_6_12() {
    real_kernel("6.12", &era2_real_slips());
}

#[test]
#[ignore = "needs Debian's linux-source-7.3 (.ci/kernel-sources)"]
fn debian_7_3() {
    real_kernel(
        "7.3",
        &[
            ("break at case 8 of save_debug", &break_at_case_8),
            ("BRPs read from debug_wrps", &|t| {
                slip(
                    t,
                    "*host_data_ptr(debug_brps)",
                    "*host_data_ptr(debug_wrps)",
                )
            }),
            (
                "owner's block restored before the host is saved",
                &swap_guest_common,
            ),
        ],
    );
}

// ---- the command line ----

fn hypdbg(args: &[&str], cc: Option<&str>) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hypdbg"));
    cmd.args(args);
    if let Some(cc) = cc {
        cmd.env("CC", cc);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_reports_ok_violates_and_bad_input() {
    let era3 = fixture("era3/debug-sr.h").display().to_string();
    let seed = fixture("era1/debug-sr.c").display().to_string();
    let quick = ["--cpu", "cortex-a57", "--random", "4"];
    let (code, out, _) = hypdbg(
        &[&["check", "--kernel-source", &era3][..], &quick].concat(),
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("era: era 3"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("kernel-c") && l.contains(" OK ")),
        "{out}"
    );
    let (code, out, _) = hypdbg(
        &[&["check", "--kernel-source", &seed][..], &quick].concat(),
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("VIOLATES"), "{out}");
    assert!(
        out.contains("counterexample CPU cortex-a57: ID_AA64DFR0_EL1"),
        "{out}"
    );
    // Bad input: one line on stderr, exit 2, nothing run.
    for (args, cc, want) in [
        (
            vec!["check", "--kernel-source", "/nonexistent/linux"],
            None,
            "/nonexistent/linux: ",
        ),
        (
            vec!["check", "--kernel-source", &era3],
            Some("/nonexistent/cc"),
            "no C compiler: ",
        ),
        (
            vec!["check", "--kernel-source", &era3, "--era", "9"],
            None,
            "--era 9: ",
        ),
    ] {
        let (code, out, err) = hypdbg(&args, cc);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("hypdbg: error: {want}")),
            "{args:?}: {err}"
        );
    }
}
