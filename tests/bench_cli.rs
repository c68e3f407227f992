//! `hypdbg bench`: the documented JSON shape (not the speed), the plot, bad arguments; and,
//! `#[ignore]`d (they boot QEMU; `.ci/run` runs them), the real-kernel section's shape and
//! the repeatability of two runs on 6.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

use serde_json::Value;

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

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("'{key}' is not a number in {v}"))
}

/// The schema, the machine, the method and the cost model.
fn check_header(v: &Value) {
    assert_eq!(v["schema"], "hypdbg-bench/2");
    assert_eq!(v["quick"], true);
    assert!(v["machine"]["cpu"].is_string() && num(&v["machine"], "cpus") >= 1.0);
    assert!(num(&v["method"], "min_batches") >= 1.0);
    assert!(num(&v["method"], "elapsed_s") > 0.0);

    let cm = &v["cost_model"];
    assert_eq!(num(cm, "altra_null_hypercall_ns"), 306.0);
    assert_eq!(num(cm, "xgene_hypercall_cycles"), 6500.0);
    assert!(num(cm, "assumed_clock_ghz") > 0.0);
    let costs = cm["costs"].as_array().unwrap();
    for key in ["mrs_dbg", "msr_dbg", "isb"] {
        let c = costs.iter().find(|c| c["key"] == key).unwrap();
        assert_eq!(c["estimate"], true, "{key} must be labelled an estimate");
        assert!(num(c, "cycles") > 0.0);
    }
}

/// The rows: flow x profile x state, with the register counts a dirty switch must move.
fn check_rows(v: &Value) {
    // Rows: flow x profile x state.
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3 * 3 * 2);
    for r in rows {
        for k in [
            "copy_baseline_ns",
            "ratio_to_copy",
            "modelled_cycles",
            "copy_baseline_bytes",
        ] {
            assert!(num(r, k) >= 0.0, "{k}: {r}");
        }
        for k in ["median_ns", "p25_ns", "p75_ns", "min_ns"] {
            assert!(num(&r["round_trip"], k) > 0.0, "{k}: {r}");
        }
        for k in [
            "of_xgene_hypercall",
            "ns_at_altra_clock",
            "of_altra_hypercall",
        ] {
            assert!(num(&r["shares"], k) >= 0.0, "{k}: {r}");
        }
        assert!(["era1", "era2", "era3"].contains(&r["flow"].as_str().unwrap()));
        let dirty = match r["state"].as_str().unwrap() {
            "dirty" => true,
            "clean" => false,
            other => panic!("state {other}"),
        };
        assert_eq!(r["loop_round_trip"].is_object(), dirty, "{r}");
        let a = &r["accesses"];
        let moves = num(r, "debug_state_moves");
        if dirty {
            let (b, w) = (num(r, "brps"), num(r, "wrps"));
            assert_eq!(num(a, "dbg_reads"), 2.0 * (2.0 * b + 2.0 * w), "{r}");
            assert_eq!(num(a, "dbg_writes"), 2.0 * (2.0 * b + 2.0 * w), "{r}");
            assert_eq!(num(a, "mdccint_reads") + num(a, "mdccint_writes"), 4.0);
            assert!(num(r, "modelled_cycles") > 0.0);
            if r["profile"] == "cortex-a57" {
                assert_eq!(moves, (2 * (6 + 6 + 4 + 4) * 2 + 4) as f64);
            }
        } else {
            assert_eq!(moves, 0.0, "clean moves no debug register: {r}");
            assert_eq!(num(r, "modelled_cycles"), 0.0);
        }
    }
    let profiles: Vec<&str> = rows
        .iter()
        .map(|r| r["profile"].as_str().unwrap())
        .collect();
    for p in ["min", "cortex-a57", "max"] {
        assert!(profiles.contains(&p), "{p}");
    }
}

