//! What each action does, one method per family: running the guest (`run_action`), the
//! debugger's breakpoints, watchpoints and modes (`debugger_action`), registers, memory and
//! snapshots (`state_action`), and where vcpus run (`placement_action`).

use hypdbg_host::{DebugSnapshot, DebugStop, DebugVcpu, Debugger, RunExit, Stop, WatchRequest};
use hypdbg_hyp::events::Event;
use hypdbg_hyp::vm::{MpState, RunOptions, SmcccAction, VcpuExit};
use hypdbg_model::guest_abi::Doorbell;
use hypdbg_model::uapi::{KvmGuestDebug, KvmGuestDebugArch};

use super::outcome::{MAX_BUDGETS, MAX_RUN_ITERATIONS, MAX_RUNS};
use super::tap::Tap;
use super::{ActionError, ActionResult, Backend, Engine, ExitInfo, Outcome, SetupError};
use crate::scenario::Op;
use crate::scenario::ops::{ExitKind, FilterAction, MpStateName, Value};
use crate::scenario::resolve::RegName;

/// How one KVM_RUN (or debugger stop) of a `run` ended, for its loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunEnd {
    /// The guest's `stop #n`.
    Stop(u16),
    /// KVM_EXIT_INTR: the instruction budget ran out.
    Intr,
    /// A debug stop.
    Debug,
    /// Anything else.
    Other,
}

impl RunEnd {
    fn of_exit(e: &VcpuExit) -> Self {
        match e {
            VcpuExit::Intr => RunEnd::Intr,
            VcpuExit::Debug { .. } => RunEnd::Debug,
            e => match e.doorbell() {
                Some(Doorbell::Stop(n)) => RunEnd::Stop(n),
                _ => RunEnd::Other,
            },
        }
    }

    fn of_stop(stop: &Stop, raw: Option<&VcpuExit>) -> Self {
        match stop {
            Stop::Exit(RunExit::Stop { n }) => RunEnd::Stop(*n),
            Stop::Exit(_) if matches!(raw, Some(VcpuExit::Intr)) => RunEnd::Intr,
            Stop::Exit(_) => RunEnd::Other,
            Stop::Debug(_) => RunEnd::Debug,
        }
    }
}

/// What a validator run waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// `stop #n`.
    Stop(u16),
    /// The first exit of this kind.
    Kind(ExitKind),
}

impl Target {
    fn is_met(&self, x: &ExitInfo) -> bool {
        match *self {
            Target::Stop(n) => x.stop_n == Some(n),
            Target::Kind(k) => k.accepts(x.kind),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stop(n) => write!(f, "stop #{n}"),
            Target::Kind(k) => write!(f, "a {k} exit"),
        }
    }
}

impl<B: Backend> Engine<B> {
    /// Apply one action (`number`: its number, for errors); `repeat` is [`Engine::play`]'s.
    pub(super) fn apply(
        &mut self,
        op: &Op,
        number: u64,
        sink: &mut dyn FnMut(&Event),
    ) -> ActionResult {
        match op {
            Op::RunUntilStop { .. }
            | Op::RunUntilExit { .. }
            | Op::Run { .. }
            | Op::KvmRun { .. }
            | Op::Step { .. }
            | Op::RunConcurrently { .. } => self.run_action(op, sink),
            Op::Break { .. }
            | Op::DeleteBreak { .. }
            | Op::Watch { .. }
            | Op::DeleteWatch { .. }
            | Op::SwBreak { .. }
            | Op::DeleteSwBreak { .. }
            | Op::SingleStep { .. }
            | Op::Detach { .. } => self.debugger_action(op, number, sink),
            Op::SetGuestDebug { .. }
            | Op::SetOneReg { .. }
            | Op::GetOneReg { .. }
            | Op::Snapshot { .. }
            | Op::Restore { .. }
            | Op::WriteMemory { .. } => self.state_action(op, number, sink),
            Op::Migrate { .. }
            | Op::Irq { .. }
            | Op::Preempt { .. }
            | Op::MigrateVm { .. }
            | Op::SmcccFilter { .. }
            | Op::SetMpState { .. } => self.placement_action(op, number),
            Op::Check { .. } => Ok(Outcome::text("check".into())),
            Op::Repeat { ops, times } => Ok(Outcome::text(format!(
                "repeat of {} action(s) {times} times (played by the engine)",
                ops.len()
            ))),
        }
    }

