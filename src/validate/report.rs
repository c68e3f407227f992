//! The check's table and JSON.

use std::fmt::Write as _;

use hypdbg_hyp::variants::VariantKind;

use super::check::{VariantReport, Verdict};

/// The human-readable report.
pub fn table(reports: &[VariantReport], elapsed_s: f64, scenarios: u64) -> String {
    let mut s = String::new();
    let bad_refs: Vec<&VariantReport> = reports
        .iter()
        .filter(|r| r.kind == VariantKind::Reference && r.verdict != Verdict::Ok)
        .collect();
    if !bad_refs.is_empty() {
        let _ = writeln!(
            s,
            "!!! TOOL FAILURE: a reference flow violates an invariant; every other verdict is suspect !!!"
        );
        for r in &bad_refs {
            if let Some(c) = &r.counterexample {
                let _ = writeln!(s, "!!! {}: {}", r.variant, c.text());
            }
        }
        s.push('\n');
    }
    let w = reports
        .iter()
        .map(|r| r.variant.len())
        .max()
        .unwrap_or(8)
        .max(7);
    let _ = writeln!(
        s,
        "{:<w$}  {:<4}  {:<10}  {:<8}  INVARIANTS BROKEN",
        "VARIANT", "FLOW", "KIND", "VERDICT"
    );
    for r in reports {
        let invs: Vec<String> = r.invariants.iter().map(|i| i.label()).collect();
        let _ = writeln!(
            s,
            "{:<w$}  {:<4}  {:<10}  {:<8}  {}",
            r.variant,
            r.era,
            r.kind.name(),
            r.verdict.name(),
            if invs.is_empty() {
                "-".into()
            } else {
                invs.join(", ")
            }
        );
        if let Some(c) = &r.counterexample {
            let _ = writeln!(s, "{:w$}    counterexample: {}", "", c.text());
        }
    }
    let refs_ok = reports
        .iter()
        .filter(|r| r.kind == VariantKind::Reference && r.verdict == Verdict::Ok)
        .count();
    let refs = reports
        .iter()
        .filter(|r| r.kind == VariantKind::Reference)
        .count();
    let caught = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Caught)
        .count();
    let mutants = reports
        .iter()
        .filter(|r| matches!(r.kind, VariantKind::Historical | VariantKind::Generic))
        .count();
    let _ = writeln!(
        s,
        "\n{refs_ok}/{refs} references clean, {caught}/{mutants} mutants caught; {scenarios} scenario runs in {elapsed_s:.1} s"
    );
    s
}

/// One JSON object per variant, one per line.
pub fn json_lines(reports: &[VariantReport]) -> String {
    let mut s = String::new();
    for r in reports {
        let v = serde_json::json!({
            "variant": r.variant,
            "flow": r.era,
            "kind": r.kind.name(),
            "description": r.description,
            "fix": r.fix,
            "verdict": r.verdict.name(),
            "invariants": r.invariants.iter().map(|i| i.label()).collect::<Vec<_>>(),
            "violations": r.violations,
            "scenarios": r.scenarios,
            "counterexample": r.counterexample.as_ref().map(|c| serde_json::json!({
                "cpu": c.cpu,
                "scenario": c.scenario.description,
                "invariant": c.violation.invariant.label(),
                "register": c.violation.register,
                "expected": c.violation.expected.map(|v| format!("{v:#x}")),
                "actual": c.violation.actual.map(|v| format!("{v:#x}")),
                "action": c.action_index(),
                "message": c.violation.message,
                "text": c.text(),
            })),
        });
        let _ = writeln!(s, "{v}");
    }
    s
}
