//! The variant: an era's reference engine with its hyp debug switch replaced by the loaded C.
//! Everything else (debug.c's decisions, traps, KVM_SET_GUEST_DEBUG, vcpu load/put, the
//! guest) is the reference's, delegated hook by hook.

use std::sync::Arc;

use hypdbg_hyp::access::RegAccess;
use hypdbg_hyp::context::{DebugFlags, DebugOwner, DebugPtr, KvmHostData, KvmVcpu};
use hypdbg_hyp::fault::{HypFault, KvmError};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::flow::{EraEngine, SysRegParams, TrapOutcome};
use hypdbg_model::DebugFeatures;
use hypdbg_model::SysReg;
use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::{KvmDebugExitArch, KvmGuestDebug};

use crate::ffi::{Blocks, CLib, Exchange};
use crate::route::Direction;

/// `HYPDBG_VF_DEBUG_DIRTY` in shim.h.
const VF_DEBUG_DIRTY: u64 = 1;

/// The simulator's scalar state as the C sees it (`hypdbg_load` fills the kernel structs from
/// it and from the register blocks).
fn exchange_in(vcpu: &KvmVcpu, host: &KvmHostData) -> Exchange {
    let arch = &vcpu.arch;
    let mut x = Exchange::default();
    x.guest_mdscr_el1 = arch.ctxt.sys_regs.mdscr_el1;
    x.guest_mdccint_el1 = arch.ctxt.sys_regs.mdccint_el1;
    x.host_mdscr_el1 = host.host_ctxt.sys_regs.mdscr_el1;
    x.host_mdccint_el1 = host.host_ctxt.sys_regs.mdccint_el1;
    x.external_mdscr_el1 = arch.external_mdscr_el1;
    x.vcpu_flags = if vcpu.flag(DebugFlags::DEBUG_DIRTY) {
        VF_DEBUG_DIRTY
    } else {
        0
    };
    x.debug_ptr = match arch.debug_ptr {
        DebugPtr::VcpuDebugState => 0,
        DebugPtr::ExternalDebugState => 1,
    };
    x.debug_owner = match arch.debug_owner {
        DebugOwner::VcpuDebugFree => 0,
        DebugOwner::VcpuDebugGuestOwned => 1,
        DebugOwner::VcpuDebugHostOwned => 2,
    };
    x.debug_brps = u32::from(host.debug_brps);
    x.debug_wrps = u32::from(host.debug_wrps);
    x
}

/// Everything else the C may have changed, back into the simulator's state (the register
/// blocks were written in place).
fn exchange_out(x: &Exchange, vcpu: &mut KvmVcpu, host: &mut KvmHostData) -> Result<(), HypFault> {
    let arch = &mut vcpu.arch;
    arch.ctxt.sys_regs.mdscr_el1 = x.guest_mdscr_el1;
    arch.ctxt.sys_regs.mdccint_el1 = x.guest_mdccint_el1;
    host.host_ctxt.sys_regs.mdscr_el1 = x.host_mdscr_el1;
    host.host_ctxt.sys_regs.mdccint_el1 = x.host_mdccint_el1;
    arch.external_mdscr_el1 = x.external_mdscr_el1;
    arch.debug_ptr = match x.debug_ptr {
        0 => DebugPtr::VcpuDebugState,
        1 => DebugPtr::ExternalDebugState,
        _ => {
            return Err(HypFault::Bug(
                "debug_ptr left pointing outside the vcpu's two debug blocks",
            ));
        }
    };
    arch.debug_owner = match x.debug_owner {
        0 => DebugOwner::VcpuDebugFree,
        1 => DebugOwner::VcpuDebugGuestOwned,
        2 => DebugOwner::VcpuDebugHostOwned,
        _ => {
            return Err(HypFault::Bug(
                "debug_owner left holding no enum debug_owner value",
            ));
        }
    };
    host.debug_brps =
        u8::try_from(x.debug_brps).map_err(|_| HypFault::Bug("debug_brps above 255"))?;
    host.debug_wrps =
        u8::try_from(x.debug_wrps).map_err(|_| HypFault::Bug("debug_wrps above 255"))?;
    vcpu.set_flag(DebugFlags::DEBUG_DIRTY, x.vcpu_flags & VF_DEBUG_DIRTY != 0);
    Ok(())
}

/// An era's reference engine `E` whose hyp debug switch is the loaded C.
#[derive(Debug)]
pub struct KernelEngine<E> {
    inner: E,
    lib: Arc<CLib>,
}

impl<E> KernelEngine<E> {
    /// `inner` with its switch replaced by `lib`'s.
    pub fn new(inner: E, lib: Arc<CLib>) -> Self {
        KernelEngine { inner, lib }
    }