    fn vcpu_ok(&self, v: usize) -> Result<usize, ActionError> {
        if v < self.users.len() {
            Ok(v)
        } else {
            Err(ActionError::NoVcpu(v))
        }
    }

    /// A value a scenario names (a number, label or symbol).
    fn value(&self, v: &Value) -> Result<u64, ActionError> {
        self.resolver
            .resolve(v)
            .ok_or_else(|| ActionError::Register(format!("unknown label or symbol '{v}'")))
    }

    /// An address a scenario names.
    fn addr(&self, v: &Value, number: u64) -> Result<u64, ActionError> {
        self.resolver.resolve(v).ok_or_else(|| {
            SetupError::Label {
                op: number as usize,
                label: v.to_string(),
            }
            .into()
        })
    }

    /// `0x10040 <hw_bp1>`.
    fn describe(&self, a: u64) -> String {
        self.resolver.describe(a)
    }

    fn exit_words(&self, e: &VcpuExit) -> String {
        match e {
            VcpuExit::ProgramEnd { pc } => format!("program end at {}", self.describe(*pc)),
            other => other.to_string(),
        }
    }

    // ---- running ---------------------------------------------------------------------

    /// `run_until_stop`, `run`, `kvm_run`, `step`, `run_concurrently`.
    /// A running action, refused once its vcpu's guest ran off its code: past the
    /// `program_end` stop there is only memory the program never wrote, and what a guest
    /// executes there depends on the backend (an instruction budget on the simulator, a
    /// timeout on a real kernel), so it is no behaviour to compare or judge.
    fn run_action(&mut self, op: &Op, sink: &mut dyn FnMut(&Event)) -> ActionResult {
        let single = !matches!(op, Op::RunConcurrently { .. });
        let v = op.vcpu();
        if single && self.users.get(v).is_some_and(|u| u.ran_off) {
            return Err(ActionError::RanOffCode { vcpu: v });
        }
        let ends = self.exits.program_end;
        let r = self.run_action_on(op, sink);
        if single
            && self.exits.program_end > ends
            && let Some(u) = self.users.get_mut(v)
        {
            u.ran_off = true;
        }
        r
    }

