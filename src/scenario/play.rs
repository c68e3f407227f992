//! `hypdbg run`: play a checked scenario file: every action (repeats expanded), each
//! action's expectations, and the validator's invariant [`Checker`] over the events as they
//! come, streaming [`Record`]s to a sink (the trace) and returning a [`Report`].
//!
//! Events are handed to the checker and the trace action by action and then dropped, so a
//! long loop of actions (the userspace single-step test) runs in constant memory.

use std::collections::{BTreeMap, BTreeSet};

use hypdbg_hyp::events::Event;

use hypdbg_hyp::variants::Variant;
use serde::Serialize;

use super::expect::{Difference, evaluate};
use super::ops::{Op, Value};
use super::runner::{Engine, ExitCounts, Fail, Outcome, ScenarioError};
use super::source::{ScenarioFile, Seg, op_path};
use super::trace::{Record, TraceContext};
use crate::validate::{Checker, Invariant};

/// How to play.
#[derive(Clone, Debug, Default)]
pub struct PlayOptions {
    /// Run this flow instead of the file's.
    pub flow: Option<Variant>,
    /// Emit the full trace (every action, event, register access, expectation verdict and
    /// violation); otherwise only [`Record::Start`].
    pub trace: bool,
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
}

impl Report {
    /// How many failures and violations a report keeps.
    pub const KEEP: usize = 50;
}

/// Why a file could not be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {error}")]
pub struct PlayError {
    /// The file.
    pub file: String,
    /// The setup error.
    pub error: ScenarioError,
}

struct Player<'a, 'p> {
    file: &'a ScenarioFile,
    engine: Engine<'p>,
    checker: Checker,
    ctx_era: hypdbg_hyp::flow::Era,
    trace: bool,
    sink: &'a mut dyn FnMut(Record),
    seq: usize,
    action: u64,
    expected: BTreeSet<Invariant>,
    broken: BTreeSet<Invariant>,
    report: Report,
    /// Where each vcpu is loaded (for the trace's CPU column).
    loaded: BTreeMap<usize, usize>,
}

fn event_vcpu(e: &Event) -> Option<usize> {
    match e {
        Event::Guest { vcpu, .. } | Event::Trap { vcpu, .. } => Some(*vcpu),
        _ => None,
    }
}

/// Play `file`; `sink` receives the trace records as they happen.
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
    let engine = Engine::new(&file.scenario, &file.program, &variant, opts.trace).map_err(|e| {
        PlayError {
            file: file.file.clone(),
            error: e,
        }
    })?;
    let era = engine.vm().era();
    let features = *engine.vm().guest_features();
    let expected = if own_flow {
        file.expect_violations.clone()
    } else {
        BTreeSet::new()
    };
    let report = Report {
        file: file.file.clone(),
        scenario: file.scenario.name.clone(),
        flow: variant.name.to_string(),
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
        expected_invariants: expected.iter().map(|i| i.label()).collect(),
        error: None,
        passed: false,
    };
    let cpus = file
        .cpus
        .iter()
        .map(|(name, f)| {
            format!(
                "{name} ({} BRPs, {} WRPs, {} context-aware)",
                f.num_brps(),
                f.num_wrps(),
                f.num_ctx_cmps()
            )
        })
        .collect();
    sink(Record::Start {
        file: file.file.clone(),
        scenario: file.scenario.name.clone(),
        flow: variant.name.to_string(),
        era: format!("{era}, {}", era.kernels()),
        cpus,
        vcpus: file.scenario.vcpus,
    });
    let mut p = Player {
        file,
        engine,
        checker: Checker::new(era, features),
        ctx_era: era,
        trace: opts.trace,
        sink,
        seq: 0,
        action: 0,
        expected,
        broken: BTreeSet::new(),
        report,
        loaded: BTreeMap::new(),
    };
    let _ = p.ops(&file.scenario.ops, &[]);
    let mut r = p.report;
    r.exits = p.engine.exits;
    r.invariants = p.broken.iter().map(|i| i.label()).collect();
    r.passed = r.met == r.expectations && r.error.is_none() && p.broken == p.expected;
    Ok(r)
}

/// The run stopped (an action failed).
struct Stopped;

impl Player<'_, '_> {
    fn ops(&mut self, ops: &[Op], parent: &[usize]) -> Result<(), Stopped> {
        for (i, op) in ops.iter().enumerate() {
            let mut idx = parent.to_vec();
            idx.push(i);
            match op {
                Op::Repeat { times, ops } => {
                    for _ in 0..*times {
                        self.ops(ops, &idx)?;
                    }
                }
                other => self.action(other, &idx)?,
            }
        }
        Ok(())
    }

    fn location(&self, path: &[Seg]) -> String {
        self.file.location(path)
    }

