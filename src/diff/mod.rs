//! `hypdbg diff`: every scenario on the simulator (the flow of the kernel's version and mode)
//! and on a real kernel, transcripts compared action by action ([`transcript`]); each
//! scenario agrees, parts only where the known differences explain it ([`expectations`]:
//! every divergent action is listed, so a QEMU artifact early in a scenario does not hide a
//! kernel difference later), parts unexplained, or is not runnable on a real kernel (with
//! the reason).

pub mod expectations;
pub mod transcript;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use hypdbg_hyp::variants::Variant;
use serde::Serialize;

use crate::driver::sim::{DEFAULT_BUDGET, SimBackend, SimSpec};
use crate::driver::{Engine, VmShape};
use crate::play::{PlayOptions, play_engine};
use crate::real::session::{RealPlayError, RealSuite};
use crate::scenario::resolve::Resolver;
use crate::scenario::source::ScenarioFile;
use expectations::{Category, Expectations, Known};
use transcript::{Divergence, Recorder, Transcript, divergences};

/// How one scenario came out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Outcome {
    /// Every action the same on both.
    Agree,
    /// Every divergence a known difference.
    Listed {
        /// The first one's category.
        category: Category,
        /// For a kernel defect: whether the simulator with the named variant agrees with
        /// the kernel.
        #[serde(skip_serializing_if = "Option::is_none")]
        variant_agrees: Option<bool>,
    },
    /// A difference no entry explains.
    Differs,
    /// Not runnable on a real kernel.
    NotRunnable {
        /// Why.
        why: String,
    },
    /// The machine failed while playing it.
    Failed {
        /// What failed.
        error: String,
    },
}

impl Outcome {
    /// One word: `agree`, `qemu`, `kernel-defect`, `simulator`, `DIFFERS`, `not-runnable`,
    /// `FAILED`.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Agree => "agree",
            Outcome::Listed { category, .. } => category.name(),
            Outcome::Differs => "DIFFERS",
            Outcome::NotRunnable { .. } => "not-runnable",
            Outcome::Failed { .. } => "FAILED",
        }
    }
}

/// One scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioDiff {
    /// The file.
    pub file: String,
    /// The scenario's name.
    pub scenario: String,
    /// The verdict.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The first divergence no entry explains (`DIFFERS`), else the first listed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// The first listed difference's explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Every divergence a known difference explains, in action order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<ListedDifference>,
    /// The file's expectations held on the simulator.
    pub simulator_passed: Option<bool>,
    /// The file's expectations and the observable invariants held on the kernel.
    pub kernel_passed: Option<bool>,
    /// Actions played on the kernel.
    pub actions: u64,
    /// Time on the kernel, milliseconds.
    pub kernel_ms: u64,
}

impl ScenarioDiff {
    /// `file`, not played yet.
    fn new(file: &ScenarioFile) -> Self {
        ScenarioDiff {
            file: file.file.clone(),
            scenario: file.scenario.name.clone(),
            outcome: Outcome::Agree,
            divergence: None,
            why: None,
            listed: Vec::new(),
            simulator_passed: None,
            kernel_passed: None,
            actions: 0,
            kernel_ms: 0,
        }
    }
}

/// A divergence and the known difference that explains it.
#[derive(Clone, Debug, Serialize)]
pub struct ListedDifference {
    /// Where and how the runs part.
    #[serde(flatten)]
    pub divergence: Divergence,
    /// The entry's category.
    pub category: Category,
    /// For a kernel defect: whether the simulator with the named variant agrees with the
    /// kernel at this action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_agrees: Option<bool>,
}

/// A whole diff on one kernel and mode.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// The kernel and mode.
    pub kernel: String,
    /// The simulator's flow.
    pub flow: String,
    /// Boot time, milliseconds.
    pub boot_ms: u64,
    /// The scenarios.
    pub scenarios: Vec<ScenarioDiff>,
    /// Scenarios played on the kernel per second (runnable ones, after boot).
    pub scenarios_per_s: f64,
}

impl DiffReport {
    /// Whether every runnable scenario agrees or is explained, each kernel defect by a
    /// variant that agrees with the kernel (exit status 0).
    pub fn clean(&self) -> bool {
        self.scenarios.iter().all(|s| {
            !matches!(s.outcome, Outcome::Differs | Outcome::Failed { .. })
                && s.listed.iter().all(|l| l.variant_agrees != Some(false))
        })
    }

    /// The listed differences per category.
    pub fn differences_by_category(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for l in self.scenarios.iter().flat_map(|s| &s.listed) {
            *m.entry(l.category.name()).or_insert(0) += 1;
        }
        m
    }

