//! Run variants over profiles and scenarios, in parallel, and decide verdicts.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use hypdbg_hyp::variants::{Variant, VariantKind};
use hypdbg_model::DebugFeatures;
use rayon::prelude::*;
use serde::Serialize;

use super::invariants::{Checker, Invariant, Violation};
use super::random;
use super::sweep::{count_points, points, smp_scenario};
use crate::scenario::{Scenario, run_assembled};

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The variants.
    pub variants: Vec<Variant>,
    /// The physical CPU profiles (label, features).
    pub cpus: Vec<(String, DebugFeatures)>,
    /// Also sweep every BRPs/WRPs field value 1..=15 with CTX_CMPs at its extremes.
    pub count_sweep: bool,
    /// Random operation sequences per variant (proptest, shrunk on failure).
    pub random_cases: u32,
}

/// The verdict on a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// A reference or user variant that keeps every invariant.
    Ok,
    /// A mutant the validator caught.
    Caught,
    /// A reference or user variant that breaks an invariant.
    Violates,
    /// A mutant no invariant caught: the validator is too weak.
    Missed,
}

/// The smallest failing case found.
#[derive(Clone, Debug, Serialize)]
pub struct Counterexample {
    /// The CPU profile.
    pub cpu: String,
    /// The scenario (replayable with `hypdbg run`).
    pub scenario: Scenario,
    /// The first violation in it.
    pub violation: Violation,
    /// What the action that hit it did.
    pub step: String,
}

impl Counterexample {
    /// The counterexample in the kernel's words.
    pub fn text(&self) -> String {
        format!(
            "[{}] {}: {} (inv {}, action {}: {})",
            self.cpu,
            self.scenario.description,
            self.violation.message,
            self.violation.invariant.number(),
            self.violation.step,
            self.step
        )
    }
}

/// The result for one variant.
#[derive(Clone, Debug, Serialize)]
pub struct VariantReport {
    /// Its name.
    pub variant: &'static str,
    /// Its era.
    pub era: String,
    /// Reference, historical, generic or user.
    pub kind: VariantKind,
    /// What it changes.
    pub description: &'static str,
    /// The kernel fix, for historical defects.
    pub fix: Option<&'static str>,
    /// The verdict.
    pub verdict: Verdict,
    /// Every invariant it broke.
    pub invariants: Vec<Invariant>,
    /// Violations found.
    pub violations: u64,
    /// Scenarios run.
    pub scenarios: u64,
    /// The smallest counterexample.
    pub counterexample: Option<Counterexample>,
    /// Random sequences run.
    pub random_cases: u32,
    /// The shrunk counterexample of the random search, if it found one.
    pub random_counterexample: Option<Counterexample>,
}

/// One scenario to run, with its size for minimality.
#[derive(Clone, Debug)]
pub struct Job {
    /// CPU label.
    pub cpu: String,
    /// CPU features (for sorting by size).
    pub features: DebugFeatures,
    /// The scenario.
    pub scenario: Scenario,
    /// Its program, assembled once for every variant.
    pub program: hypdbg_hyp::guest::Program,
    /// Smaller first.
    pub size: u32,
}

fn job(cpu: &str, features: DebugFeatures, scenario: Scenario, size: u32) -> Result<Job, String> {
    let program = crate::scenario::runner::assemble(&scenario)
        .map_err(|e| format!("{}: {e}", scenario.name))?;
    Ok(Job {
        cpu: cpu.to_string(),
        features,
        scenario,
        program,
        size,
    })
}

