//! Run variants over profiles and scenarios, in parallel, and decide verdicts.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::{Variant, VariantKind};
use hypdbg_model::profiles::CpuSpec;
use rayon::prelude::*;
use serde::Serialize;

use super::random;
use super::sweep::{count_points, points, smp_scenario};
use crate::checker::{Invariant, Violation};
use crate::driver::SetupError;
use crate::scenario::Scenario;

pub use super::run::{Found, run_job};

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The variants.
    pub variants: Vec<Variant>,
    /// The physical CPU profiles.
    pub cpus: Vec<CpuSpec>,
    /// Also sweep every BRPs/WRPs field value 1..=15 with CTX_CMPs at its extremes.
    pub count_sweep: bool,
    /// Random operation sequences per variant (proptest, shrunk on failure).
    pub random_cases: u32,
    /// The CPU the random search runs on.
    pub random_cpu: CpuSpec,
    /// Stop (with [`CheckError::Deadline`]) once this instant has passed.
    pub deadline: Option<Instant>,
}

/// The CPU the random search prefers: cortex-a57, 6 breakpoints and 4 watchpoints, the counts
/// QEMU and most arm64 servers offer; the first selected CPU when it is not selected.
pub const RANDOM_CPU: &str = "cortex-a57";

impl CheckOptions {
    /// The random search's CPU for a selection of CPUs: [`RANDOM_CPU`] if selected, else the
    /// first (`None` when nothing is selected).
    pub fn random_cpu_of(cpus: &[CpuSpec]) -> Option<CpuSpec> {
        cpus.iter()
            .find(|c| c.label() == RANDOM_CPU)
            .or(cpus.first())
            .cloned()
    }
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
    /// A mutant that cannot be told apart from its reference on the selected CPUs (a slip
    /// in the counts where the slip reads the same counts); the report says why.
    Indistinguishable,
}