    /// The count per outcome word.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for s in &self.scenarios {
            *m.entry(s.outcome.word()).or_insert(0) += 1;
        }
        m
    }
}

/// What `diff` is told.
pub struct DiffOptions<'a> {
    /// The simulator's flow instead of the kernel's own.
    pub flow: Option<Variant>,
    /// The known differences.
    pub expectations: &'a Expectations,
    /// Stop once this instant has passed.
    pub deadline: Option<Instant>,
}

/// What the simulator did with a scenario.
struct Simulated {
    /// Action by action.
    transcript: Transcript,
    /// The file's expectations held.
    passed: bool,
    /// The wall-clock limit stopped it.
    timed_out: bool,
}

/// The simulator's run of `file` under `flow`; an error when the VM cannot be built.
fn simulate(file: &ScenarioFile, flow: &Variant, opts: &PlayOptions) -> Result<Simulated, String> {
    let sc = &file.scenario;
    let spec = SimSpec {
        variant: flow,
        shape: VmShape::of(sc),
        budget: sc.budget.unwrap_or(DEFAULT_BUDGET),
        trace: false,
    };
    let mut rec = Recorder::new();
    let backend = SimBackend::new(&spec, &file.program)
        .map_err(|e| format!("the simulator under {}: {e}", flow.label()))?;
    let mut engine = Engine::new(backend, Resolver::new(&file.program, &sc.symbols));
    let r = play_engine(
        file,
        &mut engine,
        &flow.label(),
        BTreeSet::new(),
        opts,
        &mut |_| {},
        &mut rec,
    );
    Ok(Simulated {
        transcript: rec.transcript,
        passed: r.met == r.expectations && r.error.is_none(),
        timed_out: r.timed_out,
    })
}

/// `variant` on the host mode (nVHE or VHE) of the flow it stands in for.
fn on_host_of(mut variant: Variant, flow: &Variant) -> Variant {
    variant.host = flow.host;
    variant
}

/// Diff every file on `suite`.
pub fn diff(suite: &mut RealSuite, files: &[ScenarioFile], opts: &DiffOptions<'_>) -> DiffReport {
    let flow = opts.flow.clone().unwrap_or_else(|| suite.flow().clone());
    let mut out = Vec::with_capacity(files.len());
    let (mut played, mut real_ms) = (0usize, 0u64);
    for file in files {
        if opts.deadline.is_some_and(|d| Instant::now() > d) {
            out.push(ScenarioDiff {
                outcome: Outcome::Failed {
                    error: "not played: the wall-clock limit (--timeout) passed".into(),
                },
                ..ScenarioDiff::new(file)
            });
            continue;
        }
        let d = diff_one(suite, file, &flow, opts);
        if d.kernel_passed.is_some() {
            played += 1;
            real_ms += d.kernel_ms;
        }
        out.push(d);
    }
    DiffReport {
        kernel: suite.name().to_string(),
        flow: flow.label(),
        boot_ms: suite.boot_time().as_millis() as u64,
        scenarios: out,
        scenarios_per_s: if real_ms == 0 {
            0.0
        } else {
            played as f64 * 1000.0 / real_ms as f64
        },
    }
}

/// One scenario on the simulator under `flow` and on the suite's kernel, compared.
fn diff_one(
    suite: &mut RealSuite,
    file: &ScenarioFile,
    flow: &Variant,
    opts: &DiffOptions<'_>,
) -> ScenarioDiff {
    let popts = PlayOptions {
        deadline: opts.deadline,
        ..PlayOptions::default()
    };
    let mut d = ScenarioDiff::new(file);
    if let Err(e) = suite.runnable(file) {
        d.outcome = Outcome::NotRunnable {
            why: match e {
                RealPlayError::NotRunnable { why, .. } => why,
                other => other.to_string(),
            },
        };
        return d;
    }
    let sim = match simulate(file, flow, &popts) {
        Ok(sim) => sim,
        Err(error) => {
            d.outcome = Outcome::Failed { error };
            return d;
        }
    };
    d.simulator_passed = Some(sim.passed);
    let mut rec = Recorder::new();
    let started = Instant::now();
    let real = suite.play_observed(file, &popts, &mut |_| {}, &mut rec);
    d.kernel_ms = started.elapsed().as_millis() as u64;
    match real {
        Err(RealPlayError::NotRunnable { why, .. }) => {
            d.outcome = Outcome::NotRunnable { why };
            return d;
        }
        Err(e) => {
            d.outcome = Outcome::Failed {
                error: e.to_string(),
            };
            return d;
        }
        Ok(r) => {
            d.kernel_passed = Some(r.passed);
            d.actions = r.actions;
            if r.timed_out || sim.timed_out {
                d.outcome = Outcome::Failed {
                    error: "stopped by the wall-clock limit (--timeout): not compared".into(),
                };
                return d;
            }
        }
    }
    let (series, mode) = suite.series_and_mode();
    explain(
        &mut d,
        file,
        flow,
        sim.transcript,
        &rec.transcript,
        |div| {
            opts.expectations
                .find(&file.scenario.name, &series, &mode, div)
        },
        &popts,
    );
    d
}

