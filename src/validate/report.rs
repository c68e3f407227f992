//! The check's table and JSON.

use std::fmt::Write as _;

use hypdbg_hyp::variants::VariantKind;

use super::check::{VariantReport, Verdict};

/// Scenario runs over every report: the sweep's and the random search's.
pub fn scenario_runs(reports: &[VariantReport]) -> (u64, u64) {
    reports
        .iter()
        .fold((0, 0), |(s, r), v| (s + v.scenarios, r + v.random_runs))
}

/// The human-readable report.
pub fn table(reports: &[VariantReport], elapsed_s: f64) -> String {
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
    let vw = reports
        .iter()
        .map(|r| r.verdict.name().len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        s,
        "{:<w$}  {:<4}  {:<10}  {:<vw$}  INVARIANTS BROKEN",
        "VARIANT", "FLOW", "KIND", "VERDICT"
    );
    for r in reports {
        let invs: Vec<String> = r.invariants.iter().map(|i| i.label()).collect();
        let _ = writeln!(
            s,
            "{:<w$}  {:<4}  {:<10}  {:<vw$}  {}",
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
        if let Some(why) = r.indistinguishable {
            let _ = writeln!(
                s,
                "{:w$}    indistinguishable on the selected CPUs: {why}",
                ""
            );
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
    let hidden = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Indistinguishable)
        .count();
    let hidden = if hidden > 0 {
        format!(" ({hidden} indistinguishable on the selected CPUs)")
    } else {
        String::new()
    };
    let (sweep, random) = scenario_runs(reports);
    let _ = writeln!(
        s,
        "\n{refs_ok}/{refs} references clean, {caught}/{mutants} mutants caught{hidden}; {} scenario runs ({sweep} sweep, {random} random) in {elapsed_s:.1} s",
        sweep + random
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
            "random_runs": r.random_runs,
            "indistinguishable": r.indistinguishable,
            "counterexample": r.counterexample.as_ref().map(|c| serde_json::json!({
                "cpu": c.cpu,
                "scenario": c.scenario.description,
                "invariant": c.violation.invariant.label(),
                "register": c.violation.register,
                "expected": c.violation.expected.map(|v| format!("{v:#x}")),
                "actual": c.violation.actual.map(|v| format!("{v:#x}")),
                "action": c.violation.action,
                "message": c.violation.message,
                "text": c.text(),
            })),
        });
        let _ = writeln!(s, "{v}");
    }
    s
}
