//! `hypdbg run`: play a checked scenario file through the [`crate::driver`] on the simulator
//! and observe it: each action's expectations ([`expect`]), the invariant [`Checker`] over
//! the events as they come, and the trace ([`trace`]) streamed to a sink as [`Record`]s;
//! the result is a [`Report`].
//!
//! Events are handed to the observers as they come and then dropped, so a long loop of
//! actions (the userspace single-step test) runs in constant memory.

pub mod expect;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet};

use hypdbg_hyp::events::Event;
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::variants::Variant;
use serde::Serialize;

use crate::checker::{Checker, Finding, Invariant, RealKernelCheck, Violation};
use crate::driver::sim::{DEFAULT_BUDGET, SimBackend, SimSpec};
use crate::driver::{
    ActionError, ActionInfo, ActionResult, Backend, Engine, ExitCounts, Nobody, Observer, Probe,
    Tee, VmShape,
};
use crate::scenario::ops::{Op, Value};
use crate::scenario::resolve::Resolver;
use crate::scenario::source::{ScenarioFile, Seg, op_path};
use expect::{Difference, evaluate};
use trace::{Record, TraceContext};

/// How to play.
#[derive(Clone, Debug, Default)]
pub struct PlayOptions {
    /// Run this flow instead of the file's.
    pub flow: Option<Variant>,
    /// Emit the full trace (every action, event, register access, expectation verdict and
    /// violation); otherwise only [`Record::Start`].
    pub trace: bool,
    /// Stop once this instant has passed (the report says so).
    pub deadline: Option<std::time::Instant>,
    /// Show a progress bar on standard error for a run that takes more than a second.
    pub progress: bool,
}

/// An expectation not met, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The action number (1-based, repeats counted).
    pub action: u64,
    /// The action's `do`.
    pub op: String,
    /// `FILE:LINE:COL` of the expectation field that differs.
    pub location: String,
    /// The first difference.
    pub difference: String,
}

/// An invariant violation, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViolationReport {
    /// The action number.
    pub action: u64,
    /// `FILE:LINE:COL` of the action.
    pub location: String,
    /// The event index.
    pub event: usize,
    /// The vcpu.
    pub vcpu: usize,
    /// The physical CPU.
    pub cpu: Option<usize>,
    /// `inv1:guest-state-loaded`.
    pub invariant: String,
    /// In the kernel's words.
    pub message: String,
}

/// What a run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The file.
    pub file: String,
    /// The scenario.
    pub scenario: String,
    /// The flow run.
    pub flow: String,
    /// Its era.
    pub era: String,
    /// Actions applied (repeats counted).
    pub actions: u64,
    /// KVM_RUN returns.
    pub exits: ExitCounts,
    /// Debug stops the running actions saw (their final exit or passed on the way).
    pub stops: u64,
    /// Expectations evaluated.
    pub expectations: u64,
    /// Expectations met.
    pub met: u64,
    /// The first unmet expectations (at most [`Report::KEEP`]).
    pub failures: Vec<Failure>,
    /// Every violation found.
    pub violations_total: u64,
    /// The first violations (at most [`Report::KEEP`]).
    pub violations: Vec<ViolationReport>,
    /// The invariants broken.
    pub invariants: Vec<String>,
    /// The invariants the file expects broken (with its own flow).
    pub expected_invariants: Vec<String>,
    /// The action error that stopped the run, located.
    pub error: Option<String>,
    /// Every expectation met, no action error, and the invariants broken are exactly the
    /// expected ones (none, unless the file says otherwise).
    pub passed: bool,
    /// The wall-clock limit stopped the run.
    pub timed_out: bool,
    /// How long the play took, on a real kernel (milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// On a real kernel: the invariants it cannot judge (they need the registers while the
    /// guest runs), which only the simulator checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub simulator_only: Vec<String>,
}

impl Report {
    /// How many failures and violations a report keeps.
    pub const KEEP: usize = 50;
}

