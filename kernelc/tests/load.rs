//! Loading kernel-style C: what compiles and runs, and every way bad input is refused (one
//! typed error, before anything runs). Needs the system C compiler: without one these tests
//! fail (they do not skip).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use hypdbg_kernelc::{KernelCError, KernelEra, LoadOptions, load};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A copy of fixture `rel` with `edit` applied to its text, in its own temporary directory.
fn edited(rel: &str, edit: impl Fn(&str) -> String) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture(rel);
    let dst = dir.path().join(src.file_name().unwrap());
    let text = std::fs::read_to_string(&src).unwrap();
    let new = edit(&text);
    assert_ne!(new, text, "the edit of {rel} changed nothing");
    std::fs::write(&dst, new).unwrap();
    (dir, dst)
}

fn opts(source: PathBuf) -> LoadOptions {
    LoadOptions {
        source,
        ..LoadOptions::default()
    }
}

fn err(o: &LoadOptions) -> KernelCError {
    match load(o) {
        Ok(k) => panic!("{} loaded: {}", o.source.display(), k.summary()),
        Err(e) => e,
    }
}

#[test]
fn the_fixtures_compile_and_their_era_is_detected() {
    for (rel, era) in [
        ("era1/debug-sr.c", KernelEra::One),
        ("era2/debug-sr.h", KernelEra::Two),
        ("era3/debug-sr.h", KernelEra::Three),
    ] {
        let k = load(&opts(fixture(rel))).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(k.era, era, "{rel}");
        assert!(k.warnings.is_empty(), "{rel}: {:?}", k.warnings);
        assert_eq!(k.variant().name, "kernel-c");
        assert_eq!(k.variant().era(), era.flow_era());
    }
    let (_d, percpu) = edited("era2/debug-sr.h", |t| {
        t.replace(
            "&this_cpu_ptr(&kvm_host_data)->host_ctxt",
            "host_data_ptr(host_ctxt)",
        )
        .replace(
            "&vcpu->arch.host_debug_state.regs",
            "host_data_ptr(host_debug_state.regs)",
        )
    });
    assert_eq!(load(&opts(percpu)).unwrap().era, KernelEra::TwoPerCpu);
}

#[test]
fn era_is_overridable_and_a_wrong_one_is_a_compile_error() {
    let o = LoadOptions {
        era: Some(KernelEra::Two),
        ..opts(fixture("era3/debug-sr.h"))
    };
    // Era 2's vcpu has no debug_owner: the compiler says so, at the fixture's line.
    match err(&o) {
        KernelCError::Compile { location, message } => {
            assert!(location.contains("era3/debug-sr.h:"), "{location}");
            assert!(
                message.contains("debug_owner") || message.contains("VCPU_DEBUG"),
                "{message}"
            );
        }
        e => panic!("{e}"),
    }
    assert!(matches!(
        "5".parse::<KernelEra>(),
        Err(KernelCError::BadEra(_))
    ));
}

#[test]
fn a_file_that_does_not_compile_names_its_file_and_line() {
    let (_d, bad) = edited("era2/debug-sr.h", |t| {
        t.replacen("u64 dfr0 =", "u64 dfr0 = = ", 1)
    });
    let e = err(&opts(bad.clone()));
    let line = std::fs::read_to_string(&bad)
        .unwrap()
        .lines()
        .position(|l| l.contains("= ="))
        .unwrap()
        + 1;
    match &e {
        KernelCError::Compile { location, .. } => {
            assert!(
                location.starts_with(&format!("{}:{line}:", bad.display())),
                "{location}"
            );
        }
        e => panic!("{e}"),
    }
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
}

#[test]
fn an_unknown_system_register_token_is_named() {
    let (_d, bad) = edited("era3/debug-sr.h", |t| {
        t.replacen("read_sysreg(mdccint_el1)", "read_sysreg(mdccint_el2)", 1)
    });
    match err(&opts(bad.clone())) {
        KernelCError::UnknownSysreg { location, token } => {
            assert_eq!(token, "mdccint_el2");
            assert!(
                location.starts_with(&bad.display().to_string()),
                "{location}"
            );
        }
        e => panic!("{e}"),
    }
    // A bank index past 15 is an unknown token too.
    let (_d, bad) = edited("era2/debug-sr.h", |t| {
        t.replacen(
            "case 15: slots[15] = dbg_mrs(bank, 15);",
            "case 15: slots[15] = dbg_mrs(bank, 16);",
            1,
        )
    });
    match err(&opts(bad)) {
        KernelCError::UnknownSysreg { token, .. } => assert_eq!(token, "dbgbcr16_el1"),
        e => panic!("{e}"),
    }
}