/// The sweep series with their fits, and the targets with their verdicts.
fn check_sweep_and_targets(v: &Value) {
    // Sweep: 3 flows x 2 states + the copy baseline, n = 2..=16, each with a fit.
    let sweep = v["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 7);
    for s in sweep {
        let pts = s["points"].as_array().unwrap();
        assert_eq!(pts.len(), 15);
        assert_eq!(num(&pts[0], "count"), 2.0);
        assert_eq!(num(&pts[14], "count"), 16.0);
        for k in ["slope", "intercept", "r2"] {
            assert!(s["fit"][k].is_number(), "{k}: {s}");
        }
        assert!(s["slope_ns_per_register"].is_number());
    }

    // Targets: two per flow, each with a verdict (the copy baseline has none).
    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 6);
    for name in ["clean_vs_dirty_min", "linear_growth"] {
        assert_eq!(targets.iter().filter(|t| t["name"] == name).count(), 3);
    }
    assert!(!targets.iter().any(|t| t["name"] == "dirty_max_vs_copy"));
    for t in targets {
        assert!(t["met"].is_boolean() && t["detail"].is_string());
        assert!(num(t, "value").is_finite() && num(t, "limit") > 0.0);
    }
}

#[test]
fn quick_json_has_the_documented_shape_and_the_plot_one_line_per_series() {
    let dir = std::env::temp_dir().join(format!("hypdbg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg_path = dir.join("bench.svg");
    let svg_arg = svg_path.to_str().unwrap();
    let (code, out, err) = hypdbg(&["bench", "--quick", "--json", "--plot", svg_arg]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    check_header(&v);
    check_rows(&v);
    check_sweep_and_targets(&v);
    assert!(v["real"].is_null(), "no --kernel, no real section");
    // The plot: one polyline per sweep series.
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 7);
    assert!(svg.contains("era3 dirty") && svg.contains("copy_from_slice baseline"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_one_line_errors_with_status_2() {
    for args in [
        vec!["bench", "--frobnicate"],
        vec!["bench", "--plot"],
        vec!["bench", "--quick", "extra"],
        vec!["bench", "--plot", "/nonexistent-dir-hypdbg/plot.svg"],
        vec!["bench", "--plot", "/"],
        vec!["bench", "--mode", "vhe"],
        vec!["bench", "--state", "clean"],
        vec!["bench", "--kernel", "debian:foo"],
        vec!["bench", "--kernel", ""],
        vec!["bench", "--kernel", "debian:6.1", "--mode", "VHE"],
        vec!["bench", "--kernel", "debian:6.1", "--mode", "vhe,bogus"],
        vec!["bench", "--kernel", "debian:6.1", "--state", "dirty"],
        vec!["bench", "--kernel", "/nonexistent/Image"],
    ] {
        let (code, out, err) = hypdbg(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("hypdbg: error:"), "{args:?}: {err}");
    }
}

/// `hypdbg bench --quick --json --kernel debian:6.1 --mode nvhe`, parsed; its status.
fn real_6_1_nvhe() -> (i32, Value) {
    let (code, out, err) = hypdbg(&[
        "bench",
        "--quick",
        "--json",
        "--kernel",
        "debian:6.1",
        "--mode",
        "nvhe",
    ]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

/// One kernel and mode of the real section: every state with a median inside its interval,
/// the simulator beside it, and the numbers the era implies.
fn check_real_run(r: &Value) {
    assert!(r["error"].is_null(), "broken: {r}");
    assert_eq!(r["mode"], "nvhe");
    assert_eq!(r["flow"], "era2");
    assert_eq!((num(r, "brps"), num(r, "wrps")), (6.0, 4.0));
    let states = r["states"].as_array().unwrap();
    let names: Vec<&str> = states
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["clean", "guest_owned", "use_hw", "single_step", "os_lock"]
    );
    for s in states {
        let i = &s["instructions"];
        assert!(num(i, "ci_low") <= num(i, "median") && num(i, "median") <= num(i, "ci_high"));
        assert!(num(i, "median") > 1000.0, "{s}");
        assert!(num(s, "quiet_batches") >= num(s, "batches") / 2.0);
        let p = &s["simulator"];
        assert!(p["verdict"].is_string() && num(p, "round_trip") > 0.0);
    }
    let by = |n: &str| states.iter().find(|s| s["state"] == n).unwrap();
    assert!(by("clean")["extra"].is_null());
    // Era 2 moves 84 registers for the guest and for USE_HW, none for the others.
    for (n, m) in [
        ("guest_owned", 84.0),
        ("use_hw", 84.0),
        ("single_step", 0.0),
        ("os_lock", 0.0),
    ] {
        assert_eq!(num(&by(n)["simulator"]["sim"], "moves"), m, "{n}");
    }
    assert_eq!(by("guest_owned")["simulator"]["verdict"], "fit");
    // The guest's own registers cost something: not within noise, a few instructions a move.
    let go = by("guest_owned");
    assert_eq!(go["within_noise"], false);
    let per_move = num(go, "instructions_per_move");
    assert!((2.0..10.0).contains(&per_move), "{per_move}");
}

#[test]
#[ignore = "boots debian:6.1 twice under QEMU (about 1 minute); run by .ci/run"]
fn real_kernel_section_shape_and_repeatability() {
    let (code1, a) = real_6_1_nvhe();
    let (code2, b) = real_6_1_nvhe();
    assert_eq!((code1, code2), (0, 0));
    let mut clean = Vec::new();
    for v in [&a, &b] {
        let real = &v["real"];
        assert_eq!(real["model"]["fitted_series"], "6.1");
        assert_eq!(num(real, "model_goal"), 0.25);
        let runs = real["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        check_real_run(&runs[0]);
        clean.push(num(&runs[0]["states"][0]["instructions"], "median"));
    }
    let spread = (clean[0] - clean[1]).abs() / clean[0].min(clean[1]);
    eprintln!(
        "clean baseline: {:.1} and {:.1}: {:.3}% apart",
        clean[0],
        clean[1],
        100.0 * spread
    );
    assert!(
        spread <= 0.03,
        "two runs {clean:?} differ by {:.2}%",
        100.0 * spread
    );
}

#[test]
#[ignore = "boots debian:7.3 under QEMU (about 20 s); run by .ci/run"]
fn real_kernel_era3_moves_registers_in_every_debug_state() {
    let dir = std::env::temp_dir().join(format!("hypdbg-bench-real-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg_path = dir.join("bench.svg");
    let (code, out, err) = hypdbg(&[
        "bench",
        "--quick",
        "--json",
        "--kernel",
        "debian:7.3",
        "--mode",
        "vhe",
        "--plot",
        svg_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let run = &v["real"]["runs"][0];
    assert!(run["error"].is_null(), "broken: {run}");
    assert_eq!(run["flow"], "era3");
    for s in run["states"].as_array().unwrap() {
        let moves = num(&s["simulator"]["sim"], "moves");
        assert_eq!(moves, if s["state"] == "clean" { 0.0 } else { 84.0 }, "{s}");
        assert_ne!(
            s["simulator"]["verdict"], "fit",
            "7.3 is judged, not fitted"
        );
    }
    // The plot gains a second chart: the measured series and the simulator's, dashed.
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 7 + 2);
    assert!(svg.contains(">7.3 vhe<") && svg.contains(">7.3 vhe (simulator)<"));
    assert!(svg.contains(">guest_owned<") && svg.contains(">os_lock<"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "boots debian:6.1 under QEMU; run by .ci/run"]
fn a_kernel_that_does_not_boot_in_a_mode_is_exit_2_with_its_stage() {
    // 6.1 has no protected hVHE: it comes up in protected nVHE, the wrong mode.
    let (code, out, err) = hypdbg(&[
        "bench",
        "--quick",
        "--kernel",
        "debian:6.1",
        "--mode",
        "protected",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("hypdbg: error: debian:6.1 (6.1.0-")
            && err.contains(": boot: asked for mode protected"),
        "{err}"
    );
}
