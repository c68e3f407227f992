//! Eras 1 and 2 share arch/arm64/kvm/debug.c's DEBUG_DIRTY design ([`DebugDirty`]); era 1
//! (v4.5..v4.16, the seed patch "arm64: KVM: Implement debug save/restore") decides DIRTY in
//! the world switch itself ([`Era1`]).
//!
//! The era-1 reference is the v4.5 structure with the later fixes that do not depend on the
//! structure applied (64-bit MDCR_EL2 kept exactly, OS lock emulation, PSTATE.SS preserved,
//! active-pending step state, `kvm_skip_instr` advancing the step state machine, CRm
//! indexing), so that it is a clean reference and each historical defect is a mutant of it.

use hypdbg_model::ctrl::{
    DBG_MDSCR_MDE, DBG_MDSCR_SS, DBG_SPSR_SS, MDCR_EL2_HPMN_MASK, MDCR_EL2_TDA, MDCR_EL2_TDE,
    MDCR_EL2_TDOSA, MDCR_EL2_TDRA, MDCR_EL2_TPM, MDCR_EL2_TPMCR, mdscr_uses_debug,
};
use hypdbg_model::esr::{ESR_ELX_EC_SOFTSTP_LOW, ESR_ELX_EC_WATCHPT_LOW, Esr};
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_DEBUG_ARCH_HSR_HIGH_VALID, KvmDebugExitArch, KvmGuestDebug,
};

use super::common::{Common, DebugCounts, valid_control};
use crate::access::{RegAccess, Scope};
use crate::context::{DebugFlags, DebugPtr, KvmCpuContext, KvmVcpu};
use crate::fault::{HypFault, KvmError};

/// Split `vcpu->arch` into the block `debug_ptr` points at and the guest context.
pub fn debug_ptr_and_ctxt(
    vcpu: &mut KvmVcpu,
) -> (
    &mut hypdbg_model::uapi::KvmGuestDebugArch,
    &mut KvmCpuContext,
) {
    let arch = &mut vcpu.arch;
    let dbg = match arch.debug_ptr {
        DebugPtr::VcpuDebugState => &mut arch.vcpu_debug_state,
        DebugPtr::ExternalDebugState => &mut arch.external_debug_state,
    };
    (dbg, &mut arch.ctxt)
}

/// arch/arm64/kvm/debug.c and handle_exit.c as eras 1 and 2 have them.
pub trait DebugDirty: Common {
    /// `save_guest_debug_regs`: keep the guest's MDSCR_EL1 and PSTATE.SS (v6.1+).
    fn save_guest_debug_regs(&self, vcpu: &mut KvmVcpu) {
        vcpu.arch.guest_debug_preserved.mdscr_el1 = vcpu.mdscr_el1();
        vcpu.arch.guest_debug_preserved.pstate_ss = vcpu.pstate_ss();
    }

    /// `restore_guest_debug_regs`: give the guest its MDSCR_EL1 and PSTATE.SS back.
    fn restore_guest_debug_regs(&self, vcpu: &mut KvmVcpu) {
        vcpu.arch.ctxt.sys_regs.mdscr_el1 = vcpu.arch.guest_debug_preserved.mdscr_el1;
        let ss = vcpu.arch.guest_debug_preserved.pstate_ss;
        vcpu.set_pstate_ss(ss);
    }

    /// `kvm_arm_reset_debug_ptr`.
    fn kvm_arm_reset_debug_ptr(&self, vcpu: &mut KvmVcpu) {
        vcpu.arch.debug_ptr = DebugPtr::VcpuDebugState;
    }

