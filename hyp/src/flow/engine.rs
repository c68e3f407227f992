//! How the simulator drives a flow: [`EraEngine`] maps the run loop's hook points onto each
//! era's kernel functions; [`DynFlow`] puts any engine behind a `dyn` (one generic
//! instantiation per register-access implementation, chosen once per switch).

use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::{KvmDebugExitArch, KvmGuestDebug};
use hypdbg_model::{DebugFeatures, SysReg};

use super::Era;
use super::common::{Common, SysRegParams, TrapOutcome};
use super::era1::Era1;
use super::era2::Era2;
use super::era3::Era3;
use crate::access::{CheckingAccess, PlainAccess, RegAccess, Scope};
use crate::context::{DebugOwner, KvmHostData, KvmVcpu};
use crate::fault::{HypFault, KvmError};

/// The run loop's hook points, per era. Default methods are shared by all eras and call the
/// flow's [`Common`] functions.
pub trait EraEngine: Send + Sync + 'static {
    /// The kernel functions.
    type Flow: Common;
    /// The flow.
    fn flow(&self) -> &Self::Flow;
    /// Which era.
    fn era(&self) -> Era;
    /// pKVM: the hyp runs a copy of the vcpu.
    fn protected_mode(&self) -> bool {
        false
    }
    /// Per-CPU init (`kvm_init_host_debug_data`, era 3).
    fn init_host_data(&self, _host: &mut KvmHostData, _id_aa64dfr0: u64) {}
    /// KVM_SET_GUEST_DEBUG.
    fn set_guest_debug(&self, vcpu: &mut KvmVcpu, dbg: &KvmGuestDebug) -> Result<(), KvmError>;
    /// `kvm_arch_vcpu_load` (debug part).
    fn vcpu_load(&self, _vcpu: &mut KvmVcpu, _host_mdcr_el2: u64) {}
    /// `kvm_arch_vcpu_put` (debug part).
    fn vcpu_put(&self, _vcpu: &mut KvmVcpu) {}
    /// `kvm_arm_setup_debug`, before every entry (eras 1 and 2).
    fn setup_debug(&self, _vcpu: &mut KvmVcpu, _host_mdcr_el2: u64) {}
    /// `kvm_arm_clear_debug`, after every exit (eras 1 and 2).
    fn clear_debug(&self, _vcpu: &mut KvmVcpu) {}
    /// The end of `kvm_arch_vcpu_ioctl_run`, after the `__kvm_adjust_pc` that commits a
    /// pending PC adjustment before returning to userspace (`adjusted`: it completed an
    /// emulated instruction, e.g. an MMIO access with `immediate_exit`).
    fn ioctl_run_out(&self, _vcpu: &mut KvmVcpu, _adjusted: bool) {}
    /// The hyp's debug switch on entry.
    fn switch_to_guest<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault>;
    /// The hyp's debug switch on exit.
    fn switch_to_host<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault>;
    /// Where the host's MDCR_EL2 is kept during a run.
    fn host_mdcr_slot<'a>(&self, vcpu: &'a mut KvmVcpu, host: &'a mut KvmHostData) -> &'a mut u64 {
        let _ = host;
        &mut vcpu.arch.mdcr_el2_host
    }
    /// `ctxt_mdscr_el1(guest ctxt)`: where the guest's live MDSCR_EL1 is loaded from and
    /// saved to.
    fn guest_mdscr<'a>(&self, vcpu: &'a mut KvmVcpu) -> &'a mut u64 {
        &mut vcpu.arch.ctxt.sys_regs.mdscr_el1
    }
    /// What a trapped debug-register access does to the flow's state (DIRTY or ownership).
    fn after_debug_trap(&self, vcpu: &mut KvmVcpu, is_write: bool, host_mdcr_el2: u64);
    /// Whether an OSLAR_EL1 write reloads the vcpu (era 3 `kvm_debug_handle_oslar`).
    fn oslar_reloads(&self) -> bool {
        false
    }
    /// `kvm_handle_guest_debug`.
    fn handle_guest_debug(&self, vcpu: &mut KvmVcpu, esr: Esr, far: u64)
    -> (KvmDebugExitArch, u32);
    /// pKVM `flush_debug_state`.
    fn flush_debug_state(&self, _hyp: &mut KvmVcpu, _host: &KvmVcpu) {}
    /// pKVM `sync_debug_state`.
    fn sync_debug_state(&self, _host: &mut KvmVcpu, _hyp: &KvmVcpu) {}

    /// `__activate_traps_common`.
    fn activate_traps<A: RegAccess>(&self, a: &mut A, vcpu: &mut KvmVcpu, host: &mut KvmHostData) {
        a.scope(Scope::Traps);
        let vcpu_mdcr = vcpu.arch.mdcr_el2;
        let slot = self.host_mdcr_slot(vcpu, host);
        self.flow().__activate_traps_common(a, slot, vcpu_mdcr);
    }
    /// `__deactivate_traps_common`.
    fn deactivate_traps<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) {
        a.scope(Scope::Traps);
        let saved = *self.host_mdcr_slot(vcpu, host);
        self.flow().__deactivate_traps_common(a, saved);
    }

    /// `emulate_sys_reg` and the debug handlers of sys_regs.c: emulate a trapped MSR/MRS
    /// against the vcpu's state. `trap_dbg_wb_reg` has no count check: an index the hardware
    /// does not implement UNDEFs at EL1 before it could trap, so slot n is all it sees.
    fn emulate_sys_reg(
        &self,
        vcpu: &mut KvmVcpu,
        _guest: &DebugFeatures,
        host_mdcr_el2: u64,
        p: &mut SysRegParams,
    ) -> TrapOutcome {
        let flow = self.flow();
        let outcome = match p.reg {
            SysReg::Dbg(..) => {
                let Some(slot) = flow.demux_wb_reg(&mut vcpu.arch.vcpu_debug_state, p.reg) else {
                    return TrapOutcome::Undef;
                };
                if p.is_write {
                    *slot = p.regval;
                } else {
                    p.regval = *slot;
                }
                TrapOutcome::Handled
            }
            SysReg::MdscrEl1 | SysReg::MdccintEl1 => {
                let sys = &mut vcpu.arch.ctxt.sys_regs;
                if p.is_write {
                    sys.set(p.reg, p.regval);
                } else {
                    p.regval = sys.get(p.reg).unwrap_or(0);
                }
                TrapOutcome::Handled
            }
            SysReg::OslarEl1 => {
                let o = flow.trap_oslar_el1(vcpu, p);
                if o == TrapOutcome::Handled && self.oslar_reloads() {
                    self.vcpu_put(vcpu);
                    self.vcpu_load(vcpu, host_mdcr_el2);
                }
                return o;
            }
            SysReg::OslsrEl1 => return flow.trap_oslsr_el1(vcpu, p),
            SysReg::DbgauthstatusEl1 => {
                // trap_dbgauthstatus_el1: the host's value; a write is ignored.
                if !p.is_write {
                    p.regval = hypdbg_model::ctrl::DBGAUTHSTATUS_EL1_HW;
                }
                return TrapOutcome::Handled;
            }
            r if r.is_raz_wi() => {
                // trap_raz_wi
                if !p.is_write {
                    p.regval = 0;
                }
                return TrapOutcome::Handled;
            }
            _ => return TrapOutcome::Undef,
        };
        self.after_debug_trap(vcpu, p.is_write, host_mdcr_el2);
        outcome
    }

    /// `kvm_skip_instr`.
    fn skip_instr(&self, vcpu: &mut KvmVcpu) {
        self.flow().kvm_skip_instr(vcpu);
    }

    /// KVM_GET_ONE_REG of a breakpoint/watchpoint register (`get_dbg_wb_reg`).
    fn get_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg) -> Option<u64> {
        self.flow()
            .demux_wb_reg(&mut vcpu.arch.vcpu_debug_state, reg)
            .map(|v| *v)
    }
    /// KVM_SET_ONE_REG of a breakpoint/watchpoint register (`set_dbg_wb_reg`).
    fn set_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg, value: u64) -> bool {
        match self
            .flow()
            .demux_wb_reg(&mut vcpu.arch.vcpu_debug_state, reg)
        {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }
}