    fn action(&mut self, op: &Op, idx: &[usize]) -> Result<(), Stopped> {
        self.action += 1;
        self.report.actions += 1;
        let path = op_path(idx);
        let location = self.location(&path);
        let v = op.vcpu();
        if self.trace {
            (self.sink)(Record::Action {
                action: self.action,
                location: location.clone(),
                vcpu: v,
                op: op.name().to_string(),
            });
        }
        let before = self.engine.exception_count(v);
        let outcome = self.engine.apply(op, self.action as usize);
        if let Ok(o) = &outcome {
            self.report.stops += o.stops + u64::from(o.exit.is_some_and(|x| x.kind.is_debug()));
        }
        let mut verdicts: Vec<(String, Option<String>)> = Vec::new();
        if let Some(e) = op.expect() {
            self.report.expectations += 1;
            let r = evaluate(&mut self.engine, v, e, &outcome, before);
            let mut field = path.clone();
            field.push(Seg::Key("expect".into()));
            match r {
                Ok(()) => {
                    self.report.met += 1;
                    verdicts.push((self.location(&field), None));
                }
                Err(Difference { field: f, message }) => {
                    field.extend(f);
                    verdicts.push((self.location(&field), Some(message)));
                }
            }
        }
        if let (
            Op::GetOneReg {
                value: Some(want), ..
            },
            Ok(o),
        ) = (op, &outcome)
        {
            self.report.expectations += 1;
            let mut field = path.clone();
            field.push(Seg::Key("value".into()));
            let w = self.engine.resolver().resolve(want);
            if w.is_some() && w == o.value {
                self.report.met += 1;
                verdicts.push((self.location(&field), None));
            } else {
                let shown = match want {
                    Value::Num(n) => format!("{n:#x}"),
                    Value::Label(l) => format!("{l} ({:#x})", w.unwrap_or(0)),
                };
                verdicts.push((
                    self.location(&field),
                    Some(format!(
                        "expected {shown}, KVM_GET_ONE_REG returned {:#x}",
                        o.value.unwrap_or(0)
                    )),
                ));
            }
        }
        self.events(&location);
        let expects_error = op.expect().is_some_and(|e| e.error.is_some());
        let (ok, text) = match &outcome {
            Ok(Outcome { text, .. }) => (true, text.clone()),
            Err(f) => (false, f.to_string()),
        };
        if self.trace {
            (self.sink)(Record::Done {
                action: self.action,
                location: location.clone(),
                ok,
                text,
            });
            for (loc, d) in &verdicts {
                (self.sink)(Record::Expectation {
                    action: self.action,
                    location: loc.clone(),
                    met: d.is_none(),
                    difference: d.clone(),
                });
            }
        }
        for (loc, d) in verdicts {
            if let Some(difference) = d
                && self.report.failures.len() < Report::KEEP
            {
                self.report.failures.push(Failure {
                    action: self.action,
                    op: op.name().to_string(),
                    location: loc,
                    difference,
                });
            }
        }
        match outcome {
            Err(Fail::Setup(e)) => {
                self.report.error = Some(format!("{location}: action {}: {e}", self.action));
                Err(Stopped)
            }
            Err(Fail::Run(msg)) if !expects_error => {
                self.report.error = Some(format!(
                    "{location}: action {} (`{}`) failed: {msg}",
                    self.action,
                    op.name()
                ));
                Err(Stopped)
            }
            _ => Ok(()),
        }
    }

    /// Check and trace the events of the action just applied.
    fn events(&mut self, location: &str) {
        let events = self.engine.take_events();
        if events.is_empty() {
            return;
        }
        let first_new = self.checker.violations.len();
        let steps = vec![self.action as usize; events.len()];
        self.checker.check(&events, &steps);
        let new: Vec<_> = self.checker.violations.drain(first_new..).collect();
        let base = self.seq;
        self.seq += events.len();
        let mut records = Vec::new();
        let ctx = TraceContext {
            era: self.ctx_era,
            resolver: self.engine.resolver(),
        };
        let mut k = 0;
        for (i, e) in events.iter().enumerate() {
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
                records.clear();
                ctx.event(base + i, e, on, &mut records);
                for r in records.drain(..) {
                    (self.sink)(r);
                }
            }
            while k < new.len() && new[k].event <= i {
                let x = &new[k];
                k += 1;
                self.broken.insert(x.invariant);
                self.report.violations_total += 1;
                let expected_by_file = self.expected.contains(&x.invariant);
                if self.trace {
                    (self.sink)(Record::Violation {
                        seq: base + x.event,
                        action: self.action,
                        location: location.to_string(),
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
                        action: self.action,
                        location: location.to_string(),
                        event: base + x.event,
                        vcpu: x.vcpu,
                        cpu: x.pcpu,
                        invariant: x.invariant.label(),
                        message: x.message.clone(),
                    });
                }
            }
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
            (e.hvc, "hvc"),
            (e.debug, "debug"),
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
