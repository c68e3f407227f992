//! The one scenario driver: [`Engine::play`] applies a scenario's actions to a [`Backend`]
//! (the simulator, or a real kernel) as a VMM and a debugger would, and reports one stream to
//! an [`Observer`]: each action as it starts, every event the backend recorded while applying
//! it, numbered over the run, and its result. The invariant checker, the trace, the
//! expectations and progress reporting are observers of that stream; `hypdbg run` and
//! `hypdbg check` both play through here.
//!
//! - [`backend`]: the [`Backend`] trait;
//! - [`sim`]: the simulator as a backend;
//! - [`tap`]: a backend vcpu as the host crate's debugger sees it, exits counted;
//! - [`actions`]: what each family of actions does;
//! - [`outcome`]: what an action did, or why it failed.

pub mod actions;
pub mod backend;
pub mod outcome;
pub mod sim;
pub mod tap;

use std::collections::BTreeMap;
use std::time::Instant;

use hypdbg_host::{DebugSnapshot, Debugger, RawSession};
use hypdbg_hyp::events::{Event, GuestEvent};

pub use backend::{Backend, BackendVcpu, VmShape};
pub use outcome::{ActionError, ExitCounts, ExitInfo, Outcome, SetupError};

use crate::scenario::Op;
use crate::scenario::resolve::Resolver;

/// An action's result.
pub type ActionResult = Result<Outcome, ActionError>;

/// The action being applied.
#[derive(Clone, Copy, Debug)]
pub struct ActionInfo<'a> {
    /// Its number: 1-based, counting every iteration of a `repeat`.
    pub number: u64,
    /// Where it is in the scenario: its index in `ops`, then in each nested `repeat`'s `ops`.
    pub path: &'a [usize],
    /// The action.
    pub op: &'a Op,
}

/// What an observer may read from the VM between actions (expectations do).
pub trait Probe {
    /// Labels and symbols.
    fn resolver(&self) -> &Resolver;
    /// KVM_GET_ONE_REG of vcpu `v`.
    fn get_one_reg(&mut self, v: usize, id: u64) -> Result<u64, ActionError>;
    /// KVM_GET_ONE_REG of several registers of vcpu `v` (one request on a real kernel).
    fn get_one_regs(&mut self, v: usize, ids: &[u64]) -> Result<Vec<u64>, ActionError>;
    /// Read guest memory.
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ActionError>;
    /// Every exception vcpu `v`'s guest took since the start.
    fn exceptions(&mut self, v: usize) -> Result<Vec<GuestEvent>, ActionError>;
    /// How many exceptions vcpu `v`'s guest took since the start.
    fn exception_count(&mut self, v: usize) -> Result<usize, ActionError>;
    /// The broken invariants the backend saw itself since the last call.
    fn findings(&mut self) -> Vec<crate::checker::Finding>;
}