    fn run_action_on(&mut self, op: &Op, sink: &mut dyn FnMut(&Event)) -> ActionResult {
        match op {
            Op::RunUntilStop { vcpu, stop, .. } => {
                self.run_until(self.vcpu_ok(*vcpu)?, Target::Stop(*stop), sink)
            }
            Op::RunUntilExit { vcpu, exit, .. } => {
                self.run_until(self.vcpu_ok(*vcpu)?, Target::Kind(*exit), sink)
            }
            Op::Run {
                vcpu,
                until_stop,
                count,
                ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                let count = count.unwrap_or(1);
                if self.users[v].debugger.is_some() {
                    self.run_debugger(v, *until_stop, count, sink)
                } else {
                    self.run_raw(v, *until_stop, count, sink)
                }
            }
            Op::KvmRun {
                vcpu,
                immediate_exit,
                mmio_data,
                ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                let mut opts = RunOptions {
                    immediate_exit: *immediate_exit,
                    ..RunOptions::default()
                };
                if let Some(d) = mmio_data {
                    opts.mmio_data = self.value(d)?.to_le_bytes();
                }
                let e =
                    Tap::new(self.backend.vcpu(v)?, &mut self.exits, sink).run_exit_with(&opts)?;
                Ok(Outcome {
                    text: format!("KVM_RUN: {}", self.exit_words(&e)),
                    exit: Some(ExitInfo::of_exit(&e)),
                    ..Outcome::default()
                })
            }
            Op::Step { vcpu, count, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.ensure_debugger(v, sink)?;
                let mut last = None;
                for _ in 0..count.unwrap_or(1) {
                    self.check_deadline()?;
                    last = Some(self.with_debugger(v, sink, |d, t| d.step(t))?);
                }
                let (stop, raw) = last.ok_or(ActionError::ZeroCount("step"))?;
                Ok(self.stop_outcome("stepi", &stop, raw.as_ref(), 0))
            }
            Op::RunConcurrently { vcpus, .. } => {
                let exits = self.backend.run_concurrently(vcpus, sink)?;
                for e in &exits {
                    self.exits.record(e);
                }
                let words: Vec<String> = exits.iter().map(|e| e.to_string()).collect();
                Ok(Outcome::text(format!(
                    "concurrent KVM_RUN: {}",
                    words.join("; ")
                )))
            }
            other => Err(ActionError::Misrouted(other.name())),
        }
    }

    /// One raw KVM_RUN, counted.
    fn kvm_run(&mut self, v: usize, sink: &mut dyn FnMut(&Event)) -> Result<VcpuExit, ActionError> {
        Tap::new(self.backend.vcpu(v)?, &mut self.exits, sink).run_exit()
    }