    /// The single-step part of `kvm_arm_setup_debug`: SPSR.SS = 1 unless the step state was
    /// active-pending at the last exit (v6.1), and MDSCR.SS; without SINGLESTEP, MDSCR.SS off
    /// and the pending step forgotten.
    fn kvm_arm_setup_singlestep(&self, vcpu: &mut KvmVcpu) {
        if vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
            let pending = vcpu.flag(DebugFlags::DBG_SS_ACTIVE_PENDING);
            vcpu.set_pstate_ss(!pending);
            vcpu.arch.ctxt.sys_regs.mdscr_el1 |= DBG_MDSCR_SS;
        } else {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 &= !DBG_MDSCR_SS;
            // Not upstream: v6.1+ clears the flag only when ENABLE goes (in the ioctl), so a
            // run without SINGLESTEP keeps a stale pending step (`ss-pending-survives-era2`).
            vcpu.set_flag(DebugFlags::DBG_SS_ACTIVE_PENDING, false);
        }
    }

    /// The `guest_debug || OS lock` part of `kvm_arm_setup_debug`: preserve the guest's
    /// MDSCR, set up stepping, install userspace's registers with USE_HW, or emulate the OS
    /// lock by masking MDE.
    fn kvm_arm_setup_guest_debug(&self, vcpu: &mut KvmVcpu) {
        if vcpu.guest_debug.is_empty() && !vcpu.os_lock_enabled() {
            return;
        }
        self.save_guest_debug_regs(vcpu);
        self.kvm_arm_setup_singlestep(vcpu);
        if vcpu.guest_debug.contains(GuestDebugControl::USE_HW) {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 |= DBG_MDSCR_MDE;
            vcpu.arch.debug_ptr = DebugPtr::ExternalDebugState;
            vcpu.set_flag(DebugFlags::DEBUG_DIRTY, true);
        } else if vcpu.os_lock_enabled() {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 &= !DBG_MDSCR_MDE;
        }
    }

    /// `kvm_arm_clear_debug`: after the run, remember an active-pending step state, restore
    /// the guest's MDSCR_EL1 and PSTATE.SS, and point `debug_ptr` back at the guest's block.
    fn kvm_arm_clear_debug(&self, vcpu: &mut KvmVcpu) {
        if vcpu.guest_debug.is_empty() && !vcpu.os_lock_enabled() {
            return;
        }
        if vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP)
            && vcpu.cpsr() & DBG_SPSR_SS == 0
        {
            vcpu.set_flag(DebugFlags::DBG_SS_ACTIVE_PENDING, true);
        }
        self.restore_guest_debug_regs(vcpu);
        if vcpu.guest_debug.contains(GuestDebugControl::USE_HW) {
            self.kvm_arm_reset_debug_ptr(vcpu);
        }
    }

    /// Not upstream: the end of `kvm_arch_vcpu_ioctl_run` when `__kvm_adjust_pc` completed
    /// an emulated instruction on the way out (an MMIO access, with `immediate_exit`): under
    /// SINGLESTEP the step is now active-pending, as `kvm_arm_clear_debug` records after an
    /// exit. v6.1..v6.13 record nothing there (`immediate-exit-loses-step`): the next run
    /// arms a fresh step and executes one instruction before its step exit.
    fn kvm_arch_vcpu_ioctl_run_out(&self, vcpu: &mut KvmVcpu, adjusted: bool) {
        if adjusted && vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
            vcpu.set_flag(DebugFlags::DBG_SS_ACTIVE_PENDING, true);
        }
    }

    /// `trap_debug_regs` / `reg_to_dbg` epilogue: a guest *write* to a debug register marks
    /// the state dirty so the next entry loads it; reads do not.
    fn trap_debug_access(&self, vcpu: &mut KvmVcpu, is_write: bool) {
        if is_write {
            vcpu.set_flag(DebugFlags::DEBUG_DIRTY, true);
        }
    }

    /// `kvm_arch_vcpu_ioctl_set_guest_debug`: validate control, copy `dbg->arch` verbatim
    /// into `external_debug_state` with USE_HW.
    fn kvm_arch_vcpu_ioctl_set_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        dbg: &KvmGuestDebug,
    ) -> Result<(), KvmError> {
        let control = valid_control(dbg.control)?;
        if control.contains(GuestDebugControl::ENABLE) {
            vcpu.guest_debug = control;
            if control.contains(GuestDebugControl::USE_HW) {
                vcpu.arch.external_debug_state = dbg.arch;
            }
        } else {
            // If not enabled clear all flags (v6.1+).
            vcpu.guest_debug = GuestDebugControl::empty();
            vcpu.set_flag(DebugFlags::DBG_SS_ACTIVE_PENDING, false);
        }
        Ok(())
    }

    /// `kvm_handle_guest_debug`: fill `vcpu->run->debug.arch` (hsr, hsr_high, far for a watchpoint); a completed step clears the
    /// active-pending flag. Returns the exit and `run->flags`.
    fn kvm_handle_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        esr: Esr,
        far: u64,
    ) -> (KvmDebugExitArch, u32) {
        let exit = &mut vcpu.run_debug_arch;
        exit.hsr = esr.bits() as u32;
        exit.hsr_high = (esr.bits() >> 32) as u32;
        // run->debug.arch.far only for a watchpoint: other classes leave the union alone.
        if esr.ec() == ESR_ELX_EC_WATCHPT_LOW {
            exit.far = far;
        }
        let exit = *exit;
        if esr.ec() == ESR_ELX_EC_SOFTSTP_LOW {
            vcpu.set_flag(DebugFlags::DBG_SS_ACTIVE_PENDING, false)
        }
        (exit, KVM_DEBUG_ARCH_HSR_HIGH_VALID)
    }
}