impl Verdict {
    /// `OK`, `CAUGHT`, `VIOLATES`, `MISSED`.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Caught => "CAUGHT",
            Verdict::Violates => "VIOLATES",
            Verdict::Missed => "MISSED",
            Verdict::Indistinguishable => "INDISTINGUISHABLE",
        }
    }

    /// The verdict on a variant of `kind` that broke invariants (`broken`) or not.
    pub const fn of(kind: VariantKind, broken: bool) -> Self {
        match (kind.is_mutant(), broken) {
            (true, true) => Verdict::Caught,
            (true, false) => Verdict::Missed,
            (false, false) => Verdict::Ok,
            (false, true) => Verdict::Violates,
        }
    }

    /// Whether this verdict is what a variant of `kind` must get for the check to pass
    /// (`alone`: the variant was selected by itself, so a user variant must be clean). A
    /// mutant that no selected CPU can show passes: there was nothing to catch.
    pub const fn passes(self, kind: VariantKind, alone: bool) -> bool {
        match kind {
            VariantKind::Reference => matches!(self, Verdict::Ok),
            VariantKind::Historical | VariantKind::Generic => {
                matches!(self, Verdict::Caught | Verdict::Indistinguishable)
            }
            VariantKind::User => !alone || matches!(self, Verdict::Ok),
        }
    }
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
    /// The counterexample in the kernel's words; the action is numbered as `hypdbg run`
    /// numbers it (from 1), so it can be found in the replay's trace.
    pub fn text(&self) -> String {
        format!(
            "[{}] {}: {} (inv {}, action {}: {})",
            self.cpu,
            self.scenario.description,
            self.violation.message,
            self.violation.invariant.number(),
            self.violation.action,
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
    /// Scenarios of the sweep run.
    pub scenarios: u64,
    /// Scenario runs of the random search (cases and shrinking steps).
    pub random_runs: u64,
    /// For an indistinguishable mutant: why the selected CPUs cannot show it.
    pub indistinguishable: Option<&'static str>,
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
    /// The CPU.
    pub cpu: CpuSpec,
    /// The scenario.
    pub scenario: Scenario,
    /// Its program, assembled once for every variant.
    pub program: Program,
    /// Smaller first.
    pub size: u32,
}

impl Job {
    fn new(cpu: &CpuSpec, scenario: Scenario, size: u32) -> Result<Job, CheckError> {
        let program = super::run::assemble(&scenario).map_err(|e| CheckError::Setup {
            scenario: scenario.name.clone(),
            error: e,
        })?;
        Ok(Job {
            cpu: cpu.clone(),
            scenario,
            program,
            size,
        })
    }

    /// How a counterexample from this job ranks: smaller scenario, fewer registers, earlier.
    fn rank(&self, index: usize) -> (u32, usize, usize) {
        let f = self.cpu.features();
        (self.size, f.num_brps() + f.num_wrps(), index)
    }
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The wall-clock limit passed before the check finished.
    #[error("stopped by the wall-clock limit (--timeout) before the check finished")]
    Deadline,
    /// A generated scenario could not be set up (a defect of the sweep).
    #[error("{scenario}: {error}")]
    Setup {
        /// The scenario.
        scenario: String,
        /// Why.
        #[source]
        error: SetupError,
    },
}

/// Every scenario for the options.
pub fn jobs(opts: &CheckOptions) -> Result<Vec<Job>, CheckError> {
    let mut out = Vec::new();
    let pts = points();
    for cpu in &opts.cpus {
        for (i, p) in pts.iter().enumerate() {
            out.push(Job::new(
                cpu,
                p.scenario(&format!("sweep-{i}"), cpu),
                p.size(),
            )?);
        }
        out.push(Job::new(cpu, smp_scenario(cpu), 12)?);
    }
    if opts.count_sweep {
        count_sweep_jobs(&mut out)?;
    }
    Ok(out)
}

/// Every BRPs/WRPs field value 1..=15 with CTX_CMPs at its minimum and maximum.
fn count_sweep_jobs(out: &mut Vec<Job>) -> Result<(), CheckError> {
    for b in 2..=16u8 {
        for w in 2..=16u8 {
            for ctx in [1, b] {
                let Ok(f) = hypdbg_model::DebugFeatures::from_counts(b, w, ctx) else {
                    continue;
                };
                let cpu = CpuSpec::from_features(f);
                for (i, p) in count_points().iter().enumerate() {
                    let sc = p.scenario(&format!("counts-{i}"), &cpu);
                    out.push(Job::new(&cpu, sc, p.size() + 1)?);
                }
            }
        }
    }
    Ok(())
}

/// Progress reporting hook: called with the number of scenarios finished.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// The best counterexample so far of one variant.
struct Best {
    rank: (u32, usize, usize),
    violation: Violation,
    step: String,
}

/// Check every variant; `progress` is told how many scenarios finished.
pub fn check(
    opts: &CheckOptions,
    progress: Progress<'_>,
) -> Result<Vec<VariantReport>, CheckError> {
    let jobs = jobs(opts)?;
    let done = AtomicU64::new(0);
    opts.variants
        .par_iter()
        .map(|variant| {
            let tick = || progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            check_variant(variant, &jobs, opts, &tick)
        })
        .collect()
}

/// One variant over every job on an nVHE host and, for eras 2 and 3 outside protected mode,
/// on a VHE host (`NAME@vhe`): always for a reference or a user variant, for a mutant only
/// when nVHE did not catch it. Then the random search (nVHE). The verdict and the smallest
/// counterexample.
pub fn check_variant(
    variant: &Variant,
    jobs: &[Job],
    opts: &CheckOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<VariantReport, CheckError> {
    let mut hosts = vec![variant.clone()];
    let mut results: Vec<(usize, usize, Vec<Found>)> = Vec::new();
    collect_host(&mut results, variant, 0, jobs, opts, Some(tick))?;
    if let Some(vhe) = variant.on_vhe()
        && (!variant.is_mutant() || results.is_empty())
    {
        collect_host(&mut results, &vhe, 1, jobs, opts, None)?;
        hosts.push(vhe);
    }
    let runs = jobs.len() * hosts.len();
    let mut invariants = BTreeSet::new();
    let mut violations = 0u64;
    let mut best: Option<(Best, usize)> = None;
    for (h, i, found) in results {
        for found in found {
            violations += 1;
            invariants.insert(found.violation.invariant);
            let rank = jobs[i].rank(i);
            if best
                .as_ref()
                .is_none_or(|(b, bh)| (b.rank, *bh) > (rank, h))
            {
                let b = Best {
                    rank,
                    violation: found.violation,
                    step: found.step,
                };
                best = Some((b, h));
            }
        }
    }
    let mut counterexample = best.map(|(b, h)| {
        let job = &jobs[b.rank.2];
        let mut scenario = job.scenario.clone();
        scenario.flow = Some(hosts[h].label());
        let host = if h == 0 { "" } else { ", VHE host" };
        Counterexample {
            cpu: format!("{}{host}", job.cpu.label()),
            scenario,
            violation: b.violation,
            step: b.step,
        }
    });
    let (random_counterexample, random_runs) = random_counterexample(variant, opts)?;
    if let Some(r) = &random_counterexample {
        invariants.insert(r.violation.invariant);
        violations += 1;
        if counterexample.is_none() {
            counterexample = Some(r.clone());
        }
    }
    let hidden = hidden_on_every(variant, opts);
    let verdict = match Verdict::of(variant.kind, !invariants.is_empty()) {
        Verdict::Missed if hidden.is_some() => Verdict::Indistinguishable,
        v => v,
    };
    Ok(VariantReport {
        variant: variant.name,
        era: variant.era().to_string(),
        kind: variant.kind,
        description: variant.description,
        fix: variant.fix,
        verdict,
        indistinguishable: hidden.filter(|_| verdict == Verdict::Indistinguishable),
        random_runs,
        invariants: invariants.into_iter().collect(),
        violations,
        scenarios: runs as u64,
        counterexample,
        random_cases: opts.random_cases,
        random_counterexample,
    })
}

/// Why `variant` cannot be shown on any of the selected CPUs, if none can show it.
fn hidden_on_every(variant: &Variant, opts: &CheckOptions) -> Option<&'static str> {
    let mut why = None;
    for cpu in &opts.cpus {
        why = Some(variant.hidden(cpu.features())?);
    }
    why
}

/// Run `variant` (host number `h`) over every job; keep the jobs that found something.
fn collect_host(
    out: &mut Vec<(usize, usize, Vec<Found>)>,
    variant: &Variant,
    h: usize,
    jobs: &[Job],
    opts: &CheckOptions,
    tick: Option<&(dyn Fn() + Sync)>,
) -> Result<(), CheckError> {
    let results: Vec<Result<Vec<Found>, CheckError>> = jobs
        .par_iter()
        .map(|job| {
            if opts.deadline.is_some_and(|d| Instant::now() > d) {
                return Err(CheckError::Deadline);
            }
            let r = run_job(variant, job);
            if let Some(t) = tick {
                t();
            }
            r
        })
        .collect();
    for (i, r) in results.into_iter().enumerate() {
        let found = r?;
        if !found.is_empty() {
            out.push((h, i, found));
        }
    }
    Ok(())
}

/// The random search for `variant` on the options' random CPU, seeded by its name: its
/// counterexample, if any, and the scenario runs it made.
fn random_counterexample(
    variant: &Variant,
    opts: &CheckOptions,
) -> Result<(Option<Counterexample>, u64), CheckError> {
    let cpu = &opts.random_cpu;
    let seed = variant
        .name
        .bytes()
        .fold(0x9e37_79b9u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let search = random::search(variant, cpu, opts.random_cases, seed, opts.deadline);
    if search.timed_out {
        return Err(CheckError::Deadline);
    }
    let found = search.found.map(|(mut scenario, violation)| {
        scenario.flow = Some(variant.name.to_string());
        let step = scenario
            .ops
            .get(violation.action.saturating_sub(1) as usize)
            .map(|o| format!("{o:?}"))
            .unwrap_or_default();
        Counterexample {
            cpu: cpu.label().to_string(),
            scenario,
            violation,
            step,
        }
    });
    Ok((found, search.runs))
}