/// Why a file could not be played.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {error}")]
pub struct PlayError {
    /// The file.
    pub file: String,
    /// The setup error.
    pub error: crate::driver::SetupError,
}

/// Play `file` on the simulator; `sink` receives the trace records as they happen.
pub fn play(
    file: &ScenarioFile,
    opts: &PlayOptions,
    sink: &mut dyn FnMut(Record),
) -> Result<Report, PlayError> {
    let variant = opts.flow.as_ref().unwrap_or(&file.variant).clone();
    let own_flow = opts
        .flow
        .as_ref()
        .is_none_or(|f| f.name == file.variant.name);
    let sc = &file.scenario;
    let spec = SimSpec {
        variant: &variant,
        shape: VmShape::of(sc),
        budget: sc.budget.unwrap_or(DEFAULT_BUDGET),
        trace: opts.trace,
    };
    let backend = SimBackend::new(&spec, &file.program).map_err(|error| PlayError {
        file: file.file.clone(),
        error,
    })?;
    let expected = if own_flow {
        file.expect_violations.clone()
    } else {
        BTreeSet::new()
    };
    let mut engine = Engine::new(backend, Resolver::new(&file.program, &sc.symbols));
    Ok(play_engine(
        file,
        &mut engine,
        &variant.label(),
        expected,
        opts,
        sink,
        &mut Nobody,
    ))
}

/// Play `file` through `engine` (any backend) under the name `flow`, holding it to the
/// invariants in `expected` being broken (none, unless the file's own flow says so); `extra`
/// observes the same stream (a transcript).
pub fn play_engine<B: Backend>(
    file: &ScenarioFile,
    engine: &mut Engine<B>,
    flow: &str,
    expected: BTreeSet<Invariant>,
    opts: &PlayOptions,
    sink: &mut dyn FnMut(Record),
    extra: &mut dyn Observer,
) -> Report {
    let sc = &file.scenario;
    let era = engine.backend().era();
    let features = engine.backend().guest_features();
    let cpus = sc
        .cpus
        .iter()
        .map(|c| {
            let f = c.features();
            format!(
                "{c} ({} BRPs, {} WRPs, {} context-aware)",
                f.num_brps(),
                f.num_wrps(),
                f.num_ctx_cmps()
            )
        })
        .collect();
    sink(Record::Start {
        file: file.file.clone(),
        scenario: sc.name.clone(),
        flow: flow.to_string(),
        era: format!("{era}, {}", era.kernels()),
        cpus,
        vcpus: sc.vcpus,
    });
    let resolver = Resolver::new(&file.program, &sc.symbols);
    engine.set_deadline(opts.deadline);
    let mut p = Player {
        file,
        checker: Checker::new(era, features),
        era,
        trace: opts.trace,
        sink,
        verdicts: Vec::new(),
        exceptions_before: Ok(0),
        expected,
        broken: BTreeSet::new(),
        report: Report::new(file, flow, era),
        loaded: BTreeMap::new(),
        resolver,
        progress: opts.progress.then(|| Progress::new(file.actions)),
    };
    let _ = engine.play(&sc.ops, &mut Tee(&mut p, extra));
    let mut r = p.report;
    r.expected_invariants = p.expected.iter().map(|i| i.label()).collect();
    r.actions = engine.actions();
    r.exits = engine.exits();
    r.invariants = p.broken.iter().map(|i| i.label()).collect();
    r.passed = r.met == r.expectations && r.error.is_none() && p.broken == p.expected;
    r
}