/// Era 1 driven by the simulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Era1Engine<T>(pub T);
/// Era 2 driven by the simulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Era2Engine<T>(pub T);
/// Era 3 driven by the simulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Era3Engine<T>(pub T);

/// The hooks eras 1 and 2 share through [`DebugDirty`](super::era1::DebugDirty):
/// KVM_SET_GUEST_DEBUG, `kvm_arm_setup_debug` (each era's own), `kvm_arm_clear_debug`, and a
/// trapped write marking DEBUG_DIRTY.
macro_rules! debug_dirty_hooks {
    () => {
        fn set_guest_debug(&self, vcpu: &mut KvmVcpu, dbg: &KvmGuestDebug) -> Result<(), KvmError> {
            self.0.kvm_arch_vcpu_ioctl_set_guest_debug(vcpu, dbg)
        }
        fn setup_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
            self.0.kvm_arm_setup_debug(vcpu, host_mdcr_el2);
        }
        fn clear_debug(&self, vcpu: &mut KvmVcpu) {
            self.0.kvm_arm_clear_debug(vcpu);
        }
        fn ioctl_run_out(&self, vcpu: &mut KvmVcpu, adjusted: bool) {
            self.0.kvm_arch_vcpu_ioctl_run_out(vcpu, adjusted);
        }
        fn after_debug_trap(&self, vcpu: &mut KvmVcpu, is_write: bool, _host_mdcr_el2: u64) {
            self.0.trap_debug_access(vcpu, is_write);
        }
    };
}