    /// One half of the switch: marshal in, run the C, marshal out.
    fn run<A: RegAccess>(
        &self,
        dir: Direction,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        let mut x = exchange_in(vcpu, host);
        let arch = &mut vcpu.arch;
        let blocks = Blocks {
            vcpu_debug_state: &mut arch.vcpu_debug_state,
            external_debug_state: &mut arch.external_debug_state,
            vcpu_host_regs: &mut arch.host_debug_state,
            cpu_host_regs: &mut host.host_debug_state.regs,
        };
        self.lib.call(dir, a, &mut x, blocks)?;
        exchange_out(&x, vcpu, host)
    }
}

impl<E: EraEngine> EraEngine for KernelEngine<E> {
    type Flow = E::Flow;
    fn flow(&self) -> &E::Flow {
        self.inner.flow()
    }
    fn era(&self) -> Era {
        self.inner.era()
    }
    fn protected_mode(&self) -> bool {
        self.inner.protected_mode()
    }
    fn init_host_data(&self, host: &mut KvmHostData, id_aa64dfr0: u64) {
        self.inner.init_host_data(host, id_aa64dfr0);
    }
    fn set_guest_debug(&self, vcpu: &mut KvmVcpu, dbg: &KvmGuestDebug) -> Result<(), KvmError> {
        self.inner.set_guest_debug(vcpu, dbg)
    }
    fn vcpu_load(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        self.inner.vcpu_load(vcpu, host_mdcr_el2);
    }
    fn vcpu_put(&self, vcpu: &mut KvmVcpu) {
        self.inner.vcpu_put(vcpu);
    }
    fn setup_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        self.inner.setup_debug(vcpu, host_mdcr_el2);
    }
    fn clear_debug(&self, vcpu: &mut KvmVcpu) {
        self.inner.clear_debug(vcpu);
    }
    fn ioctl_run_out(&self, vcpu: &mut KvmVcpu, adjusted: bool) {
        self.inner.ioctl_run_out(vcpu, adjusted);
    }
    /// The C `__debug_switch_to_guest` (era 1: `__debug_cond_save_host_state` and
    /// `__debug_restore_state`).
    fn switch_to_guest<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        self.run(Direction::ToGuest, a, vcpu, host)
    }
    /// The C `__debug_switch_to_host` (era 1: `__debug_save_state` and
    /// `__debug_cond_restore_host_state`).
    fn switch_to_host<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        self.run(Direction::ToHost, a, vcpu, host)
    }
    fn host_mdcr_slot<'a>(&self, vcpu: &'a mut KvmVcpu, host: &'a mut KvmHostData) -> &'a mut u64 {
        self.inner.host_mdcr_slot(vcpu, host)
    }
    fn guest_mdscr<'a>(&self, vcpu: &'a mut KvmVcpu) -> &'a mut u64 {
        self.inner.guest_mdscr(vcpu)
    }
    fn after_debug_trap(&self, vcpu: &mut KvmVcpu, is_write: bool, host_mdcr_el2: u64) {
        self.inner.after_debug_trap(vcpu, is_write, host_mdcr_el2);
    }
    fn oslar_reloads(&self) -> bool {
        self.inner.oslar_reloads()
    }
    fn handle_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        esr: Esr,
        far: u64,
    ) -> (KvmDebugExitArch, u32) {
        self.inner.handle_guest_debug(vcpu, esr, far)
    }
    fn flush_debug_state(&self, hyp: &mut KvmVcpu, host: &KvmVcpu) {
        self.inner.flush_debug_state(hyp, host);
    }
    fn sync_debug_state(&self, host: &mut KvmVcpu, hyp: &KvmVcpu) {
        self.inner.sync_debug_state(host, hyp);
    }
    fn activate_traps<A: RegAccess>(&self, a: &mut A, vcpu: &mut KvmVcpu, host: &mut KvmHostData) {
        self.inner.activate_traps(a, vcpu, host);
    }
    fn deactivate_traps<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) {
        self.inner.deactivate_traps(a, vcpu, host);
    }
    fn emulate_sys_reg(
        &self,
        vcpu: &mut KvmVcpu,
        guest: &DebugFeatures,
        host_mdcr_el2: u64,
        p: &mut SysRegParams,
    ) -> TrapOutcome {
        self.inner.emulate_sys_reg(vcpu, guest, host_mdcr_el2, p)
    }
    fn skip_instr(&self, vcpu: &mut KvmVcpu) {
        self.inner.skip_instr(vcpu);
    }
    fn get_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg) -> Option<u64> {
        self.inner.get_dbg_reg(vcpu, reg)
    }
    fn set_dbg_reg(&self, vcpu: &mut KvmVcpu, reg: SysReg, value: u64) -> bool {
        self.inner.set_dbg_reg(vcpu, reg, value)
    }
}
