//! The validator validates: the kill matrix (every reference clean, every mutant caught by a
//! named invariant) and, for each historical defect, the invariant it must break.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use hypdbg::checker::Invariant;
use hypdbg::validate::check::{CheckOptions, VariantReport, Verdict, check};
use hypdbg_hyp::variants::{self, VariantKind};
use hypdbg_model::profiles::parse_cpu;

fn reports() -> &'static [VariantReport] {
    static R: std::sync::OnceLock<Vec<VariantReport>> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let mut cpus = Vec::new();
        for c in ["min", "cortex-a57", "max"] {
            cpus.extend(parse_cpu(c).unwrap());
        }
        let opts = CheckOptions {
            variants: variants::all(),
            random_cpu: CheckOptions::random_cpu_of(&cpus).unwrap(),
            cpus,
            count_sweep: false,
            random_cases: 8,
            deadline: None,
        };
        check(&opts, &|_| {}).unwrap()
    })
}

fn report(name: &str) -> &'static VariantReport {
    reports()
        .iter()
        .find(|r| r.variant == name)
        .unwrap_or_else(|| panic!("no report for {name}"))
}

#[test]
fn kill_matrix() {
    let all = reports();
    assert_eq!(all.len(), variants::all().len());
    for r in all {
        match r.kind {
            VariantKind::Reference | VariantKind::User => {
                assert_eq!(
                    r.verdict,
                    Verdict::Ok,
                    "{}: {:?}",
                    r.variant,
                    r.counterexample.as_ref().map(|c| c.text())
                );
                assert!(r.invariants.is_empty());
            }
            VariantKind::Historical | VariantKind::Generic => {
                assert_eq!(r.verdict, Verdict::Caught, "{} was not caught", r.variant);
                assert!(!r.invariants.is_empty(), "{}", r.variant);
                let c = r.counterexample.as_ref().unwrap();
                assert!(r.invariants.contains(&c.violation.invariant));
                assert!(!c.violation.message.is_empty());
            }
        }
    }
    assert!(
        all.iter()
            .filter(|r| r.kind == VariantKind::Reference)
            .count()
            >= 3
    );
}

#[test]
fn each_historical_defect_breaks_its_invariant() {
    let expect = [
        ("seed-v2", Invariant::GuestStateLoaded),
        ("debug-reg-indexing", Invariant::GuestReadsBack),
        ("pstate-ss-not-preserved", Invariant::UserspaceDebug),
        ("ss-active-pending", Invariant::UserspaceDebug),
        ("oslsr-write", Invariant::GuestReadsBack),
        ("os-lock-ignored", Invariant::EventDelivery),
        ("mdcr-el2-32bit", Invariant::MdccintMdcr),
        ("pkvm-owner-not-flushed", Invariant::GuestStateLoaded),
        ("ownership-no-mdcr", Invariant::Lazy),
        ("ownership-on-write-only", Invariant::Lazy),
        ("ss-pending-survives", Invariant::UserspaceDebug),
        ("ss-pending-survives-era2", Invariant::UserspaceDebug),
        ("pkvm-external-mdscr-not-flushed", Invariant::UserspaceDebug),
        ("immediate-exit-loses-step", Invariant::UserspaceDebug),
    ];
    let historical: Vec<&str> = variants::all()
        .iter()
        .filter(|v| v.kind == VariantKind::Historical)
        .map(|v| v.name)
        .collect();
    assert_eq!(
        historical.len(),
        expect.len(),
        "every historical variant has an expectation here"
    );
    for (name, inv) in expect {
        let r = report(name);
        assert!(
            r.invariants.contains(&inv),
            "{name} must break {} but broke {:?}",
            inv.label(),
            r.invariants
        );
    }
}

#[test]
fn generic_mutants_break_the_invariant_they_target() {
    let expect = [
        ("count-plus-one", Invariant::NoUnimplementedAccess),
        ("count-minus-one", Invariant::NoShortCopy),
        ("brps-wrps-swapped", Invariant::NoUnimplementedAccess),
        ("count-mask-0x7", Invariant::NoShortCopy),
        // min, cortex-a57 and max have at least as many breakpoints as watchpoints.
        ("wcr-with-brps", Invariant::NoUnimplementedAccess),
        ("restore-guest-before-save-host", Invariant::HostRestored),
        ("clear-dirty-before-restore", Invariant::HostRestored),
        ("never-clear-dirty", Invariant::Lazy),
        ("mdccint-not-moved", Invariant::MdccintMdcr),
        ("bcr-bvr-swapped", Invariant::GuestStateLoaded),
        ("debug-ptr-ignored", Invariant::UserspaceDebug),
        ("owner-ignored", Invariant::UserspaceDebug),
        ("debug-ptr-not-reset", Invariant::GuestStateLoaded),
        ("tda-inverted", Invariant::Lazy),
        ("tde-not-set", Invariant::EventDelivery),
        ("host-state-shared-slot", Invariant::HostRestored),
    ];
    for (name, inv) in expect {
        let r = report(name);
        assert!(
            r.invariants.contains(&inv),
            "{name} must break {} but broke {:?}",
            inv.label(),
            r.invariants
        );
    }
}

#[test]
fn seed_v2_counterexample_reads_like_the_kernel() {
    let c = report("seed-v2").counterexample.as_ref().unwrap();
    assert_eq!(c.violation.invariant, Invariant::GuestStateLoaded);
    assert!(c.text().contains("MDSCR_EL1 = MDE"), "{}", c.text());
    assert!(
        c.text()
            .contains("held the host's 0x1e7 while the guest ran; expected the guest's 0x0"),
        "{}",
        c.text()
    );
}

/// Issue 15 row 12: the sweep runs eras 2 and 3 on a VHE host too, where the host's
/// MDCR_EL2 is judged at vcpu_put: the 32-bit MDCR_EL2 slip is caught there, every reference
/// is clean on both hosts, and a VHE counterexample replays as `NAME@vhe`.
#[test]
fn vhe_hosts_are_swept_and_judged_at_put() {
    use hypdbg::validate::run::run_checked;
    let cpus = parse_cpu("cortex-a57").unwrap();
    let v = variants::by_name("mdcr-el2-32bit@vhe").unwrap();
    let opts = CheckOptions {
        variants: vec![v.clone()],
        random_cpu: CheckOptions::random_cpu_of(&cpus).unwrap(),
        cpus,
        count_sweep: false,
        random_cases: 0,
        deadline: None,
    };
    let jobs = hypdbg::validate::check::jobs(&opts).unwrap();
    let found = jobs.iter().find_map(|j| {
        let out = run_checked(&j.scenario, &j.program, &v).unwrap();
        out.violations
            .into_iter()
            .find(|x| x.invariant == Invariant::MdccintMdcr)
    });
    let found = found.expect("mdcr-el2-32bit@vhe caught");
    assert!(found.message.contains("vcpu_put"), "{}", found.message);
    for r in reports()
        .iter()
        .filter(|r| r.kind == VariantKind::Reference)
    {
        assert_eq!(r.verdict, Verdict::Ok, "{}", r.variant);
    }
    let one_host = report("era1").scenarios;
    assert_eq!(
        report("era3").scenarios,
        2 * one_host,
        "era 3 runs on both hosts"
    );
    assert_eq!(
        report("era3-pkvm").scenarios,
        one_host,
        "pKVM has no VHE form"
    );
}
