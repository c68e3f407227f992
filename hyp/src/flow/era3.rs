//! Era 3 (v6.14+, "KVM: arm64: Debug owner" rework): the owner is decided at `vcpu_load`,
//! the host's registers live in per-CPU `kvm_host_data`, the guest's MDSCR_EL1 is never
//! hijacked (`external_mdscr_el1`), single-step state is swapped at load/put.

use hypdbg_model::ctrl::{
    DBG_SPSR_SS, MDCR_EL2_TDA, MDCR_EL2_TDE, MDSCR_EL1_KDE, MDSCR_EL1_MDE, MDSCR_EL1_SS,
    mdscr_uses_debug,
};
use hypdbg_model::esr::{ESR_ELX_EC_SOFTSTP_LOW, ESR_ELX_EC_WATCHPT_LOW, Esr};
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_DEBUG_ARCH_HSR_HIGH_VALID, KvmDebugExitArch, KvmGuestDebug,
    KvmGuestDebugArch,
};

use super::common::{Common, DebugCounts, mdcr_el2_base, valid_control};
use crate::access::{RegAccess, Scope};
use crate::context::{DebugFlags, DebugOwner, DebugPtr, KvmCpuContext, KvmHostData, KvmVcpu};
use crate::fault::{HypFault, KvmError};

/// The block `which` names and the guest context.
pub fn debug_block_and_ctxt(
    vcpu: &mut KvmVcpu,
    which: DebugPtr,
) -> (&mut KvmGuestDebugArch, &mut KvmCpuContext) {
    let arch = &mut vcpu.arch;
    let dbg = match which {
        DebugPtr::ExternalDebugState => &mut arch.external_debug_state,
        DebugPtr::VcpuDebugState => &mut arch.vcpu_debug_state,
    };
    (dbg, &mut arch.ctxt)
}

/// Era 3's functions.
pub trait Era3: Common {
    /// `__vcpu_debug_regs(vcpu)`: the owner's block (userspace's when HOST_OWNED).
    fn __vcpu_debug_regs(&self, vcpu: &KvmVcpu) -> DebugPtr {
        match vcpu.arch.debug_owner {
            DebugOwner::VcpuDebugHostOwned => DebugPtr::ExternalDebugState,
            _ => DebugPtr::VcpuDebugState,
        }
    }

    /// Whether this flow runs the guest through pKVM's hyp copy of the vcpu (nVHE protected
    /// mode: `flush_hyp_vcpu` / `sync_hyp_vcpu`).
    fn protected_mode(&self) -> bool {
        false
    }

    /// `kvm_init_host_debug_data`: read the counts once per CPU.
    fn kvm_init_host_debug_data(&self, host: &mut KvmHostData, id_aa64dfr0: u64) {
        let c = self.read_debug_counts(id_aa64dfr0);
        host.debug_brps = c.brps;
        host.debug_wrps = c.wrps;
    }

    /// `kvm_arm_setup_mdcr_el2`: trap debug registers unless the guest owns them; TDE for
    /// guest_debug.
    fn kvm_arm_setup_mdcr_el2(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        let mut mdcr = mdcr_el2_base(host_mdcr_el2);
        if !vcpu.guest_debug.is_empty() {
            mdcr |= MDCR_EL2_TDE;
        }
        if vcpu.arch.debug_owner != DebugOwner::VcpuDebugGuestOwned {
            mdcr |= MDCR_EL2_TDA;
        }
        vcpu.arch.mdcr_el2 = mdcr;
    }