/// Every scenario for the options.
pub fn jobs(opts: &CheckOptions) -> Result<Vec<Job>, String> {
    let mut out = Vec::new();
    let pts = points();
    for (label, f) in &opts.cpus {
        for (i, p) in pts.iter().enumerate() {
            out.push(job(
                label,
                *f,
                p.scenario(&format!("sweep-{i}"), label, f),
                p.size(),
            )?);
        }
        out.push(job(label, *f, smp_scenario(label), 12)?);
    }
    if opts.count_sweep {
        for b in 2..=16u8 {
            for w in 2..=16u8 {
                for ctx in [1, b] {
                    let Ok(f) = DebugFeatures::from_counts(b, w, ctx) else {
                        continue;
                    };
                    let label = format!("{:#x}", f.raw());
                    for (i, p) in count_points().iter().enumerate() {
                        out.push(job(
                            &label,
                            f,
                            p.scenario(&format!("counts-{i}"), &label, &f),
                            p.size() + 1,
                        )?);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A violation and the words of the action that hit it.
pub type Found = (Violation, String);

/// The violations of one variant on one job.
pub fn run_job(variant: &Variant, job: &Job) -> Result<Vec<Found>, String> {
    let out = run_assembled(&job.scenario, &job.program, variant, false)
        .map_err(|e| format!("{}: {e}", job.scenario.name))?;
    let mut checker = Checker::new(out.era, out.features);
    checker.check(&out.events, &out.op_of_event);
    let step = |i: usize| {
        out.log
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("{:?}", job.scenario.ops.get(i)))
    };
    let mut v: Vec<Found> = checker
        .violations
        .into_iter()
        .map(|x| {
            let s = step(x.step);
            (x, s)
        })
        .collect();
    // A scenario stopped by something other than a hyp panic is a violation of what the
    // guest was promised (its program could not finish).
    if let Some((i, msg)) = &out.error
        && v.is_empty()
    {
        let viol = Violation {
            invariant: Invariant::GuestReadsBack,
            register: None,
            expected: None,
            actual: None,
            step: *i,
            event: out.events.len(),
            vcpu: 0,
            pcpu: None,
            message: format!("the guest could not finish: {msg}"),
        };
        v.push((viol, step(*i)));
    }
    Ok(v)
}

/// Progress reporting hook: called with the number of scenarios finished.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Check every variant; `progress` is told how many scenarios finished.
pub fn check(opts: &CheckOptions, progress: Progress<'_>) -> Result<Vec<VariantReport>, String> {
    let jobs = jobs(opts)?;
    let done = AtomicU64::new(0);
    opts.variants
        .par_iter()
        .map(|variant| {
            let results: Vec<(usize, Result<Vec<Found>, String>)> = jobs
                .par_iter()
                .enumerate()
                .map(|(i, job)| {
                    let r = run_job(variant, job);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    (i, r)
                })
                .collect();
            let mut invariants = BTreeSet::new();
            let mut violations = 0u64;
            let mut best: Option<(u32, usize, usize, Violation, String)> = None;
            for (i, r) in results {
                let vs = r?;
                let job = &jobs[i];
                for (v, step) in vs {
                    violations += 1;
                    invariants.insert(v.invariant);
                    let key = (
                        job.size,
                        job.features.num_brps() + job.features.num_wrps(),
                        i,
                    );
                    if best.as_ref().is_none_or(|b| (b.0, b.1, b.2) > key) {
                        best = Some((key.0, key.1, key.2, v, step));
                    }
                }
            }
            let mut counterexample = best.map(|(_, _, i, violation, step)| {
                let mut scenario = jobs[i].scenario.clone();
                scenario.flow = Some(variant.name.to_string());
                Counterexample {
                    cpu: jobs[i].cpu.clone(),
                    scenario,
                    violation,
                    step,
                }
            });
            let random_counterexample = opts
                .cpus
                .iter()
                .find(|(l, _)| l == "cortex-a57")
                .or(opts.cpus.first())
                .and_then(|(label, f)| {
                    let seed = variant
                        .name
                        .bytes()
                        .fold(0x9e37_79b9u64, |h, b| h.rotate_left(5) ^ u64::from(b));
                    random::search(variant, label, f, opts.random_cases, seed).map(
                        |(mut scenario, violation)| {
                            scenario.flow = Some(variant.name.to_string());
                            let step = scenario
                                .ops
                                .get(violation.step)
                                .map(|o| format!("{o:?}"))
                                .unwrap_or_default();
                            Counterexample {
                                cpu: label.clone(),
                                scenario,
                                violation,
                                step,
                            }
                        },
                    )
                });
            if let Some(r) = &random_counterexample {
                invariants.insert(r.violation.invariant);
                violations += 1;
                if counterexample.is_none() {
                    counterexample = Some(r.clone());
                }
            }
            let verdict = match (variant.is_mutant(), invariants.is_empty()) {
                (true, false) => Verdict::Caught,
                (true, true) => Verdict::Missed,
                (false, true) => Verdict::Ok,
                (false, false) => Verdict::Violates,
            };
            Ok(VariantReport {
                variant: variant.name,
                era: variant.era.to_string(),
                kind: variant.kind,
                description: variant.description,
                fix: variant.fix,
                verdict,
                invariants: invariants.into_iter().collect(),
                violations,
                scenarios: jobs.len() as u64,
                counterexample,
                random_cases: opts.random_cases,
                random_counterexample,
            })
        })
        .collect()
}
