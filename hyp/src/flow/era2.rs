//! Era 2 (v4.17..v6.13): DEBUG_DIRTY decided in `kvm_arm_setup_debug`, the hyp's
//! `__debug_switch_to_guest`/`__debug_switch_to_host` act only when it is set.

use hypdbg_model::ctrl::{MDCR_EL2_TDA, MDCR_EL2_TDE, mdscr_uses_debug};
use hypdbg_model::uapi::GuestDebugControl;

use super::common::{Common, mdcr_el2_base};
use super::era1::{DebugDirty, debug_ptr_and_ctxt};
use crate::access::{RegAccess, Scope};
use crate::context::{DebugFlags, KvmCpuContext, KvmVcpu};
use crate::fault::HypFault;

/// Era 2's own functions.
pub trait Era2: DebugDirty {
    /// `kvm_arm_setup_mdcr_el2`: trap debug registers while userspace uses the hardware, the
    /// guest's state is not dirty, or the guest's OS lock is set; TDE for guest_debug.
    fn kvm_arm_setup_mdcr_el2(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        let mut mdcr = mdcr_el2_base(host_mdcr_el2);
        if !vcpu.guest_debug.is_empty() {
            mdcr |= MDCR_EL2_TDE;
        }
        if vcpu.guest_debug.contains(GuestDebugControl::USE_HW)
            || !vcpu.flag(DebugFlags::DEBUG_DIRTY)
            || vcpu.os_lock_enabled()
        {
            mdcr |= MDCR_EL2_TDA;
        }
        vcpu.arch.mdcr_el2 = mdcr;
    }

    /// `kvm_arm_setup_debug`: MDCR_EL2 first, then guest debugging, then "if KDE or MDE are
    /// set, perform a full save/restore cycle".
    fn kvm_arm_setup_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        self.kvm_arm_setup_mdcr_el2(vcpu, host_mdcr_el2);
        self.kvm_arm_setup_guest_debug(vcpu);
        if mdscr_uses_debug(vcpu.mdscr_el1()) {
            vcpu.set_flag(DebugFlags::DEBUG_DIRTY, true);
        }
    }

    /// `__debug_switch_to_guest_common`: if DIRTY, save the host's registers (per-vcpu
    /// `host_debug_state`) and load the block `debug_ptr` points at. Each debug-sr.h body
    /// reads ID_AA64DFR0_EL1 for its own counts (`brps = (aa64dfr0 >> 12) & 0xf`).
    fn __debug_switch_to_guest_common<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host_ctxt: &mut KvmCpuContext,
    ) -> Result<(), HypFault> {
        if !vcpu.flag(DebugFlags::DEBUG_DIRTY) {
            return Ok(());
        }
        a.scope(Scope::SaveHost);
        let c = self.read_debug_counts(a.read_id_aa64dfr0());
        self.__debug_save_state(a, &mut vcpu.arch.host_debug_state, host_ctxt, c)?;
        a.scope(Scope::RestoreGuest);
        let c = self.read_debug_counts(a.read_id_aa64dfr0());
        let (dbg, ctxt) = debug_ptr_and_ctxt(vcpu);
        self.__debug_restore_state(a, dbg, ctxt, c)
    }

    /// `__debug_switch_to_host_common`: if DIRTY, save the guest's block, restore the host's
    /// and clear DIRTY.
    fn __debug_switch_to_host_common<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host_ctxt: &KvmCpuContext,
    ) -> Result<(), HypFault> {
        if !vcpu.flag(DebugFlags::DEBUG_DIRTY) {
            return Ok(());
        }
        a.scope(Scope::SaveGuest);
        let c = self.read_debug_counts(a.read_id_aa64dfr0());
        let (dbg, ctxt) = debug_ptr_and_ctxt(vcpu);
        self.__debug_save_state(a, dbg, ctxt, c)?;
        a.scope(Scope::RestoreHost);
        let c = self.read_debug_counts(a.read_id_aa64dfr0());
        self.__debug_restore_state(a, &vcpu.arch.host_debug_state, host_ctxt, c)?;
        vcpu.set_flag(DebugFlags::DEBUG_DIRTY, false);
        Ok(())
    }
}

/// The era-2 reference (v4.17..v6.13; v6.13 names, the v4.17..v6.9 per-vcpu host save area).
#[derive(Clone, Copy, Debug, Default)]
pub struct Era2Reference;
impl Common for Era2Reference {}
impl DebugDirty for Era2Reference {}
impl Era2 for Era2Reference {}