/// Era 1: the seed patch's hyp code decides DEBUG_DIRTY on every entry.
pub trait Era1: DebugDirty {
    /// `kvm_arm_setup_debug` (v4.5 order): decide the traps from DIRTY *first* (the hyp sets
    /// DIRTY for KDE/MDE later, so such a run switches the registers and still traps), then
    /// set up guest debugging.
    fn kvm_arm_setup_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        let mut trap_debug = !vcpu.flag(DebugFlags::DEBUG_DIRTY);
        let mut mdcr = host_mdcr_el2 & MDCR_EL2_HPMN_MASK;
        mdcr |= MDCR_EL2_TPM | MDCR_EL2_TPMCR | MDCR_EL2_TDRA | MDCR_EL2_TDOSA;
        if !vcpu.guest_debug.is_empty() {
            mdcr |= MDCR_EL2_TDE;
        }
        self.kvm_arm_setup_guest_debug(vcpu);
        if vcpu.guest_debug.contains(GuestDebugControl::USE_HW) || vcpu.os_lock_enabled() {
            trap_debug = true;
        }
        if trap_debug {
            mdcr |= MDCR_EL2_TDA;
        }
        vcpu.arch.mdcr_el2 = mdcr;
    }

    /// The v4.x `__debug_save_state(vcpu, dbg, ctxt)`: nothing unless DEBUG_DIRTY; the counts
    /// are read from ID_AA64DFR0_EL1 on every call.
    fn __debug_save_state_if_dirty<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: Option<&mut KvmCpuContext>,
    ) -> Result<(), HypFault> {
        if !vcpu.flag(DebugFlags::DEBUG_DIRTY) {
            return Ok(());
        }
        let c = self.read_debug_counts(a.read_id_aa64dfr0());
        match host {
            Some(host_ctxt) => {
                self.__debug_save_state(a, &mut vcpu.arch.host_debug_state, host_ctxt, c)
            }
            None => {
                let (dbg, ctxt) = debug_ptr_and_ctxt(vcpu);
                self.__debug_save_state(a, dbg, ctxt, c)
            }
        }
    }

    /// The v4.x `__debug_restore_state(vcpu, dbg, ctxt)`: nothing unless DEBUG_DIRTY.
    fn __debug_restore_state_if_dirty<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: Option<&KvmCpuContext>,
    ) -> Result<(), HypFault> {
        if !vcpu.flag(DebugFlags::DEBUG_DIRTY) {
            return Ok(());
        }
        let c: DebugCounts = self.read_debug_counts(a.read_id_aa64dfr0());
        match host {
            Some(host_ctxt) => {
                self.__debug_restore_state(a, &vcpu.arch.host_debug_state, host_ctxt, c)
            }
            None => {
                let (dbg, ctxt) = debug_ptr_and_ctxt(vcpu);
                self.__debug_restore_state(a, dbg, ctxt, c)
            }
        }
    }

    /// `__debug_cond_save_host_state`: the guest's MDSCR_EL1 with KDE or MDE makes the state
    /// dirty; then save the host's registers (if dirty).
    fn __debug_cond_save_host_state<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host_ctxt: &mut KvmCpuContext,
    ) -> Result<(), HypFault> {
        if mdscr_uses_debug(vcpu.mdscr_el1()) {
            vcpu.set_flag(DebugFlags::DEBUG_DIRTY, true);
        }
        a.scope(Scope::SaveHost);
        self.__debug_save_state_if_dirty(a, vcpu, Some(host_ctxt))
    }

    /// `__debug_cond_restore_host_state`: restore the host's registers (if dirty), then clear
    /// DEBUG_DIRTY: it lasts exactly one run.
    fn __debug_cond_restore_host_state<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host_ctxt: &KvmCpuContext,
    ) -> Result<(), HypFault> {
        a.scope(Scope::RestoreHost);
        self.__debug_restore_state_if_dirty(a, vcpu, Some(host_ctxt))?;
        vcpu.set_flag(DebugFlags::DEBUG_DIRTY, false);
        Ok(())
    }
}

/// The era-1 reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct Era1Reference;
impl Common for Era1Reference {}
impl DebugDirty for Era1Reference {}
impl Era1 for Era1Reference {}