#[test]
fn an_unknown_flag_is_named() {
    let (_d, bad) = edited("era2/debug-sr.h", |t| {
        t.replacen("DEBUG_DIRTY)", "DEBUG_DIRTEE)", 1)
    });
    match err(&opts(bad)) {
        KernelCError::UnknownFlag { flag, kind, .. } => {
            assert_eq!((flag.as_str(), kind), ("DEBUG_DIRTEE", "vcpu"));
        }
        e => panic!("{e}"),
    }
}

#[test]
fn a_missing_function_is_named() {
    // A header without __debug_switch_to_host_common: hypdbg's wrapper cannot call it.
    let (_d, bad) = edited("era2/debug-sr.h", |t| {
        t.replace(
            "__debug_switch_to_host_common",
            "__debug_switch_back_common",
        )
    });
    match err(&opts(bad)) {
        KernelCError::MissingFunction { function, .. } => {
            assert_eq!(function, "__debug_switch_to_host_common");
        }
        e => panic!("{e}"),
    }
    // An era-1 file without __debug_cond_restore_host_state: the world switch calls it.
    let (_d, bad) = edited("era1/debug-sr.c", |t| {
        t.replace(
            "void __hyp_text __debug_cond_restore_host_state",
            "static void __hyp_text unused_restore",
        )
    });
    match err(&opts(bad)) {
        KernelCError::MissingFunction { function, .. } => {
            assert_eq!(function, "__debug_cond_restore_host_state");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn no_c_compiler_is_one_line() {
    let o = LoadOptions {
        cc: Some("/nonexistent/hypdbg-cc".into()),
        ..opts(fixture("era2/debug-sr.h"))
    };
    let e = err(&o);
    assert!(matches!(e, KernelCError::NoCompiler { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("no C compiler: `/nonexistent/hypdbg-cc`"),
        "{e}"
    );
    assert_eq!(e.to_string().lines().count(), 1);
}

/// A kernel-tree-shaped directory holding the era-1 fixture as arch/arm64/kvm/hyp/debug-sr.c.
fn era1_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("arch/arm64/kvm/hyp/debug-sr.c");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(fixture("era1/debug-sr.c"), &dst).unwrap();
    dir
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_patch_applies_to_a_scratch_copy_and_the_tree_is_untouched() {
    let tree = era1_tree();
    let before = snapshot(tree.path());
    let k = load(&LoadOptions {
        patch: Some(fixture("era1/kde-mde.patch")),
        ..opts(tree.path().to_path_buf())
    })
    .unwrap();
    assert_eq!(k.era, KernelEra::One);
    assert!(
        k.summary()
            .contains("kde-mde.patch applied to a scratch copy")
    );
    assert_eq!(snapshot(tree.path()), before, "load wrote into the tree");
}

#[test]
fn a_hunk_that_does_not_apply_is_named() {
    let tree = era1_tree();
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("stale.patch");
    let text = std::fs::read_to_string(fixture("era1/kde-mde.patch")).unwrap();
    // A context line the file does not have: the hunk cannot be placed anywhere.
    std::fs::write(
        &patch,
        text.replace("\t/* A guest using", "\t/* A vcpu using"),
    )
    .unwrap();
    match err(&LoadOptions {
        patch: Some(patch),
        ..opts(tree.path().to_path_buf())
    }) {
        KernelCError::PatchHunk {
            file, hunk, header, ..
        } => {
            assert_eq!(file, "arch/arm64/kvm/hyp/debug-sr.c");
            assert_eq!(hunk, 1);
            assert!(header.starts_with("@@ -112,7 +112,7 @@"), "{header}");
        }
        e => panic!("{e}"),
    }
    // A patch of a file the tree does not have.
    std::fs::write(
        dir.path().join("other.patch"),
        "--- a/arch/arm64/kvm/debug.c\n+++ b/arch/arm64/kvm/debug.c\n@@ -1 +1 @@\n-a\n+b\n",
    )
    .unwrap();
    let e = err(&LoadOptions {
        patch: Some(dir.path().join("other.patch")),
        ..opts(tree.path().to_path_buf())
    });
    assert!(matches!(e, KernelCError::Patch { .. }), "{e}");
    assert!(e.to_string().contains("arch/arm64/kvm/debug.c"), "{e}");
}

#[test]
fn not_a_tree_and_not_a_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        err(&opts(dir.path().to_path_buf())),
        KernelCError::NotAKernelTree(_)
    ));
    assert!(matches!(
        err(&opts(dir.path().join("missing"))),
        KernelCError::Unreadable { .. }
    ));
    std::fs::write(dir.path().join("x.txt"), "hello").unwrap();
    assert!(matches!(
        err(&opts(dir.path().join("x.txt"))),
        KernelCError::NotDebugSr(_)
    ));
    std::fs::write(dir.path().join("x.h"), "int x;\n").unwrap();
    assert!(matches!(
        err(&opts(dir.path().join("x.h"))),
        KernelCError::UnknownEra(_)
    ));
}

/// A kernel-tree-shaped directory: the era-3 header with nVHE and VHE wrappers.
fn era3_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        (
            "era3/debug-sr.h",
            "arch/arm64/kvm/hyp/include/hyp/debug-sr.h",
        ),
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
    dir
}

#[test]
fn a_tree_compiles_its_nvhe_and_vhe_wrappers_and_lists_the_host_only_units() {
    let tree = era3_tree();
    let k = load(&opts(tree.path().to_path_buf())).unwrap();
    assert_eq!(k.era, KernelEra::Three);
    let roles: Vec<(String, &str)> = k
        .files
        .iter()
        .map(|(p, r)| {
            (
                p.strip_prefix(tree.path()).unwrap().display().to_string(),
                *r,
            )
        })
        .collect();
    assert_eq!(
        roles[0],
        ("arch/arm64/kvm/hyp/include/hyp/debug-sr.h".into(), "run")
    );
    assert_eq!(
        roles[1],
        ("arch/arm64/kvm/hyp/nvhe/debug-sr.c".into(), "run")
    );
    assert_eq!(roles[2].0, "arch/arm64/kvm/hyp/vhe/debug-sr.c");
    assert!(roles[2].1.starts_with("compiled only"), "{}", roles[2].1);
    assert_eq!(
        k.not_modelled,
        [
            "SPE (PMSCR_EL1, PMBLIMITR_EL1)",
            "TRBE/self-hosted trace (TRFCR_EL1, TRBLIMITR_EL1)",
            "BRBE (BRBCR_EL1)"
        ]
    );
    assert!(k.warnings.is_empty(), "{:?}", k.warnings);
    // A broken VHE wrapper is reported even though only the nVHE one runs.
    let vhe = tree.path().join("arch/arm64/kvm/hyp/vhe/debug-sr.c");
    let text = std::fs::read_to_string(&vhe).unwrap();
    std::fs::write(
        &vhe,
        text.replace("read_sysreg(mdcr_el2)", "read_sysreg(mdcr_el3)"),
    )
    .unwrap();
    match err(&opts(tree.path().to_path_buf())) {
        KernelCError::UnknownSysreg { token, location } => {
            assert_eq!(token, "mdcr_el3");
            assert!(location.contains("vhe/debug-sr.c:"), "{location}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn a_patch_may_touch_files_that_are_not_compiled() {
    let tree = era1_tree();
    let debug_c = tree.path().join("arch/arm64/kvm/debug.c");
    std::fs::write(&debug_c, "/* debug.c */\nint x;\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("both.patch");
    let fix = std::fs::read_to_string(fixture("era1/kde-mde.patch")).unwrap();
    std::fs::write(
        &patch,
        format!(
            "diff --git a/arch/arm64/kvm/debug.c b/arch/arm64/kvm/debug.c\n--- a/arch/arm64/kvm/debug.c\n+++ b/arch/arm64/kvm/debug.c\n@@ -1,2 +1,2 @@\n /* debug.c */\n-int x;\n+int y;\n{fix}"
        ),
    )
    .unwrap();
    let k = load(&LoadOptions {
        patch: Some(patch),
        ..opts(tree.path().to_path_buf())
    })
    .unwrap();
    assert_eq!(k.patched_not_compiled, ["arch/arm64/kvm/debug.c"]);
    assert!(
        k.summary()
            .contains("patch also changes arch/arm64/kvm/debug.c: not compiled")
    );
    assert_eq!(
        std::fs::read_to_string(&debug_c).unwrap(),
        "/* debug.c */\nint x;\n"
    );
}