    /// `setup_external_mdscr`: the guest's MDSCR_EL1 minus SS/MDE/KDE, plus SS for
    /// SINGLESTEP and MDE|KDE for USE_HW (the OS lock falls out: MDE stays clear).
    fn setup_external_mdscr(&self, vcpu: &mut KvmVcpu) {
        let mut mdscr = vcpu.mdscr_el1() & !(MDSCR_EL1_SS | MDSCR_EL1_MDE | MDSCR_EL1_KDE);
        if vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
            mdscr |= MDSCR_EL1_SS;
        }
        if vcpu.guest_debug.contains(GuestDebugControl::USE_HW) {
            mdscr |= MDSCR_EL1_MDE | MDSCR_EL1_KDE;
        }
        vcpu.arch.external_mdscr_el1 = mdscr;
    }

    /// `kvm_vcpu_load_debug`: decide the owner; with SINGLESTEP, stash the guest's step state
    /// and install the host's.
    fn kvm_vcpu_load_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        if !vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
            // Not upstream: v6.14+ clears it only when ENABLE goes (in the ioctl), so a run
            // without SINGLESTEP keeps a stale pending step (`ss-pending-survives`).
            vcpu.set_flag(DebugFlags::HOST_SS_ACTIVE_PENDING, false);
        }
        if !vcpu.guest_debug.is_empty() || vcpu.os_lock_enabled() {
            vcpu.arch.debug_owner = DebugOwner::VcpuDebugHostOwned;
            self.setup_external_mdscr(vcpu);
            if vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
                let guest_pending = !vcpu.pstate_ss();
                vcpu.set_flag(DebugFlags::GUEST_SS_ACTIVE_PENDING, guest_pending);
                let host_pending = vcpu.flag(DebugFlags::HOST_SS_ACTIVE_PENDING);
                vcpu.set_pstate_ss(!host_pending);
            }
        } else if mdscr_uses_debug(vcpu.mdscr_el1()) {
            vcpu.arch.debug_owner = DebugOwner::VcpuDebugGuestOwned;
        } else {
            vcpu.arch.debug_owner = DebugOwner::VcpuDebugFree;
        }
        self.kvm_arm_setup_mdcr_el2(vcpu, host_mdcr_el2);
    }

    /// `kvm_vcpu_put_debug`: with SINGLESTEP, keep the host's step state and give the guest
    /// its own PSTATE.SS back.
    fn kvm_vcpu_put_debug(&self, vcpu: &mut KvmVcpu) {
        if !vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
            return;
        }
        let host_pending = !vcpu.pstate_ss();
        vcpu.set_flag(DebugFlags::HOST_SS_ACTIVE_PENDING, host_pending);
        let guest_pending = vcpu.flag(DebugFlags::GUEST_SS_ACTIVE_PENDING);
        vcpu.set_pstate_ss(!guest_pending);
    }

    /// `kvm_debug_set_guest_ownership`: a trapped guest access (read or write) makes the
    /// guest the owner, unless the host owns debug, and recomputes MDCR_EL2 (drops TDA).
    fn kvm_debug_set_guest_ownership(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        if vcpu.arch.debug_owner == DebugOwner::VcpuDebugHostOwned {
            return;
        }
        vcpu.arch.debug_owner = DebugOwner::VcpuDebugGuestOwned;
        self.kvm_arm_setup_mdcr_el2(vcpu, host_mdcr_el2);
    }

    /// `trap_dbg_wb_reg` / `trap_debug_regs` epilogue: any trapped access, read or write,
    /// promotes ownership (c4a6ed85, 6.14).
    fn trap_debug_access(&self, vcpu: &mut KvmVcpu, _is_write: bool, host_mdcr_el2: u64) {
        self.kvm_debug_set_guest_ownership(vcpu, host_mdcr_el2);
    }

    /// `kvm_arch_vcpu_ioctl_set_guest_debug` (6.14 "Clean up KVM_SET_GUEST_DEBUG").
    fn kvm_arch_vcpu_ioctl_set_guest_debug(
        &self,
        vcpu: &mut KvmVcpu,
        dbg: &KvmGuestDebug,
    ) -> Result<(), KvmError> {
        let control = valid_control(dbg.control)?;
        if !control.contains(GuestDebugControl::ENABLE) {
            vcpu.guest_debug = GuestDebugControl::empty();
            vcpu.set_flag(DebugFlags::HOST_SS_ACTIVE_PENDING, false);
            return Ok(());
        }
        vcpu.guest_debug = control;
        if control.contains(GuestDebugControl::USE_HW) {
            vcpu.arch.external_debug_state = dbg.arch;
        }
        Ok(())
    }

    /// `kvm_handle_guest_debug`: fill `vcpu->run->debug.arch` (hsr, hsr_high, far for a watchpoint); a completed step re-arms SPSR.SS.
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
            *vcpu.cpsr_mut() |= DBG_SPSR_SS
        }
        (exit, KVM_DEBUG_ARCH_HSR_HIGH_VALID)
    }

    /// The counts the switch uses: `host_data->debug_brps/wrps` (8c02c2bb, "Avoid reading
    /// ID_AA64DFR0 for save/restore").
    fn host_debug_counts<A: RegAccess>(&self, _a: &mut A, host: &KvmHostData) -> DebugCounts {
        DebugCounts {
            brps: host.debug_brps,
            wrps: host.debug_wrps,
        }
    }

    /// `__debug_switch_to_guest_common`: unless FREE, save the host's registers into this
    /// CPU's `host_data` and load the owner's block.
    fn __debug_switch_to_guest_common<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        if vcpu.arch.debug_owner == DebugOwner::VcpuDebugFree {
            return Ok(());
        }
        let c = self.host_debug_counts(a, host);
        a.scope(Scope::SaveHost);
        self.__debug_save_state(a, &mut host.host_debug_state.regs, &mut host.host_ctxt, c)?;
        a.scope(Scope::RestoreGuest);
        let which = self.__vcpu_debug_regs(vcpu);
        let (dbg, ctxt) = debug_block_and_ctxt(vcpu, which);
        self.__debug_restore_state(a, dbg, ctxt, c)
    }

    /// `__debug_switch_to_host_common`: unless FREE, save the owner's block and restore the
    /// host's registers from this CPU's `host_data`.
    fn __debug_switch_to_host_common<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        if vcpu.arch.debug_owner == DebugOwner::VcpuDebugFree {
            return Ok(());
        }
        let c = self.host_debug_counts(a, host);
        a.scope(Scope::SaveGuest);
        let which = self.__vcpu_debug_regs(vcpu);
        let (dbg, ctxt) = debug_block_and_ctxt(vcpu, which);
        self.__debug_save_state(a, dbg, ctxt, c)?;
        a.scope(Scope::RestoreHost);
        self.__debug_restore_state(a, &host.host_debug_state.regs, &host.host_ctxt, c)
    }

    /// `flush_debug_state` (pKVM, nvhe/hyp-main.c): give the hyp's vcpu the owner and the
    /// owned block (0f1a6c5c9784, v6.14-rc2) and, while the host owns debug, the MDSCR_EL1
    /// the guest runs with, which the world switch loads through `ctxt_mdscr_el1()`
    /// (119a9a23fbae, v7.3; `pkvm-external-mdscr-not-flushed` is v6.14..v7.2).
    fn flush_debug_state(&self, hyp_vcpu: &mut KvmVcpu, host_vcpu: &KvmVcpu) {
        hyp_vcpu.arch.debug_owner = host_vcpu.arch.debug_owner;
        match hyp_vcpu.arch.debug_owner {
            DebugOwner::VcpuDebugGuestOwned => {
                hyp_vcpu.arch.vcpu_debug_state = host_vcpu.arch.vcpu_debug_state
            }
            DebugOwner::VcpuDebugHostOwned => {
                hyp_vcpu.arch.external_debug_state = host_vcpu.arch.external_debug_state;
                hyp_vcpu.arch.external_mdscr_el1 = host_vcpu.arch.external_mdscr_el1;
            }
            DebugOwner::VcpuDebugFree => {}
        }
    }

    /// `sync_debug_state` (pKVM): copy the owned block back to the host's vcpu.
    fn sync_debug_state(&self, host_vcpu: &mut KvmVcpu, hyp_vcpu: &KvmVcpu) {
        match hyp_vcpu.arch.debug_owner {
            DebugOwner::VcpuDebugGuestOwned => {
                host_vcpu.arch.vcpu_debug_state = hyp_vcpu.arch.vcpu_debug_state
            }
            DebugOwner::VcpuDebugHostOwned => {
                host_vcpu.arch.external_debug_state = hyp_vcpu.arch.external_debug_state;
            }
            DebugOwner::VcpuDebugFree => {}
        }
    }
}

/// The era-3 reference (v6.14+, nVHE).
#[derive(Clone, Copy, Debug, Default)]
pub struct Era3Reference;
impl Common for Era3Reference {}
impl Era3 for Era3Reference {}

/// The era-3 reference under pKVM (protected hVHE or nVHE, v7.3): the hyp runs its own vcpu.
#[derive(Clone, Copy, Debug, Default)]
pub struct Era3Protected;
impl Common for Era3Protected {}
impl Era3 for Era3Protected {
    fn protected_mode(&self) -> bool {
        true
    }
}
