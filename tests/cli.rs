//! The command line: outputs, JSON shapes and exit statuses (0 ok, 1 findings, 2 bad input).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

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

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn decode_explains_fields_and_flags_res0() {
    let (code, out, _) = hypdbg(&["decode", "dbgbcr", "0x1fe3"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("PMC") && out.contains("EL1") && out.contains("RES0"),
        "{out}"
    );
    let (code, out, _) = hypdbg(&["decode", "dbgwcr", "0x0100_1ffb", "--json"]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["register"], "DBGWCR<n>_EL1");
    assert!(
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["severity"] == "reserved")
    );
    for (reg, val) in [
        ("dbgbvr", "0xffff800000001000"),
        ("dbgwvr", "8"),
        ("mdscr", "0x8000"),
        ("mdcr", "0x1000000e66"),
        ("id_aa64dfr0", "0x10305106"),
        ("esr", "0xd2000062"),
    ] {
        let (code, out, _) = hypdbg(&["decode", reg, val, "--json"]);
        assert_eq!(code, 0, "{reg}");
        assert!(!json(&out)["fields"].as_array().unwrap().is_empty());
    }
}

#[test]
fn match_answers_hit_miss_unpredictable() {
    let (c, out, _) = hypdbg(&[
        "match", "break", "--bcr", "0x1e7", "--bvr", "0x4000", "--pc", "0x4000", "--json",
    ]);
    assert_eq!(
        (c, json(&out)),
        (0, serde_json::json!({"result": "hit", "address": "0x4000"}))
    );
    let (c, out, _) = hypdbg(&[
        "match", "break", "--bcr", "0x1e5", "--bvr", "0x4000", "--pc", "0x4000", "--el", "1",
        "--json",
    ]);
    assert_eq!((c, json(&out)), (0, serde_json::json!({"result": "miss"})));
    let (c, out, _) = hypdbg(&[
        "match", "break", "--bcr", "0x1e5", "--bvr", "0x4000", "--pc", "0x4000", "--el", "0",
        "--json",
    ]);
    assert_eq!(
        (c, json(&out)["result"].clone()),
        (0, serde_json::json!("hit"))
    );
    let (c, out, _) = hypdbg(&[
        "match",
        "watch",
        "--wcr",
        "0x01001ffb",
        "--wvr",
        "0x1000",
        "--addr",
        "0x1000",
        "--size",
        "8",
        "--access",
        "store",
        "--json",
    ]);
    let v = json(&out);
    assert_eq!(
        (c, v["result"].clone()),
        (0, serde_json::json!("unpredictable"))
    );
    assert!(v["rule"].as_str().unwrap().contains("RESWPMASK"));
    let (c, out, _) = hypdbg(&[
        "match",
        "watch",
        "--wcr",
        "0x0c001ffb",
        "--wvr",
        "0x4000",
        "--addr",
        "0x4ffc",
        "--size",
        "8",
        "--access",
        "load",
        "--json",
    ]);
    assert_eq!(
        (c, json(&out)),
        (0, serde_json::json!({"result": "hit", "address": "0x4ffc"}))
    );
    // An unlinked context breakpoint (BT = 0b0010) fires on a context-aware unit of
    // cortex-a57 (units 4 and 5) and is a reserved type on unit 0.
    let ctx = [
        "match",
        "break",
        "--bcr",
        "0x2001e7",
        "--bvr",
        "0xabc",
        "--pc",
        "0x8",
        "--contextidr",
        "0xabc",
        "--json",
    ];
    let (c, out, _) = hypdbg(&[&ctx[..], &["--unit", "5"]].concat());
    assert_eq!(
        (c, json(&out)["result"].clone()),
        (0, serde_json::json!("hit")),
        "{out}"
    );
    let (c, out, _) = hypdbg(&[&ctx[..], &["--unit", "0"]].concat());
    assert_eq!(
        (c, json(&out)["result"].clone()),
        (0, serde_json::json!("unpredictable")),
        "{out}"
    );
}