    /// The validator's loop: KVM_RUN until `target`, debug exits handled by the vcpu's
    /// [`hypdbg_host::RawSession`] as a gdb stub would; other stops and forwarded hypercalls
    /// on the way are passed (the VMM resumes the vcpu).
    fn run_until(
        &mut self,
        v: usize,
        target: Target,
        sink: &mut dyn FnMut(&Event),
    ) -> ActionResult {
        let Engine {
            backend,
            users,
            exits,
            deadline,
            ..
        } = self;
        let deadline = *deadline;
        let raw = &mut users[v].raw;
        let mut tap = Tap::new(backend.vcpu(v)?, exits, sink);
        let mut debug_exits = 0u32;
        for _ in 0..MAX_RUNS {
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                return Err(ActionError::Deadline);
            }
            let e = tap.run_exit()?;
            let info = ExitInfo::of_exit(&e);
            if target.is_met(&info) {
                return Ok(Outcome {
                    text: format!("ran to {info} ({debug_exits} debug exits)"),
                    exit: Some(info),
                    stops: u64::from(debug_exits),
                    value: None,
                });
            }
            match (e, info.kind) {
                (VcpuExit::Debug { arch, flags }, _) => {
                    debug_exits += 1;
                    raw.handle_debug_exit(&mut tap, &arch, flags)?;
                }
                (_, ExitKind::Stop | ExitKind::Hypercall) => {}
                (other, _) => {
                    return Err(ActionError::UnexpectedExit {
                        target: target.to_string(),
                        exit: other.to_string(),
                    });
                }
            }
        }
        Err(ActionError::NoProgress {
            target: target.to_string(),
            count: MAX_RUNS,
            what: "KVM_RUNs",
        })
    }

    /// `count` times: one exit (`until` is `None`), or every exit up to `stop #until` (other
    /// stops passed, interrupts passed within [`MAX_BUDGETS`], debug stops counted). Returns
    /// the last iteration's value and the stops passed.
    fn run_loop<T>(
        &mut self,
        until: Option<u16>,
        count: u32,
        noun: &'static str,
        mut once: impl FnMut(&mut Self) -> Result<(T, RunEnd), ActionError>,
    ) -> Result<(T, u64), ActionError> {
        let (mut stops, mut budgets, mut last) = (0u64, 0u32, None);
        for _ in 0..count {
            let mut finished = false;
            for _ in 0..MAX_RUN_ITERATIONS {
                self.check_deadline()?;
                let (x, end) = once(self)?;
                last = Some(x);
                finished = match (end, until) {
                    (_, None) => true,
                    (RunEnd::Stop(got), Some(n)) => got == n,
                    (RunEnd::Intr, Some(n)) => {
                        budgets += 1;
                        if budgets >= MAX_BUDGETS {
                            return Err(ActionError::OutOfBudget {
                                target: Target::Stop(n).to_string(),
                            });
                        }
                        false
                    }
                    (RunEnd::Debug, Some(_)) => {
                        stops += 1;
                        false
                    }
                    (RunEnd::Other, Some(_)) => true,
                };
                if finished {
                    break;
                }
            }
            if !finished {
                return Err(ActionError::NoProgress {
                    target: Target::Stop(until.unwrap_or(0)).to_string(),
                    count: MAX_RUN_ITERATIONS,
                    what: noun,
                });
            }
        }
        let last = last.ok_or(ActionError::ZeroCount("run"))?;
        Ok((last, stops))
    }

    /// `run` without a debugger: raw KVM_RUNs.
    fn run_raw(
        &mut self,
        v: usize,
        until: Option<u16>,
        count: u32,
        sink: &mut dyn FnMut(&Event),
    ) -> ActionResult {
        let (e, stops) = self.run_loop(until, count, "KVM_RUNs", |s| {
            let e = s.kvm_run(v, sink)?;
            Ok((e, RunEnd::of_exit(&e)))
        })?;
        let passed = if stops > 0 {
            format!(" ({stops} debug exit(s) passed)")
        } else {
            String::new()
        };
        Ok(Outcome {
            text: format!("KVM_RUN: {}{passed}", self.exit_words(&e)),
            exit: Some(ExitInfo::of_exit(&e)),
            stops,
            value: None,
        })
    }

    /// `run` through the debugger: its `continue`, or `stepi` in single-step mode.
    fn run_debugger(
        &mut self,
        v: usize,
        until: Option<u16>,
        count: u32,
        sink: &mut dyn FnMut(&Event),
    ) -> ActionResult {
        let stepping = self.users[v].stepping;
        let what = if stepping { "stepi" } else { "continue" };
        let ((stop, raw), stops) = self.run_loop(until, count, "stops", |s| {
            let (stop, raw) =
                s.with_debugger(v, sink, |d, t| if stepping { d.step(t) } else { d.cont(t) })?;
            let end = RunEnd::of_stop(&stop, raw.as_ref());
            Ok(((stop, raw), end))
        })?;
        Ok(self.stop_outcome(what, &stop, raw.as_ref(), stops))
    }

    fn stop_words(&self, stop: &Stop, raw: Option<&VcpuExit>) -> String {
        match stop {
            Stop::Debug(DebugStop::Step { pc }) => format!("step to {}", self.describe(*pc)),
            Stop::Debug(DebugStop::SwBreakpoint { pc }) => {
                format!("software breakpoint at {}", self.describe(*pc))
            }
            Stop::Debug(DebugStop::HwBreakpoint { pc, slot }) => {
                format!("hardware breakpoint {slot} at {}", self.describe(*pc))
            }
            Stop::Debug(DebugStop::Watchpoint {
                pc,
                far,
                request,
                slot,
                is_write,
                ..
            }) => format!(
                "watchpoint {slot} ({request}) hit by a {} to {far:#x} at {}",
                if *is_write { "store" } else { "load" },
                self.describe(*pc)
            ),
            Stop::Debug(other) => format!("{other:?}"),
            Stop::Exit(_) => raw.map_or_else(|| "exit".into(), |e| self.exit_words(e)),
        }
    }

    fn stop_outcome(&self, what: &str, stop: &Stop, raw: Option<&VcpuExit>, stops: u64) -> Outcome {
        let passed = if stops > 0 {
            format!(" ({stops} stop(s) passed)")
        } else {
            String::new()
        };
        Outcome {
            text: format!("{what}: {}{passed}", self.stop_words(stop, raw)),
            exit: Some(ExitInfo::of_stop(stop, raw)),
            stops,
            value: None,
        }
    }

    // ---- the debugger ------------------------------------------------------------------

    fn ensure_debugger(
        &mut self,
        v: usize,
        sink: &mut dyn FnMut(&Event),
    ) -> Result<&mut Debugger, ActionError> {
        if self.users[v].debugger.is_none() {
            let tap = Tap::new(self.backend.vcpu(v)?, &mut self.exits, sink);
            self.users[v].debugger = Some(Debugger::new(&tap)?);
        }
        self.users[v]
            .debugger
            .as_mut()
            .ok_or(ActionError::NoDebugger(v))
    }

    /// Call the vcpu's debugger with the vcpu; returns the result and the last raw exit.
    fn with_debugger<T, E: Into<ActionError>>(
        &mut self,
        v: usize,
        sink: &mut dyn FnMut(&Event),
        f: impl FnOnce(&mut Debugger, &mut dyn DebugVcpu) -> Result<T, E>,
    ) -> Result<(T, Option<VcpuExit>), ActionError> {
        let Engine {
            backend,
            users,
            exits,
            ..
        } = self;
        let d = users
            .get_mut(v)
            .and_then(|u| u.debugger.as_mut())
            .ok_or(ActionError::NoDebugger(v))?;
        let mut tap = Tap::new(backend.vcpu(v)?, exits, sink);
        let r = f(d, &mut tap).map_err(Into::into)?;
        Ok((r, tap.last))
    }

    /// `break`, `delete_break`, `watch`, `delete_watch`, `sw_break`, `delete_sw_break`,
    /// `single_step`, `detach`.
    fn debugger_action(
        &mut self,
        op: &Op,
        number: u64,
        sink: &mut dyn FnMut(&Event),
    ) -> ActionResult {
        let v = self.vcpu_ok(op.vcpu())?;
        if let Op::Detach { .. } = op {
            if self.users[v].debugger.is_some() {
                self.with_debugger(v, sink, |d, t| d.detach(t))?;
            }
            self.users[v].debugger = None;
            self.users[v].stepping = false;
            return Ok(Outcome::text("debugger detached".into()));
        }
        self.ensure_debugger(v, sink)?;
        match op {
            Op::SingleStep { on, .. } => {
                self.users[v].stepping = *on;
                Ok(Outcome::text(format!(
                    "single-step {}",
                    if *on { "on" } else { "off" }
                )))
            }
            Op::Break { addr, .. } | Op::DeleteBreak { addr, .. } => {
                let a = self.addr(addr, number)?;
                let insert = matches!(op, Op::Break { .. });
                let d = self.ensure_debugger(v, sink)?;
                let text = if insert {
                    let slot = d.hw_mut().insert_breakpoint(a)?;
                    format!("hardware breakpoint at {} in slot {slot}", self.describe(a))
                } else {
                    let slot = d.hw_mut().remove_breakpoint(a)?;
                    format!(
                        "removed the hardware breakpoint at {} (slot {slot})",
                        self.describe(a)
                    )
                };
                Ok(Outcome::text(text))
            }
            Op::Watch {
                addr, len, access, ..
            }
            | Op::DeleteWatch {
                addr, len, access, ..
            } => {
                let a = self.addr(addr, number)?;
                let req = WatchRequest::new(a, *len, *access);
                self.watch(v, req, matches!(op, Op::Watch { .. }), sink)
            }
            Op::SwBreak { addr, .. } | Op::DeleteSwBreak { addr, .. } => {
                let a = self.addr(addr, number)?;
                let what = if matches!(op, Op::SwBreak { .. }) {
                    self.with_debugger(v, sink, |d, t| d.insert_sw_breakpoint(t, a))?;
                    "software breakpoint (BRK #0) at"
                } else {
                    self.with_debugger(v, sink, |d, t| d.remove_sw_breakpoint(t, a))?;
                    "removed the software breakpoint at"
                };
                Ok(Outcome::text(format!("{what} {}", self.describe(a))))
            }
            other => Err(ActionError::Misrouted(other.name())),
        }
    }

    /// Insert (or remove) a watch request through the debugger's pool.
    fn watch(
        &mut self,
        v: usize,
        req: WatchRequest,
        insert: bool,
        sink: &mut dyn FnMut(&Event),
    ) -> ActionResult {
        let where_ = self.describe(req.addr);
        let (access, len) = (req.access, req.len);
        let d = self.ensure_debugger(v, sink)?;
        if !insert {
            let slots = d.hw_mut().remove_watchpoint(req)?;
            return Ok(Outcome::text(format!(
                "removed the {access} watch of {len} byte(s) at {where_} (slots {slots:?})"
            )));
        }
        let slots = d.hw_mut().insert_watchpoint(req)?;
        let arch = d.hw().arch();
        let enc: Vec<String> = slots
            .iter()
            .map(|&n| {
                format!(
                    "slot {n}: DBGWCR={:#x} DBGWVR={:#x}",
                    arch.dbg_wcr[n], arch.dbg_wvr[n]
                )
            })
            .collect();
        Ok(Outcome::text(format!(
            "watch {access} of {len} byte(s) at {where_}: {}",
            enc.join(", ")
        )))
    }

    // ---- registers, memory, snapshots --------------------------------------------------

    /// `set_guest_debug`, `set_one_reg`, `get_one_reg`, `snapshot`, `restore`,
    /// `write_memory`.
    fn state_action(&mut self, op: &Op, number: u64, sink: &mut dyn FnMut(&Event)) -> ActionResult {
        match op {
            Op::SetGuestDebug {
                vcpu,
                control,
                bcr,
                bvr,
                wcr,
                wvr,
                ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                let mut arch = KvmGuestDebugArch::default();
                for (list, bank) in [
                    (bcr, &mut arch.dbg_bcr),
                    (bvr, &mut arch.dbg_bvr),
                    (wcr, &mut arch.dbg_wcr),
                    (wvr, &mut arch.dbg_wvr),
                ] {
                    for (n, val) in list {
                        let slot = bank.get_mut(*n).ok_or(ActionError::BankIndex(*n))?;
                        *slot = self.addr(val, number)?;
                    }
                }
                let dbg = KvmGuestDebug {
                    control: *control,
                    pad: 0,
                    arch,
                };
                let mut vcpu = self.backend.vcpu(v)?;
                self.users[v].raw.set_guest_debug(&mut vcpu, &dbg)?;
                Ok(Outcome::text(format!(
                    "KVM_SET_GUEST_DEBUG control={control:#x}"
                )))
            }
            Op::SetOneReg {
                vcpu, reg, value, ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                let r = RegName::parse(reg).map_err(ActionError::Register)?;
                let val = self.addr(value, number)?;
                self.backend.vcpu(v)?.set_one_reg(r.id(), val)?;
                Ok(Outcome::text(format!("KVM_SET_ONE_REG {r} = {val:#x}")))
            }
            Op::GetOneReg { vcpu, reg, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let r = RegName::parse(reg).map_err(ActionError::Register)?;
                let val = self.backend.vcpu(v)?.get_one_reg(r.id())?;
                Ok(Outcome {
                    text: format!("KVM_GET_ONE_REG {r} -> {val:#x}"),
                    value: Some(val),
                    ..Outcome::default()
                })
            }
            Op::Snapshot { vcpu, name, .. } => self.snapshot(self.vcpu_ok(*vcpu)?, name, sink),
            Op::Restore { vcpu, name, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let s = self
                    .snapshots
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ActionError::NoSnapshot(name.clone()))?;
                let mut tap = Tap::new(self.backend.vcpu(v)?, &mut self.exits, sink);
                s.restore(&mut tap)?;
                Ok(Outcome::text(format!(
                    "restored snapshot '{name}' into vcpu {v}"
                )))
            }
            Op::WriteMemory { addr, bytes, .. } => {
                let a = self.addr(addr, number)?;
                self.backend.write_memory(a, bytes)?;
                Ok(Outcome::text(format!(
                    "wrote {} byte(s) at {}",
                    bytes.len(),
                    self.describe(a)
                )))
            }
            other => Err(ActionError::Misrouted(other.name())),
        }
    }

    fn snapshot(&mut self, v: usize, name: &str, sink: &mut dyn FnMut(&Event)) -> ActionResult {
        let mut tap = Tap::new(self.backend.vcpu(v)?, &mut self.exits, sink);
        let s = DebugSnapshot::save(&mut tap)?;
        let text = format!(
            "snapshot '{name}' of vcpu {v}: {} breakpoint and {} watchpoint register pairs, MDSCR_EL1={:#x}, MDCCINT_EL1={:#x}, OSLSR_EL1={:#x}",
            s.bcr.len(),
            s.wcr.len(),
            s.mdscr_el1,
            s.mdccint_el1,
            s.oslsr_el1
        );
        self.snapshots.insert(name.to_string(), s);
        Ok(Outcome::text(text))
    }

    // ---- where vcpus run ---------------------------------------------------------------

    /// `migrate`, `irq`, `preempt`, `migrate_vm`, `smccc_filter`, `set_mp_state`.
    fn placement_action(&mut self, op: &Op, number: u64) -> ActionResult {
        let text = match op {
            Op::Migrate { vcpu, cpu, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.backend.migrate(v, *cpu)?;
                format!("vcpu {v} -> physical CPU {cpu}")
            }
            Op::Irq { vcpu, every, .. } => {
                self.backend.set_irq(self.vcpu_ok(*vcpu)?, *every)?;
                format!("host interrupt every {every:?} instructions")
            }
            Op::Preempt {
                vcpu, after, cpu, ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.backend.preempt(v, *after, *cpu)?;
                format!(
                    "vcpu {v} will be preempted after {after} in-kernel exits and move to physical CPU {cpu}"
                )
            }
            Op::MigrateVm { cpus, .. } => {
                let n = self.backend.migrate_vm(cpus.as_deref())?;
                format!(
                    "migrated the VM: {n} registers per vcpu through KVM_GET/SET_ONE_REG, guest memory copied, onto {} physical CPU(s)",
                    self.backend.nr_pcpus()
                )
            }
            Op::SmcccFilter {
                base, nr, action, ..
            } => {
                let b = self.addr(base, number)?;
                let base32 = u32::try_from(b).map_err(|_| {
                    ActionError::Register(format!(
                        "smccc_filter base {b:#x}: an SMCCC function id is 32 bits"
                    ))
                })?;
                let a = match action {
                    FilterAction::Handle => SmcccAction::Handle,
                    FilterAction::Deny => SmcccAction::Deny,
                    FilterAction::Forward => SmcccAction::ForwardToUser,
                };
                self.backend.set_smccc_filter(base32, *nr, a)?;
                format!("SMCCC filter: {nr} function id(s) from {b:#x} -> {a:?}")
            }
            Op::SetMpState { vcpu, state, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let s = match state {
                    MpStateName::Runnable => MpState::Runnable,
                    MpStateName::Stopped => MpState::Stopped,
                };
                self.backend.set_mp_state(v, s)?;
                format!("KVM_SET_MP_STATE vcpu {v}: {s:?}")
            }
            other => {
                return Err(ActionError::Misrouted(other.name()));
            }
        };
        Ok(Outcome::text(text))
    }
}
