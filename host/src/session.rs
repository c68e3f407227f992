//! [`Debugger`]: what a gdb stub does with one vcpu — the hardware pool, software
//! breakpoints, single-step, the KVM_SET_GUEST_DEBUG call before each run, the decision on
//! each debug exit ([`Debugger::handle_debug_exit`]), and gdb's resume rules (step over a
//! breakpoint or watchpoint at the PC before continuing).
//!
//! While userspace debugs, KVM loads userspace's block instead of the guest's own
//! breakpoints and watchpoints. So that a guest debugging itself keeps working, the debugger
//! reads the guest's enabled slots through ONE_REG before each run (when the guest's
//! MDSCR_EL1.MDE is set) and places them in hardware slots it does not use; their events come
//! back as debug exits that are not ours and are reinjected with the guest's view
//! ([`crate::exit`]). Limits: a guest slot that finds no free hardware slot is not mirrored
//! (counted in [`Mirrored::dropped`]); a guest slot programmed during a run takes effect at
//! the next exit; when one of ours and one of the guest's fire on the same instruction, the
//! stop is ours and the guest's event is lost (as on hardware that reports one watchpoint).

use hypdbg_model::ctrl::DBG_MDSCR_MDE;
use hypdbg_model::uapi::{
    KVM_CAP_SET_GUEST_DEBUG, KvmDebugExitArch, KvmGuestDebug, KvmGuestDebugArch, core_reg,
};
use hypdbg_model::va::compare_bits;
use hypdbg_model::wcr::Dbgwcr;
use hypdbg_model::{DbgBank, SysReg};
use serde::Serialize;

use crate::encode::{WpSlot, distance};
use crate::error::{DebugError, VcpuError};
use crate::exit::{DebugStop, GuestDebugEvent, GuestView, exit_syndrome};
use crate::hw::{HwDebug, guest_debug_for};
use crate::sw::SwBreakpoints;
use crate::vcpu::{DebugVcpu, RunExit};

/// One of the guest's own breakpoints or watchpoints, placed in a free hardware slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MirroredSlot {
    /// The hardware slot it occupies.
    pub hw_slot: usize,
    /// The guest's own index (`DBGBCR<n>` / `DBGWCR<n>`).
    pub guest_index: usize,
    /// DBGBCR / DBGWCR as the guest wrote it.
    #[serde(with = "crate::hex")]
    pub ctrl: u64,
    /// DBGBVR / DBGWVR as the guest wrote it.
    #[serde(with = "crate::hex")]
    pub value: u64,
}

/// The guest's own slots mirrored for the current run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Mirrored {
    /// Breakpoints.
    pub breakpoints: Vec<MirroredSlot>,
    /// Watchpoints.
    pub watchpoints: Vec<MirroredSlot>,
    /// Enabled guest slots that found no free hardware slot.
    pub dropped: usize,
}

/// Why the debugger returned control.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Stop {
    /// A debug stop for the debugger (or an unknown debug syndrome).
    Debug(DebugStop),
    /// The vcpu exited for something else (a hypercall, the end of the program, ...).
    Exit(RunExit),
}

/// Which hardware slots to leave out for one step over an event at the PC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Suspend {
    /// Breakpoints (ours, the guest's, a software one) at this PC.
    bps_at: Option<u64>,
    /// Every watchpoint.
    watchpoints: bool,
}

/// The result of one guarded single step.
enum StepResult {
    /// The step completed (or ended in one of our stops / a non-debug exit).
    Stopped(Stop),
    /// The stepped instruction raised one of the guest's own events, now injected.
    Reinjected,
}

/// A debugger attached to one vcpu.
#[derive(Clone, Debug)]
pub struct Debugger {
    hw: HwDebug,
    sw: SwBreakpoints,
    stepping: bool,
    mirror_guest: bool,
    mirrored: Mirrored,
    last_stop: Option<DebugStop>,
    max_exits: usize,
}

/// The hardware's view of "breakpoint value matches the PC": VA bits \[48:2\].
fn bvr_matches(bvr: u64, pc: u64) -> bool {
    compare_bits(bvr, 2) == compare_bits(pc, 2)
}

