//! One generated scenario on the simulator through the [`crate::driver`], with the checker
//! as the observer: the violations it found and what each action did.

use hypdbg_hyp::events::Event;
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::Variant;
use hypdbg_hyp::workloads::CODE_BASE;

use super::check::{CheckError, Job};
use crate::checker::{Checker, Invariant, Violation};
use crate::driver::sim::{DEFAULT_BUDGET, SimBackend, SimSpec};
use crate::driver::{ActionInfo, ActionResult, Backend, Engine, Observer, SetupError, VmShape};
use crate::scenario::Scenario;
use crate::scenario::resolve::Resolver;

/// A violation and the words of the action that hit it.
#[derive(Clone, Debug)]
pub struct Found {
    /// The violation.
    pub violation: Violation,
    /// What its action did.
    pub step: String,
}

/// Assemble a scenario's guest program.
pub fn assemble(sc: &Scenario) -> Result<Program, SetupError> {
    Ok(Program::assemble(CODE_BASE, &sc.code)?)
}

/// The checker, fed as events come, and one line per action.
struct Checking {
    checker: Checker,
    log: Vec<String>,
    /// The action that stopped the run, and why.
    error: Option<(u64, String)>,
}

impl Observer for Checking {
    fn event(&mut self, seq: u64, e: &Event, a: &ActionInfo<'_>) {
        self.checker.on_event(seq, a.number, e);
    }

    fn done(&mut self, a: &ActionInfo<'_>, r: &ActionResult) {
        match r {
            Ok(o) => self.log.push(o.text.clone()),
            Err(e) => {
                self.log.push(format!("stopped: {e}"));
                self.error = Some((a.number, e.to_string()));
            }
        }
    }
}

/// What a checked run found.
pub struct Checked {
    /// The violations, in order.
    pub violations: Vec<Violation>,
    /// One line per action.
    pub log: Vec<String>,
    /// The action that stopped the run, and why.
    pub error: Option<(u64, String)>,
    /// Events reported.
    pub events: u64,
}

/// Play `sc` (whose program is `program`) with `variant`'s flow, checking every event.
pub fn run_checked(
    sc: &Scenario,
    program: &Program,
    variant: &Variant,
) -> Result<Checked, SetupError> {
    let spec = SimSpec {
        variant,
        shape: VmShape::of(sc),
        budget: sc.budget.unwrap_or(DEFAULT_BUDGET),
        trace: false,
    };
    let backend = SimBackend::new(&spec, program)?;
    let checker = Checker::new(backend.era(), backend.guest_features());
    let mut engine = Engine::new(backend, Resolver::new(program, &sc.symbols));
    let mut obs = Checking {
        checker,
        log: Vec::new(),
        error: None,
    };
    // A halted run is in `obs.error`: the guest could not finish.
    let _ = engine.play(&sc.ops, &mut obs);
    Ok(Checked {
        violations: obs.checker.violations,
        log: obs.log,
        error: obs.error,
        events: engine.events(),
    })
}

/// The violations of one variant on one job.
pub fn run_job(variant: &Variant, job: &Job) -> Result<Vec<Found>, CheckError> {
    let out = run_checked(&job.scenario, &job.program, variant).map_err(|e| CheckError::Setup {
        scenario: job.scenario.name.clone(),
        error: e,
    })?;
    let step = |action: u64| {
        let i = action.saturating_sub(1) as usize;
        out.log
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("{:?}", job.scenario.ops.get(i)))
    };
    let mut v: Vec<Found> = out
        .violations
        .iter()
        .map(|x| Found {
            violation: x.clone(),
            step: step(x.action),
        })
        .collect();
    // A scenario stopped by something other than a hyp panic is a violation of what the
    // guest was promised (its program could not finish).
    if let Some((action, msg)) = &out.error
        && v.is_empty()
    {
        let violation = Violation {
            invariant: Invariant::GuestReadsBack,
            register: None,
            expected: None,
            actual: None,
            action: *action,
            event: out.events,
            vcpu: 0,
            pcpu: None,
            message: format!("the guest could not finish: {msg}"),
        };
        v.push(Found {
            violation,
            step: step(*action),
        });
    }
    Ok(v)
}