/// Walk the divergences of `real` from the reference `sim`: each must be a known difference
/// (`known`); past a kernel defect whose variant agrees with the kernel there, that variant
/// is the reference (it models the kernel from then on), so a defect's consequences are not
/// counted again. The first unexplained one makes the scenario `DIFFERS`.
fn explain<'k>(
    d: &mut ScenarioDiff,
    file: &ScenarioFile,
    flow: &Variant,
    sim: Transcript,
    real: &Transcript,
    known: impl Fn(&Divergence) -> Option<&'k Known>,
    popts: &PlayOptions,
) {
    let mut reference = sim;
    let mut after = 0;
    while let Some(div) = divergences(&reference, real)
        .into_iter()
        .find(|x| x.action > after)
    {
        let Some(k) = known(&div) else {
            d.outcome = Outcome::Differs;
            d.divergence = Some(div);
            return;
        };
        let mut variant_agrees = None;
        if let Some(name) = k.variant.as_deref() {
            // The variant agrees when it ran that action (an early stop is no agreement)
            // and the kernel does not part from it there.
            let run = hypdbg_hyp::variants::by_name(name)
                .and_then(|v| simulate(file, &on_host_of(v, flow), popts).ok())
                .map(|s| s.transcript)
                .filter(|t| {
                    t.steps.iter().any(|x| x.action == div.action)
                        && divergences(t, real).iter().all(|x| x.action != div.action)
                });
            variant_agrees = Some(run.is_some());
            if let Some(t) = run {
                reference = t;
            }
        }
        if d.listed.is_empty() {
            d.outcome = Outcome::Listed {
                category: k.category,
                variant_agrees,
            };
            d.why = Some(k.why.clone());
            d.divergence = Some(div.clone());
        }
        after = div.action;
        d.listed.push(ListedDifference {
            divergence: div,
            category: k.category,
            variant_agrees,
        });
    }
}

impl DiffReport {
    /// The report in words: one line per scenario (and its divergence), then the counts.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!(
            "kernel {} (booted in {:.1} s), simulator flow {} for every file (a file's own \
             `flow` and `expect_violations` are simulator notions, not used here)\n",
            self.kernel,
            self.boot_ms as f64 / 1000.0,
            self.flow
        );
        let w = self
            .scenarios
            .iter()
            .map(|d| d.scenario.len())
            .max()
            .unwrap_or(8)
            .max(8);
        for d in &self.scenarios {
            let _ = writeln!(s, "  {:w$}  {}", d.scenario, d.outcome.word());
            let part = |x: &Divergence| {
                format!(
                    "action {} (`{}`), {}: simulator {}, kernel {}",
                    x.action, x.op, x.field, x.simulator, x.kernel
                )
            };
            for l in &d.listed {
                let variant = match l.variant_agrees {
                    Some(true) => "; the named variant agrees with the kernel",
                    Some(false) => "; the named variant does NOT agree with the kernel",
                    None => "",
                };
                let _ = writeln!(
                    s,
                    "  {:w$}    {} [{}{variant}]",
                    "",
                    part(&l.divergence),
                    l.category.name()
                );
            }
            match &d.outcome {
                Outcome::Differs => {
                    if let Some(x) = &d.divergence {
                        let _ = writeln!(s, "  {:w$}    {} [not listed]", "", part(x));
                    }
                }
                Outcome::NotRunnable { why } => {
                    let _ = writeln!(s, "  {:w$}    {why}", "");
                }
                Outcome::Failed { error } => {
                    let _ = writeln!(s, "  {:w$}    {error}", "");
                }
                _ => {}
            }
        }
        let counts: Vec<String> = self
            .counts()
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let listed: Vec<String> = self
            .differences_by_category()
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let _ = writeln!(
            s,
            "{} scenario(s): {}; listed differences: {}; {:.1} scenarios/s on the kernel after boot",
            self.scenarios.len(),
            counts.join(", "),
            if listed.is_empty() {
                "none".to_string()
            } else {
                listed.join(", ")
            },
            self.scenarios_per_s
        );
        s
    }
}