#[test]
fn bad_input_is_a_one_line_error_with_status_2() {
    for args in [
        vec!["decode", "dbgzzz", "1"],
        vec!["decode", "dbgbcr", "0xnope"],
        vec![
            "match", "break", "--bcr", "0x1e7", "--bvr", "0", "--pc", "0x2",
        ],
        vec![
            "match", "watch", "--wcr", "1", "--wvr", "0", "--addr", "0", "--size", "65",
            "--access", "store",
        ],
        vec![
            "match", "watch", "--wcr", "1", "--wvr", "0", "--addr", "0", "--size", "4", "--access",
            "fetch",
        ],
        vec![
            "match", "break", "--bcr", "1", "--bvr", "0", "--pc", "0", "--el", "2",
        ],
        vec![
            "match", "break", "--bcr", "1", "--bvr", "0", "--pc", "0", "--unit", "6",
        ],
        vec!["check", "--variant", "no-such-variant"],
        vec!["check", "--cpu", "0x5106"],
        vec!["check", "--cpu", "pentium"],
        vec!["frobnicate"],
    ] {
        let (code, out, err) = hypdbg(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn check_lists_variants_and_validates_one_cpu() {
    let (code, out, _) = hypdbg(&["check", "--list"]);
    assert_eq!(code, 0);
    for name in [
        "era1",
        "era2",
        "era3",
        "seed-v2",
        "debug-reg-indexing",
        "tde-not-set",
        "aarch32-dbgdscr",
    ] {
        assert!(out.contains(name), "{name}");
    }
    // One 6/4 CPU cannot show a mask to 3 bits (it needs 9 or more registers): that mutant
    // is INDISTINGUISHABLE there, with the reason, and the run passes (exit status 0).
    let (code, out, _) = hypdbg(&["check", "--cpu", "cortex-a57", "--random", "0x4", "--json"]);
    let rows: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert!(rows.len() >= 30);
    let mut hidden = Vec::new();
    for r in &rows {
        match r["kind"].as_str().unwrap() {
            "reference" | "user" => assert_eq!(r["verdict"], "OK", "{r}"),
            _ if r["verdict"] == "INDISTINGUISHABLE" => {
                assert!(
                    r["indistinguishable"]
                        .as_str()
                        .unwrap()
                        .contains("at most 8")
                );
                hidden.push(r["variant"].as_str().unwrap().to_string())
            }
            _ => {
                assert_eq!(r["verdict"], "CAUGHT", "{r}");
                assert!(!r["invariants"].as_array().unwrap().is_empty());
                assert!(r["counterexample"]["text"].as_str().unwrap().len() > 20);
            }
        }
    }
    assert_eq!(hidden, vec!["count-mask-0x7".to_string()]);
    assert_eq!(code, 0);
    // On min (2/2) the count slips between BRPs and WRPs cannot show either.
    let (code, out, _) = hypdbg(&["check", "--cpu", "min", "--random", "4"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("INDISTINGUISHABLE").count(), 3, "{out}");
    assert!(
        out.contains("(3 indistinguishable on the selected CPUs)"),
        "{out}"
    );
}

#[test]
fn check_exit_status_for_a_single_variant() {
    let (code, out, _) = hypdbg(&[
        "check",
        "--variant",
        "example-dfr0-per-switch",
        "--cpu",
        "cortex-a57",
        "--random",
        "4",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"));
    let (code, out, _) = hypdbg(&[
        "check",
        "--variant",
        "seed-v2",
        "--cpu",
        "cortex-a57",
        "--random",
        "4",
    ]);
    assert_eq!(code, 0, "a caught mutant is success: {out}");
    assert!(
        out.contains("CAUGHT") && out.contains("DBGBCR0_EL1 held the host's 0x1e7"),
        "{out}"
    );
}

#[test]
fn encode_prints_exact_slots_or_refuses() {
    let (c, out, _) = hypdbg(&[
        "encode", "watch", "--addr", "0x1006", "--len", "4", "--access", "write", "--json",
    ]);
    assert_eq!(c, 0);
    assert_eq!(
        json(&out),
        serde_json::json!({"slots": [{"wcr": "0x1817", "wvr": "0x1000"}, {"wcr": "0x77", "wvr": "0x1008"}]})
    );
    let (c, out, _) = hypdbg(&["encode", "break", "--addr", "0xffff800000001000", "--json"]);
    assert_eq!(
        (c, json(&out)),
        (
            0,
            serde_json::json!({"slots": [{"bcr": "0x1e7", "bvr": "0xffff800000001000"}]})
        )
    );
    for args in [
        vec!["encode", "break", "--addr", "0x1002"],
        vec!["encode", "break", "--addr", "0x0001000000001000"],
        vec![
            "encode", "watch", "--addr", "0x1000", "--len", "0", "--access", "read",
        ],
        vec![
            "encode", "watch", "--addr", "0x1000", "--len", "8", "--access", "exec",
        ],
    ] {
        let (c, _, err) = hypdbg(&args);
        assert_eq!(c, 2, "{args:?}");
        assert!(err.starts_with("hypdbg: error:"), "{err}");
    }
}