impl<T: Era1> EraEngine for Era1Engine<T> {
    type Flow = T;
    fn flow(&self) -> &T {
        &self.0
    }
    fn era(&self) -> Era {
        Era::One
    }
    debug_dirty_hooks!();
    fn switch_to_guest<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        self.0
            .__debug_cond_save_host_state(a, vcpu, &mut host.host_ctxt)?;
        a.scope(Scope::RestoreGuest);
        self.0.__debug_restore_state_if_dirty(a, vcpu, None)
    }
    fn switch_to_host<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        a.scope(Scope::SaveGuest);
        self.0.__debug_save_state_if_dirty(a, vcpu, None)?;
        self.0
            .__debug_cond_restore_host_state(a, vcpu, &host.host_ctxt)
    }
    fn handle_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        esr: Esr,
        far: u64,
    ) -> (KvmDebugExitArch, u32) {
        // v4.x reported hsr only: no hsr_high (v5.19), no KVM_DEBUG_ARCH_HSR_HIGH_VALID.
        let (mut exit, _) = self.0.kvm_handle_guest_debug(vcpu, esr, far);
        exit.hsr_high = 0;
        vcpu.run_debug_arch.hsr_high = 0;
        (exit, 0)
    }
}

impl<T: Era2> EraEngine for Era2Engine<T> {
    type Flow = T;
    fn flow(&self) -> &T {
        &self.0
    }
    fn era(&self) -> Era {
        Era::Two
    }
    debug_dirty_hooks!();
    fn switch_to_guest<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        self.0
            .__debug_switch_to_guest_common(a, vcpu, &mut host.host_ctxt)
    }
    fn switch_to_host<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        self.0
            .__debug_switch_to_host_common(a, vcpu, &host.host_ctxt)
    }
    fn handle_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        esr: Esr,
        far: u64,
    ) -> (KvmDebugExitArch, u32) {
        self.0.kvm_handle_guest_debug(vcpu, esr, far)
    }
}