impl Debugger {
    /// Attach to a vcpu: the kernel must support KVM_SET_GUEST_DEBUG; the pool is sized by
    /// KVM_CAP_GUEST_DEBUG_HW_BPS / _WPS.
    pub fn new<V: DebugVcpu + ?Sized>(vcpu: &V) -> Result<Self, DebugError> {
        if vcpu.check_extension(KVM_CAP_SET_GUEST_DEBUG) <= 0 {
            return Err(DebugError::NoGuestDebug);
        }
        Ok(Debugger {
            hw: HwDebug::from_vcpu(vcpu)?,
            sw: SwBreakpoints::new(),
            stepping: false,
            mirror_guest: true,
            mirrored: Mirrored::default(),
            last_stop: None,
            max_exits: 10_000,
        })
    }

    /// The hardware pool.
    pub fn hw(&self) -> &HwDebug {
        &self.hw
    }

    /// The hardware pool, to insert and remove breakpoints and watchpoints (takes effect at
    /// the next [`Debugger::sync`], which `cont` and `step` do).
    pub fn hw_mut(&mut self) -> &mut HwDebug {
        &mut self.hw
    }

    /// The software breakpoints.
    pub fn sw(&self) -> &SwBreakpoints {
        &self.sw
    }

    /// Plant a software breakpoint.
    pub fn insert_sw_breakpoint<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        addr: u64,
    ) -> Result<(), DebugError> {
        Ok(self.sw.insert(vcpu, addr)?)
    }

    /// Remove a software breakpoint.
    pub fn remove_sw_breakpoint<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        addr: u64,
    ) -> Result<(), DebugError> {
        Ok(self.sw.remove(vcpu, addr)?)
    }

    /// Whether a 0x32 exit is ours (set by [`Debugger::step`]; for callers driving the run
    /// loop themselves).
    pub fn set_stepping(&mut self, on: bool) {
        self.stepping = on;
    }

    /// Whether single-step is on.
    pub const fn stepping(&self) -> bool {
        self.stepping
    }

    /// Mirror the guest's own breakpoints and watchpoints while debugging (on by default).
    pub fn set_mirror_guest(&mut self, on: bool) {
        self.mirror_guest = on;
        if !on {
            self.mirrored = Mirrored::default();
        }
    }

    /// The guest's slots mirrored at the last sync.
    pub fn mirrored(&self) -> &Mirrored {
        &self.mirrored
    }

    /// The last stop that was ours.
    pub const fn last_stop(&self) -> Option<DebugStop> {
        self.last_stop
    }

    /// Bound the number of debug exits one `cont`/`step` handles without a stop.
    pub fn set_max_exits(&mut self, n: usize) {
        self.max_exits = n.max(1);
    }

    fn active(&self) -> bool {
        self.hw.is_active() || !self.sw.is_empty() || self.stepping
    }

    /// Our block plus the mirrored guest slots.
    fn block(&self) -> KvmGuestDebugArch {
        let mut a = self.hw.arch();
        for m in &self.mirrored.breakpoints {
            a.dbg_bcr[m.hw_slot] = m.ctrl;
            a.dbg_bvr[m.hw_slot] = m.value;
        }
        for m in &self.mirrored.watchpoints {
            a.dbg_wcr[m.hw_slot] = m.ctrl;
            a.dbg_wvr[m.hw_slot] = m.value;
        }
        a
    }

    fn block_suspending(&self, s: Suspend) -> KvmGuestDebugArch {
        let mut a = self.block();
        if let Some(pc) = s.bps_at {
            for n in 0..a.dbg_bcr.len() {
                if a.dbg_bcr[n] & 1 != 0 && bvr_matches(a.dbg_bvr[n], pc) {
                    a.dbg_bcr[n] = 0;
                    a.dbg_bvr[n] = 0;
                }
            }
        }
        if s.watchpoints {
            a.dbg_wcr = [0; 16];
            a.dbg_wvr = [0; 16];
        }
        a
    }

    /// KVM_SET_GUEST_DEBUG's argument now: ENABLE when anything is on, USE_HW when a hardware
    /// slot (ours or a mirrored one of the guest's) is live, USE_SW_BP with software
    /// breakpoints, SINGLESTEP when stepping; control 0 when nothing is on.
    pub fn guest_debug(&self) -> KvmGuestDebug {
        if !self.active() {
            return KvmGuestDebug::default();
        }
        guest_debug_for(self.block(), !self.sw.is_empty(), self.stepping)
    }

    /// Read the guest's own enabled slots and place them in free hardware slots.
    fn refresh_mirror<V: DebugVcpu + ?Sized>(&mut self, vcpu: &mut V) -> Result<(), VcpuError> {
        self.mirrored = Mirrored::default();
        if !self.mirror_guest || !self.active() {
            return Ok(());
        }
        let mdscr = vcpu.get_one_reg(SysReg::MdscrEl1.one_reg_id())?;
        if mdscr & DBG_MDSCR_MDE == 0 {
            return Ok(());
        }
        let ours = self.hw.arch();
        let banks = [
            (
                DbgBank::Bcr,
                DbgBank::Bvr,
                self.hw.max_breakpoints(),
                ours.dbg_bcr,
            ),
            (
                DbgBank::Wcr,
                DbgBank::Wvr,
                self.hw.max_watchpoints(),
                ours.dbg_wcr,
            ),
        ];
        for (ctrl_bank, value_bank, count, used) in banks {
            let mut free = (0..count).filter(|&n| used[n] & 1 == 0);
            let mut out = Vec::new();
            for n in 0..count {
                let ctrl = vcpu.get_one_reg(SysReg::Dbg(ctrl_bank, n as u8).one_reg_id())?;
                if ctrl & 1 == 0 {
                    continue;
                }
                let value = vcpu.get_one_reg(SysReg::Dbg(value_bank, n as u8).one_reg_id())?;
                match free.next() {
                    Some(hw_slot) => out.push(MirroredSlot {
                        hw_slot,
                        guest_index: n,
                        ctrl,
                        value,
                    }),
                    None => self.mirrored.dropped += 1,
                }
            }
            if ctrl_bank == DbgBank::Bcr {
                self.mirrored.breakpoints = out;
            } else {
                self.mirrored.watchpoints = out;
            }
        }
        Ok(())
    }

    /// Before a run: refresh the mirrored guest slots and hand KVM the current set.
    pub fn sync<V: DebugVcpu + ?Sized>(&mut self, vcpu: &mut V) -> Result<(), DebugError> {
        self.refresh_mirror(vcpu)?;
        vcpu.set_guest_debug(&self.guest_debug())?;
        Ok(())
    }

    /// The nearest mirrored guest watchpoint watching this direction, by distance to `far`.
    fn nearest_guest_watch(&self, far: u64, is_write: bool) -> Option<u64> {
        self.mirrored
            .watchpoints
            .iter()
            .filter(|m| Dbgwcr::from_bits(m.ctrl).lsc().matches(is_write))
            .filter_map(|m| {
                WpSlot {
                    wcr: m.ctrl,
                    wvr: m.value,
                }
                .watched()
                .map(|(lo, hi)| distance(far, lo, hi))
            })
            .min()
    }

    /// Decide whose a debug exit is, without touching the vcpu: `Ok(stop)` for ours (or an
    /// unknown class), `Err(event)` for the guest's own.
    pub fn classify(
        &self,
        arch: &KvmDebugExitArch,
        flags: u32,
        pc: u64,
    ) -> Result<DebugStop, GuestDebugEvent> {
        let esr = exit_syndrome(arch, flags);
        let Some(event) = GuestDebugEvent::from_exit(esr, arch) else {
            return Ok(DebugStop::Unknown {
                pc,
                esr: esr.bits(),
            });
        };
        let ours = match event {
            GuestDebugEvent::Step { .. } => self.stepping.then_some(DebugStop::Step { pc }),
            GuestDebugEvent::Brk { .. } => self
                .sw
                .contains(pc)
                .then_some(DebugStop::SwBreakpoint { pc }),
            GuestDebugEvent::Breakpoint => self
                .hw
                .find_breakpoint(pc)
                .map(|slot| DebugStop::HwBreakpoint { pc, slot }),
            GuestDebugEvent::Watchpoint { far, wnr } => {
                let guest = self.nearest_guest_watch(far, wnr);
                self.hw
                    .find_watchpoint(far, wnr)
                    .filter(|h| guest.is_none_or(|g| h.request.distance(far) <= g))
                    .map(|h| DebugStop::Watchpoint {
                        pc,
                        far,
                        request: h.request,
                        slot: h.slot,
                        is_write: wnr,
                        exact: h.exact,
                    })
            }
        };
        ours.ok_or(event)
    }

    /// Handle KVM_EXIT_DEBUG: decode the syndrome (`hsr`, plus `hsr_high` when `flags` says
    /// it is valid) and decide. Ours: a step while stepping (0x32), a software breakpoint
    /// (0x3c at one of ours), a hardware breakpoint (0x30 at one of ours), a watchpoint
    /// (0x34, attributed by FAR). Not ours: injected into the guest with the syndrome its EL1
    /// would have seen, or [`DebugStop::Suppressed`] when the guest has masked it
    /// (see [`crate::exit`] for where this differs from QEMU).
    pub fn handle_debug_exit<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        arch: &KvmDebugExitArch,
        flags: u32,
        pc: u64,
    ) -> Result<DebugStop, DebugError> {
        let stop = match self.classify(arch, flags, pc) {
            Ok(stop) => stop,
            Err(event) => {
                let view = GuestView::read(vcpu)?;
                match view.deliver(event) {
                    Some((esr, far)) => {
                        vcpu.inject_debug_exception(esr, far)?;
                        DebugStop::Reinjected {
                            pc,
                            esr: esr.bits(),
                            far,
                        }
                    }
                    None => DebugStop::Suppressed { pc, event },
                }
            }
        };
        if stop.is_ours() {
            self.last_stop = Some(stop);
        }
        Ok(stop)
    }

    fn pc<V: DebugVcpu + ?Sized>(vcpu: &mut V) -> Result<u64, VcpuError> {
        vcpu.get_one_reg(core_reg::PC)
    }

    /// One single step with the breakpoints at the PC (and, if asked, every watchpoint)
    /// left out; a software breakpoint at the PC is lifted for the step.
    fn step_once<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        mut suspend: Suspend,
    ) -> Result<StepResult, DebugError> {
        let was_stepping = self.stepping;
        self.stepping = true;
        let r = self.step_once_inner(vcpu, &mut suspend);
        self.stepping = was_stepping;
        r
    }

    fn step_once_inner<V: DebugVcpu + ?Sized>(
        &mut self,
        vcpu: &mut V,
        suspend: &mut Suspend,
    ) -> Result<StepResult, DebugError> {
        loop {
            let pc = Self::pc(vcpu)?;
            self.refresh_mirror(vcpu)?;
            let lifted = match suspend.bps_at {
                Some(at) if at == pc => self.sw.lift(vcpu, pc)?,
                _ => false,
            };
            let dbg = guest_debug_for(self.block_suspending(*suspend), !self.sw.is_empty(), true);
            let ran = vcpu.set_guest_debug(&dbg).and_then(|()| vcpu.run());
            if lifted {
                self.sw.replant(vcpu, pc)?;
            }
            let exit = ran?;
            let RunExit::Debug { arch, flags } = exit else {
                return Ok(StepResult::Stopped(Stop::Exit(exit)));
            };
            let at = Self::pc(vcpu)?;
            match self.handle_debug_exit(vcpu, &arch, flags, at)? {
                DebugStop::Reinjected { .. } => return Ok(StepResult::Reinjected),
                DebugStop::Suppressed { event, .. } => {
                    let before = *suspend;
                    match event {
                        GuestDebugEvent::Watchpoint { .. } => suspend.watchpoints = true,
                        GuestDebugEvent::Breakpoint => suspend.bps_at = Some(at),
                        // A spurious step or a masked one: the step is done.
                        GuestDebugEvent::Step { .. } | GuestDebugEvent::Brk { .. } => {
                            return Ok(StepResult::Stopped(Stop::Debug(DebugStop::Step {
                                pc: at,
                            })));
                        }
                    }
                    if *suspend == before {
                        return Err(DebugError::StuckStepOver {
                            pc: at,
                            what: if event.is_watchpoint() {
                                "watchpoint"
                            } else {
                                "breakpoint"
                            },
                        });
                    }
                }
                stop => return Ok(StepResult::Stopped(Stop::Debug(stop))),
            }
        }
    }

    /// What to leave out when resuming at `pc`: our breakpoints there, and every watchpoint if
    /// we last stopped on a watchpoint at this instruction (it has not completed yet).
    fn resume_suspend(&self, pc: u64) -> Option<Suspend> {
        let bp_here = self.hw.find_breakpoint(pc).is_some() || self.sw.contains(pc);
        let wp_here =
            matches!(self.last_stop, Some(DebugStop::Watchpoint { pc: p, .. }) if p == pc);
        (bp_here || wp_here).then_some(Suspend {
            bps_at: Some(pc),
            watchpoints: wp_here,
        })
    }

    /// Continue until a stop for the debugger or another exit, handling the guest's own
    /// events on the way (gdb's `continue`). A breakpoint or watchpoint of ours at the PC is
    /// stepped over first.
    pub fn cont<V: DebugVcpu + ?Sized>(&mut self, vcpu: &mut V) -> Result<Stop, DebugError> {
        self.stepping = false;
        let pc = Self::pc(vcpu)?;
        if let Some(s) = self.resume_suspend(pc)
            && let StepResult::Stopped(stop) = self.step_once(vcpu, s)?
            && !matches!(stop, Stop::Debug(DebugStop::Step { .. }))
        {
            return Ok(stop);
        }
        for _ in 0..self.max_exits {
            self.sync(vcpu)?;
            let exit = vcpu.run()?;
            let RunExit::Debug { arch, flags } = exit else {
                return Ok(Stop::Exit(exit));
            };
            let pc = Self::pc(vcpu)?;
            match self.handle_debug_exit(vcpu, &arch, flags, pc)? {
                DebugStop::Reinjected { .. } => {}
                DebugStop::Suppressed { event, pc } => {
                    let s = match event {
                        GuestDebugEvent::Watchpoint { .. } => Suspend {
                            bps_at: None,
                            watchpoints: true,
                        },
                        GuestDebugEvent::Breakpoint => Suspend {
                            bps_at: Some(pc),
                            watchpoints: false,
                        },
                        GuestDebugEvent::Step { .. } | GuestDebugEvent::Brk { .. } => continue,
                    };
                    if let StepResult::Stopped(stop) = self.step_once(vcpu, s)?
                        && !matches!(stop, Stop::Debug(DebugStop::Step { .. }))
                    {
                        return Ok(stop);
                    }
                }
                stop => return Ok(Stop::Debug(stop)),
            }
        }
        Err(DebugError::TooManyExits {
            count: self.max_exits,
        })
    }

    /// Execute one guest instruction (gdb's `stepi`), stepping over a breakpoint of ours at
    /// the PC. If the instruction raises one of the guest's own events, the guest takes it
    /// and the step stops at its handler's first instruction.
    pub fn step<V: DebugVcpu + ?Sized>(&mut self, vcpu: &mut V) -> Result<Stop, DebugError> {
        for _ in 0..self.max_exits {
            let pc = Self::pc(vcpu)?;
            let wp_here =
                matches!(self.last_stop, Some(DebugStop::Watchpoint { pc: p, .. }) if p == pc);
            let s = Suspend {
                bps_at: Some(pc),
                watchpoints: wp_here,
            };
            match self.step_once(vcpu, s)? {
                StepResult::Stopped(stop) => {
                    if let Stop::Debug(d) = stop
                        && d.is_ours()
                    {
                        self.last_stop = Some(d);
                    }
                    return Ok(stop);
                }
                StepResult::Reinjected => {}
            }
        }
        Err(DebugError::TooManyExits {
            count: self.max_exits,
        })
    }

    /// Detach: remove every software and hardware breakpoint and watchpoint, stop stepping,
    /// and turn guest debugging off (control 0: the guest owns its debug registers again).
    pub fn detach<V: DebugVcpu + ?Sized>(&mut self, vcpu: &mut V) -> Result<(), DebugError> {
        let sw = self.sw.remove_all(vcpu);
        self.hw.remove_all();
        self.stepping = false;
        self.mirrored = Mirrored::default();
        self.last_stop = None;
        vcpu.set_guest_debug(&KvmGuestDebug::default())?;
        Ok(sw?)
    }
}