/// Receives the driver's stream. For each action, in this order: [`Observer::action`]; the
/// action is applied, and every event its KVM_RUNs record reaches [`Observer::event`] as it
/// happens; [`Observer::outcome`] (the VM as the action left it, readable through the probe);
/// [`Observer::event`] for the events recorded outside a run (ioctls, and the outcome's own
/// reads); then [`Observer::done`]. Events are numbered from 0 over the whole run, in the
/// order they were recorded.
pub trait Observer {
    /// An action is about to be applied.
    fn action(&mut self, _a: &ActionInfo<'_>, _probe: &mut dyn Probe) {}
    /// The action's result, with the VM as it left it.
    fn outcome(&mut self, _a: &ActionInfo<'_>, _r: &ActionResult, _probe: &mut dyn Probe) {}
    /// One event, numbered from 0 over the whole run.
    fn event(&mut self, _seq: u64, _e: &Event, _a: &ActionInfo<'_>) {}
    /// The action is over.
    fn done(&mut self, _a: &ActionInfo<'_>, _r: &ActionResult) {}
}

/// Two observers as one: each hook goes to the first, then the second.
pub struct Tee<'a>(pub &'a mut dyn Observer, pub &'a mut dyn Observer);

impl Observer for Tee<'_> {
    fn action(&mut self, a: &ActionInfo<'_>, probe: &mut dyn Probe) {
        self.0.action(a, probe);
        self.1.action(a, probe);
    }
    fn outcome(&mut self, a: &ActionInfo<'_>, r: &ActionResult, probe: &mut dyn Probe) {
        self.0.outcome(a, r, probe);
        self.1.outcome(a, r, probe);
    }
    fn event(&mut self, seq: u64, e: &Event, a: &ActionInfo<'_>) {
        self.0.event(seq, e, a);
        self.1.event(seq, e, a);
    }
    fn done(&mut self, a: &ActionInfo<'_>, r: &ActionResult) {
        self.0.done(a, r);
        self.1.done(a, r);
    }
}

/// An observer that does nothing.
pub struct Nobody;
impl Observer for Nobody {}

/// The number of event `e`: the next one, except for an instruction of the guest's trace
/// (recorded only with `--trace`), which carries the number of the event before it, so that
/// a run numbers its events the same with and without a trace.
fn number(next: &mut u64, e: &Event) -> u64 {
    if matches!(
        e,
        Event::Guest {
            what: GuestEvent::Executed { .. },
            ..
        }
    ) {
        return next.saturating_sub(1);
    }
    *next += 1;
    *next - 1
}

/// The run stopped at an action that failed without expecting to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Halted {
    /// The action's number.
    pub action: u64,
}

/// Userspace's state for one vcpu.
#[derive(Default)]
struct Userspace {
    /// What the raw `set_guest_debug` actions last told KVM.
    raw: RawSession,
    /// The debugger, once a debugger action needs one.
    debugger: Option<Debugger>,
    /// The debugger's single-step mode (`single_step`).
    stepping: bool,
    /// The guest ran off its code (a `program_end` exit): nothing is left to run.
    ran_off: bool,
}

/// A backend and the userspace around it, applying actions.
pub struct Engine<B: Backend> {
    backend: B,
    resolver: Resolver,
    users: Vec<Userspace>,
    snapshots: BTreeMap<String, DebugSnapshot>,
    exits: ExitCounts,
    actions: u64,
    events: u64,
    deadline: Option<Instant>,
}

impl<B: Backend> Engine<B> {
    /// The backend (mutable: what a caller does after the scenario, e.g. a final check).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Drive `backend`, naming addresses with `resolver`.
    pub fn new(backend: B, resolver: Resolver) -> Self {
        let n = backend.nr_vcpus();
        Engine {
            backend,
            resolver,
            users: (0..n).map(|_| Userspace::default()).collect(),
            snapshots: BTreeMap::new(),
            exits: ExitCounts::default(),
            actions: 0,
            events: 0,
            deadline: None,
        }
    }

    /// Stop with [`ActionError::Deadline`] once `deadline` has passed: checked before every
    /// action and every KVM_RUN of a long action.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// [`ActionError::Deadline`] if the deadline has passed.
    pub(crate) fn check_deadline(&self) -> Result<(), ActionError> {
        match self.deadline {
            Some(d) if Instant::now() > d => Err(ActionError::Deadline),
            _ => Ok(()),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// KVM_RUN returns so far.
    pub fn exits(&self) -> ExitCounts {
        self.exits
    }

    /// Actions applied so far.
    pub fn actions(&self) -> u64 {
        self.actions
    }

    /// Events reported so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Apply `ops` in order, a `repeat` expanded in place, reporting to `obs`. Stops at the
    /// first action that fails without `expect.error`.
    pub fn play(&mut self, ops: &[Op], obs: &mut dyn Observer) -> Result<(), Halted> {
        self.play_at(ops, &mut Vec::new(), obs)
    }

    fn play_at(
        &mut self,
        ops: &[Op],
        path: &mut Vec<usize>,
        obs: &mut dyn Observer,
    ) -> Result<(), Halted> {
        for (i, op) in ops.iter().enumerate() {
            path.push(i);
            let r = match op {
                Op::Repeat { times, ops } => {
                    (0..*times).try_for_each(|_| self.play_at(ops, path, obs))
                }
                other => self.step(other, path, obs),
            };
            path.pop();
            r?;
        }
        Ok(())
    }

    /// One action, through every observer hook.
    fn step(&mut self, op: &Op, path: &[usize], obs: &mut dyn Observer) -> Result<(), Halted> {
        self.actions += 1;
        let info = ActionInfo {
            number: self.actions,
            path,
            op,
        };
        obs.action(&info, self);
        let mut seq = self.events;
        let r = self.check_deadline().and_then(|()| {
            self.apply(op, info.number, &mut |e| {
                obs.event(number(&mut seq, e), e, &info);
            })
        });
        obs.outcome(&info, &r, self);
        self.backend.drain_events(&mut |e| {
            obs.event(number(&mut seq, e), e, &info);
        });
        self.events = seq;
        obs.done(&info, &r);
        let expects_error = op.expect().is_some_and(|e| e.error.is_some());
        match r {
            Err(_) if !expects_error => Err(Halted {
                action: info.number,
            }),
            _ => Ok(()),
        }
    }
}

impl<B: Backend> Probe for Engine<B> {
    fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    fn get_one_reg(&mut self, v: usize, id: u64) -> Result<u64, ActionError> {
        use hypdbg_host::DebugVcpu;
        Ok(self.backend.vcpu(v)?.get_one_reg(id)?)
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ActionError> {
        self.backend.read_memory(addr, buf)
    }

    fn get_one_regs(&mut self, v: usize, ids: &[u64]) -> Result<Vec<u64>, ActionError> {
        self.backend.get_one_regs(v, ids)
    }

    fn exceptions(&mut self, v: usize) -> Result<Vec<GuestEvent>, ActionError> {
        self.backend.exceptions(v)
    }

    fn exception_count(&mut self, v: usize) -> Result<usize, ActionError> {
        self.backend.exception_count(v)
    }

    fn findings(&mut self) -> Vec<crate::checker::Finding> {
        self.backend.take_findings()
    }
}