/// Era 2 as v6.10..v6.13 lay it out: `__debug_switch_to_{guest,host}_common` save the host's
/// registers in `host_data_ptr(host_debug_state.regs)` and `__activate_traps_common` its
/// MDCR_EL2 in `host_data_ptr(host_debug_state.mdcr_el2)`, per CPU, not in the vcpu. The
/// era-2 functions name the vcpu's slot; this engine hands them the CPU's for the call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Era2PercpuEngine<T>(pub T);

impl<T: Era2> EraEngine for Era2PercpuEngine<T> {
    type Flow = T;
    fn flow(&self) -> &T {
        &self.0
    }
    fn era(&self) -> Era {
        Era::Two
    }
    debug_dirty_hooks!();
    fn switch_to_guest<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        // host_dbg = host_data_ptr(host_debug_state.regs)
        std::mem::swap(
            &mut vcpu.arch.host_debug_state,
            &mut host.host_debug_state.regs,
        );
        let r = self
            .0
            .__debug_switch_to_guest_common(a, vcpu, &mut host.host_ctxt);
        std::mem::swap(
            &mut vcpu.arch.host_debug_state,
            &mut host.host_debug_state.regs,
        );
        r
    }
    fn switch_to_host<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        std::mem::swap(
            &mut vcpu.arch.host_debug_state,
            &mut host.host_debug_state.regs,
        );
        let r = self
            .0
            .__debug_switch_to_host_common(a, vcpu, &host.host_ctxt);
        std::mem::swap(
            &mut vcpu.arch.host_debug_state,
            &mut host.host_debug_state.regs,
        );
        r
    }
    fn host_mdcr_slot<'a>(&self, _vcpu: &'a mut KvmVcpu, host: &'a mut KvmHostData) -> &'a mut u64 {
        &mut host.host_debug_state.mdcr_el2
    }
    fn handle_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        esr: Esr,
        far: u64,
    ) -> (KvmDebugExitArch, u32) {
        self.0.kvm_handle_guest_debug(vcpu, esr, far)
    }
}

impl<T: Era3> EraEngine for Era3Engine<T> {
    type Flow = T;
    fn flow(&self) -> &T {
        &self.0
    }
    fn era(&self) -> Era {
        Era::Three
    }
    fn protected_mode(&self) -> bool {
        self.0.protected_mode()
    }
    fn init_host_data(&self, host: &mut KvmHostData, id_aa64dfr0: u64) {
        self.0.kvm_init_host_debug_data(host, id_aa64dfr0);
    }
    fn set_guest_debug(&self, vcpu: &mut KvmVcpu, dbg: &KvmGuestDebug) -> Result<(), KvmError> {
        self.0.kvm_arch_vcpu_ioctl_set_guest_debug(vcpu, dbg)
    }
    fn vcpu_load(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        self.0.kvm_vcpu_load_debug(vcpu, host_mdcr_el2);
    }
    fn vcpu_put(&self, vcpu: &mut KvmVcpu) {
        self.0.kvm_vcpu_put_debug(vcpu);
    }
    fn switch_to_guest<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        self.0.__debug_switch_to_guest_common(a, vcpu, host)
    }
    fn switch_to_host<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        self.0.__debug_switch_to_host_common(a, vcpu, host)
    }
    fn host_mdcr_slot<'a>(&self, _vcpu: &'a mut KvmVcpu, host: &'a mut KvmHostData) -> &'a mut u64 {
        &mut host.host_debug_state.mdcr_el2
    }
    fn guest_mdscr<'a>(&self, vcpu: &'a mut KvmVcpu) -> &'a mut u64 {
        // ctxt_mdscr_el1(): the external MDSCR while the host owns debug.
        if vcpu.arch.debug_owner == DebugOwner::VcpuDebugHostOwned {
            &mut vcpu.arch.external_mdscr_el1
        } else {
            &mut vcpu.arch.ctxt.sys_regs.mdscr_el1
        }
    }
    fn after_debug_trap(&self, vcpu: &mut KvmVcpu, is_write: bool, host_mdcr_el2: u64) {
        self.0.trap_debug_access(vcpu, is_write, host_mdcr_el2);
    }
    fn oslar_reloads(&self) -> bool {
        true
    }
    fn handle_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        esr: Esr,
        far: u64,
    ) -> (KvmDebugExitArch, u32) {
        self.0.kvm_handle_guest_debug(vcpu, esr, far)
    }
    fn flush_debug_state(&self, hyp: &mut KvmVcpu, host: &KvmVcpu) {
        self.0.flush_debug_state(hyp, host);
    }
    fn sync_debug_state(&self, host: &mut KvmVcpu, hyp: &KvmVcpu) {
        self.0.sync_debug_state(host, hyp);
    }
}