/// The observers of `hypdbg run`: expectations, the checker, the trace, the report.
struct Player<'a> {
    file: &'a ScenarioFile,
    checker: Checker,
    era: Era,
    trace: bool,
    sink: &'a mut dyn FnMut(Record),
    /// The current action's expectation verdicts: (location, difference).
    verdicts: Vec<(String, Option<String>)>,
    /// Exceptions the guest had taken before the current action (or why the log could not
    /// be read).
    exceptions_before: Result<usize, String>,
    expected: BTreeSet<Invariant>,
    broken: BTreeSet<Invariant>,
    report: Report,
    /// Where each vcpu is loaded (for the trace's CPU column).
    loaded: BTreeMap<usize, usize>,
    /// Labels and symbols, for the trace.
    resolver: Resolver,
    /// Actions done of the expanded total, once the run takes more than a second.
    progress: Option<Progress>,
}

/// A progress bar on standard error, drawn only once a run has taken a second.
struct Progress {
    bar: indicatif::ProgressBar,
    started: std::time::Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::hidden(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} actions {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress {
            bar,
            started: std::time::Instant::now(),
        }
    }

    fn tick(&mut self, action: u64) {
        if self.bar.is_hidden() && self.started.elapsed().as_secs() >= 1 {
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        self.bar.set_position(action);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A backend's own finding as a violation of the action it happened in.
pub fn finding_violation(f: Finding, action: u64) -> Violation {
    Violation {
        invariant: f.invariant,
        register: None,
        expected: None,
        actual: None,
        action,
        event: 0,
        vcpu: f.vcpu,
        pcpu: None,
        message: f.message,
    }
}

fn event_vcpu(e: &Event) -> Option<usize> {
    match e {
        Event::Guest { vcpu, .. } | Event::Trap { vcpu, .. } => Some(*vcpu),
        _ => None,
    }
}

impl Player<'_> {
    fn location(&self, path: &[Seg]) -> String {
        self.file.location(path)
    }

    fn action_location(&self, a: &ActionInfo<'_>) -> String {
        self.location(&op_path(a.path))
    }

    /// A `get_one_reg` with `value`: an expectation of its own.
    fn get_one_reg_verdict(
        &self,
        a: &ActionInfo<'_>,
        r: &ActionResult,
        probe: &dyn Probe,
    ) -> Option<(String, Option<String>)> {
        let (
            Op::GetOneReg {
                value: Some(want), ..
            },
            Ok(o),
        ) = (a.op, r)
        else {
            return None;
        };
        let mut field = op_path(a.path);
        field.push(Seg::Key("value".into()));
        let w = probe.resolver().resolve(want);
        if w.is_some() && w == o.value {
            return Some((self.location(&field), None));
        }
        let shown = match want {
            Value::Num(n) => format!("{n:#x}"),
            Value::Label(l) => format!("{l} ({:#x})", w.unwrap_or(0)),
        };
        Some((
            self.location(&field),
            Some(format!(
                "expected {shown}, KVM_GET_ONE_REG returned {:#x}",
                o.value.unwrap_or(0)
            )),
        ))
    }

    fn violation(&mut self, a: &ActionInfo<'_>, x: &Violation) {
        self.broken.insert(x.invariant);
        self.report.violations_total += 1;
        let location = self.action_location(a);
        if self.trace {
            let expected_by_file = self.expected.contains(&x.invariant);
            (self.sink)(Record::Violation {
                seq: x.event as usize,
                action: a.number,
                location: location.clone(),
                vcpu: x.vcpu,
                cpu: x.pcpu,
                invariant: x.invariant.label(),
                register: x.register.clone(),
                expected: x.expected.map(|v| format!("{v:#x}")),
                actual: x.actual.map(|v| format!("{v:#x}")),
                message: x.message.clone(),
                expected_by_file,
            });
        }
        if self.report.violations.len() < Report::KEEP {
            self.report.violations.push(ViolationReport {
                action: a.number,
                location,
                event: x.event as usize,
                vcpu: x.vcpu,
                cpu: x.pcpu,
                invariant: x.invariant.label(),
                message: x.message.clone(),
            });
        }
    }
}

impl Observer for Player<'_> {
    fn action(&mut self, a: &ActionInfo<'_>, probe: &mut dyn Probe) {
        if let Some(p) = self.progress.as_mut() {
            p.tick(a.number);
        }
        self.exceptions_before = probe
            .exception_count(a.op.vcpu())
            .map_err(|e| e.to_string());
        if self.trace {
            let location = self.action_location(a);
            (self.sink)(Record::Action {
                action: a.number,
                location,
                vcpu: a.op.vcpu(),
                op: a.op.name().to_string(),
            });
        }
    }

    fn outcome(&mut self, a: &ActionInfo<'_>, r: &ActionResult, probe: &mut dyn Probe) {
        if let Ok(o) = r {
            self.report.stops += o.stops + u64::from(o.exit.is_some_and(|x| x.kind.is_debug()));
        }
        self.verdicts.clear();
        if let Some(e) = a.op.expect() {
            self.report.expectations += 1;
            let mut field = op_path(a.path);
            field.push(Seg::Key("expect".into()));
            match evaluate(probe, a.op.vcpu(), e, r, &self.exceptions_before) {
                Ok(()) => {
                    self.report.met += 1;
                    self.verdicts.push((self.location(&field), None));
                }
                Err(Difference { field: f, message }) => {
                    field.extend(f);
                    self.verdicts.push((self.location(&field), Some(message)));
                }
            }
        }
        if let Some(v) = self.get_one_reg_verdict(a, r, probe) {
            self.report.expectations += 1;
            if v.1.is_none() {
                self.report.met += 1;
            }
            self.verdicts.push(v);
        }
        for f in probe.findings() {
            self.violation(a, &finding_violation(f, a.number));
        }
    }

    fn event(&mut self, seq: u64, e: &Event, a: &ActionInfo<'_>) {
        let first_new = self.checker.violations.len();
        self.checker.on_event(seq, a.number, e);
        if self.trace {
            match e {
                Event::Load { vcpu, pcpu, .. } => {
                    self.loaded.insert(*vcpu, *pcpu);
                }
                Event::Put { vcpu, .. } => {
                    self.loaded.remove(vcpu);
                }
                _ => {}
            }
            let on = event_vcpu(e).and_then(|v| self.loaded.get(&v).copied());
            let ctx = TraceContext {
                era: self.era,
                resolver: &self.resolver,
            };
            let mut records = Vec::new();
            ctx.event(seq as usize, e, on, &mut records);
            for r in records {
                (self.sink)(r);
            }
        }
        let new: Vec<Violation> = self.checker.violations.drain(first_new..).collect();
        for x in &new {
            self.violation(a, x);
        }
    }

    fn done(&mut self, a: &ActionInfo<'_>, r: &ActionResult) {
        let location = self.action_location(a);
        if self.trace {
            let (ok, text) = match r {
                Ok(o) => (true, o.text.clone()),
                Err(f) => (false, f.to_string()),
            };
            (self.sink)(Record::Done {
                action: a.number,
                location: location.clone(),
                ok,
                text,
            });
            for (loc, d) in &self.verdicts {
                (self.sink)(Record::Expectation {
                    action: a.number,
                    location: loc.clone(),
                    met: d.is_none(),
                    difference: d.clone(),
                });
            }
        }
        for (loc, d) in std::mem::take(&mut self.verdicts) {
            if let Some(difference) = d
                && self.report.failures.len() < Report::KEEP
            {
                self.report.failures.push(Failure {
                    action: a.number,
                    op: a.op.name().to_string(),
                    location: loc,
                    difference,
                });
            }
        }
        let expects_error = a.op.expect().is_some_and(|e| e.error.is_some());
        match r {
            Err(ActionError::Setup(e)) => {
                self.report.error = Some(format!("{location}: action {}: {e}", a.number));
            }
            Err(ActionError::Deadline) => {
                self.report.timed_out = true;
                self.report.error = Some(format!(
                    "{location}: action {} (`{}`): stopped by the wall-clock limit (--timeout)",
                    a.number,
                    a.op.name()
                ));
            }
            Err(e) if !expects_error => {
                self.report.error = Some(format!(
                    "{location}: action {} (`{}`) failed: {e}",
                    a.number,
                    a.op.name()
                ));
            }
            _ => {}
        }
    }
}

impl Report {
    fn new(file: &ScenarioFile, flow: &str, era: Era) -> Self {
        Report {
            file: file.file.clone(),
            scenario: file.scenario.name.clone(),
            flow: flow.to_string(),
            era: format!("{era} ({})", era.kernels()),
            actions: 0,
            exits: ExitCounts::default(),
            stops: 0,
            expectations: 0,
            met: 0,
            failures: Vec::new(),
            violations_total: 0,
            violations: Vec::new(),
            invariants: Vec::new(),
            expected_invariants: Vec::new(),
            error: None,
            passed: false,
            timed_out: false,
            elapsed_ms: None,
            simulator_only: Vec::new(),
        }
    }
}

impl Report {
    /// The summary, in words.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario '{}' ({}), flow {} [{}]",
            self.scenario, self.file, self.flow, self.era
        );
        let e = &self.exits;
        let mut kinds = Vec::new();
        for (n, k) in [
            (e.stop, "stop"),
            (e.debug, "debug"),
            (e.mmio, "mmio"),
            (e.hypercall, "hypercall/system event"),
            (e.intr, "intr"),
            (e.program_end, "program end"),
            (e.guest_abort, "guest abort"),
        ] {
            if n > 0 {
                kinds.push(format!("{n} {k}"));
            }
        }
        let _ = writeln!(
            s,
            "actions: {}; KVM_RUN exits: {}{}; debug stops: {}",
            self.actions,
            e.total,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            },
            self.stops
        );
        let _ = writeln!(s, "expectations: {}/{} met", self.met, self.expectations);
        for f in &self.failures {
            let _ = writeln!(
                s,
                "  NOT MET {}: action {} (`{}`): {}",
                f.location, f.action, f.op, f.difference
            );
        }
        let unmet = self.expectations - self.met;
        if unmet as usize > self.failures.len() {
            let _ = writeln!(s, "  ... {} more", unmet as usize - self.failures.len());
        }
        if let Some(err) = &self.error {
            let _ = writeln!(s, "stopped: {err}");
        }
        if !self.simulator_only.is_empty() {
            let of = |c: RealKernelCheck| {
                Invariant::ALL
                    .iter()
                    .filter(|i| i.on_a_real_kernel() == c)
                    .map(|i| i.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                s,
                "invariants on the kernel: {} at every exit; {} as far as the expectations \
                 state them; simulator-only (they need the registers while the guest runs): {}",
                of(RealKernelCheck::AtEveryExit),
                of(RealKernelCheck::ThroughExpectations),
                self.simulator_only.join(", ")
            );
        }
        if self.violations_total == 0 {
            let _ = writeln!(s, "invariants: none broken");
        } else {
            let _ = writeln!(
                s,
                "invariants: {} violation(s) of {}",
                self.violations_total,
                self.invariants.join(", ")
            );
            for v in self.violations.iter().take(10) {
                let cpu = v.cpu.map(|c| format!(", CPU {c}")).unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  VIOLATION {}: action {}, event {}, vcpu {}{cpu}: {}: {}",
                    v.location, v.action, v.event, v.vcpu, v.invariant, v.message
                );
            }
            let shown = self.violations.len().min(10);
            if self.violations_total as usize > shown {
                let _ = writeln!(
                    s,
                    "  ... {} more (--trace shows each where it happens)",
                    self.violations_total as usize - shown
                );
            }
        }
        if !self.expected_invariants.is_empty() {
            let _ = writeln!(
                s,
                "the file expects this flow to break: {}",
                self.expected_invariants.join(", ")
            );
        }
        let _ = writeln!(s, "{}", if self.passed { "PASS" } else { "FAIL" });
        s
    }
}