/// The register-access implementation chosen for one switch.
pub enum AnyAccess<'a> {
    /// Direct moves.
    Plain(PlainAccess<'a>),
    /// Recorded moves.
    Checking(CheckingAccess<'a>),
}

macro_rules! with_access {
    ($a:expr, |$x:ident| $body:expr) => {
        match $a {
            AnyAccess::Plain($x) => $body,
            AnyAccess::Checking($x) => $body,
        }
    };
}

/// Any engine behind a `dyn` (what a VM holds).
pub trait DynFlow: Send + Sync {
    /// Which era.
    fn era(&self) -> Era;
    /// pKVM protected mode.
    fn protected_mode(&self) -> bool;
    /// Per-CPU init.
    fn init_host_data(&self, host: &mut KvmHostData, id_aa64dfr0: u64);
    /// KVM_SET_GUEST_DEBUG.
    fn set_guest_debug(&self, vcpu: &mut KvmVcpu, dbg: &KvmGuestDebug) -> Result<(), KvmError>;
    /// vcpu_load.
    fn vcpu_load(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64);
    /// vcpu_put.
    fn vcpu_put(&self, vcpu: &mut KvmVcpu);
    /// kvm_arm_setup_debug.
    fn setup_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64);
    /// kvm_arm_clear_debug.
    fn clear_debug(&self, vcpu: &mut KvmVcpu);
    /// The end of kvm_arch_vcpu_ioctl_run.
    fn ioctl_run_out(&self, vcpu: &mut KvmVcpu, adjusted: bool);
    /// Debug switch on entry.
    fn switch_to_guest(
        &self,
        a: &mut AnyAccess<'_>,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault>;
    /// Debug switch on exit.
    fn switch_to_host(
        &self,
        a: &mut AnyAccess<'_>,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault>;
    /// `__activate_traps_common`.
    fn activate_traps(&self, a: &mut AnyAccess<'_>, vcpu: &mut KvmVcpu, host: &mut KvmHostData);
    /// `__deactivate_traps_common`.
    fn deactivate_traps(&self, a: &mut AnyAccess<'_>, vcpu: &mut KvmVcpu, host: &mut KvmHostData);
    /// `ctxt_mdscr_el1`.
    fn guest_mdscr<'a>(&self, vcpu: &'a mut KvmVcpu) -> &'a mut u64;
    /// Emulate a trapped access.
    fn emulate_sys_reg(
        &self,
        vcpu: &mut KvmVcpu,
        guest: &DebugFeatures,
        host_mdcr_el2: u64,
        p: &mut SysRegParams,
    ) -> TrapOutcome;
    /// `kvm_skip_instr`.
    fn skip_instr(&self, vcpu: &mut KvmVcpu);
    /// `kvm_handle_guest_debug`.
    fn handle_guest_debug(&self, vcpu: &mut KvmVcpu, esr: Esr, far: u64)
    -> (KvmDebugExitArch, u32);
    /// pKVM flush.
    fn flush_debug_state(&self, hyp: &mut KvmVcpu, host: &KvmVcpu);
    /// pKVM sync.
    fn sync_debug_state(&self, host: &mut KvmVcpu, hyp: &KvmVcpu);
    /// ONE_REG get of a DBG register.
    fn get_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg) -> Option<u64>;
    /// ONE_REG set of a DBG register.
    fn set_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg, value: u64) -> bool;
}

impl<E: EraEngine> DynFlow for E {
    fn era(&self) -> Era {
        EraEngine::era(self)
    }
    fn protected_mode(&self) -> bool {
        EraEngine::protected_mode(self)
    }
    fn init_host_data(&self, host: &mut KvmHostData, id_aa64dfr0: u64) {
        EraEngine::init_host_data(self, host, id_aa64dfr0);
    }
    fn set_guest_debug(&self, vcpu: &mut KvmVcpu, dbg: &KvmGuestDebug) -> Result<(), KvmError> {
        EraEngine::set_guest_debug(self, vcpu, dbg)
    }
    fn vcpu_load(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        EraEngine::vcpu_load(self, vcpu, host_mdcr_el2);
    }
    fn vcpu_put(&self, vcpu: &mut KvmVcpu) {
        EraEngine::vcpu_put(self, vcpu);
    }
    fn setup_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        EraEngine::setup_debug(self, vcpu, host_mdcr_el2);
    }
    fn clear_debug(&self, vcpu: &mut KvmVcpu) {
        EraEngine::clear_debug(self, vcpu);
    }
    fn ioctl_run_out(&self, vcpu: &mut KvmVcpu, adjusted: bool) {
        EraEngine::ioctl_run_out(self, vcpu, adjusted);
    }
    fn switch_to_guest(
        &self,
        a: &mut AnyAccess<'_>,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        with_access!(a, |x| EraEngine::switch_to_guest(self, x, vcpu, host))
    }
    fn switch_to_host(
        &self,
        a: &mut AnyAccess<'_>,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        with_access!(a, |x| EraEngine::switch_to_host(self, x, vcpu, host))
    }
    fn activate_traps(&self, a: &mut AnyAccess<'_>, vcpu: &mut KvmVcpu, host: &mut KvmHostData) {
        with_access!(a, |x| EraEngine::activate_traps(self, x, vcpu, host));
    }
    fn deactivate_traps(&self, a: &mut AnyAccess<'_>, vcpu: &mut KvmVcpu, host: &mut KvmHostData) {
        with_access!(a, |x| EraEngine::deactivate_traps(self, x, vcpu, host));
    }
    fn guest_mdscr<'a>(&self, vcpu: &'a mut KvmVcpu) -> &'a mut u64 {
        EraEngine::guest_mdscr(self, vcpu)
    }
    fn emulate_sys_reg(
        &self,
        vcpu: &mut KvmVcpu,
        guest: &DebugFeatures,
        host_mdcr_el2: u64,
        p: &mut SysRegParams,
    ) -> TrapOutcome {
        EraEngine::emulate_sys_reg(self, vcpu, guest, host_mdcr_el2, p)
    }
    fn skip_instr(&self, vcpu: &mut KvmVcpu) {
        EraEngine::skip_instr(self, vcpu);
    }
    fn handle_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        esr: Esr,
        far: u64,
    ) -> (KvmDebugExitArch, u32) {
        EraEngine::handle_guest_debug(self, vcpu, esr, far)
    }
    fn flush_debug_state(&self, hyp: &mut KvmVcpu, host: &KvmVcpu) {
        EraEngine::flush_debug_state(self, hyp, host);
    }
    fn sync_debug_state(&self, host: &mut KvmVcpu, hyp: &KvmVcpu) {
        EraEngine::sync_debug_state(self, host, hyp);
    }
    fn get_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg) -> Option<u64> {
        EraEngine::get_dbg_reg(self, vcpu, reg)
    }
    fn set_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg, value: u64) -> bool {
        EraEngine::set_dbg_reg(self, vcpu, reg, value)
    }
}
