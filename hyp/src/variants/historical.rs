//! Defects that shipped (docs/variants.md), each the kernel function that had
//! it, written as it was.

use hypdbg_model::SysReg;
use hypdbg_model::ctrl::{DBG_MDSCR_KDE, DBG_MDSCR_SS, mdscr_uses_debug};
use hypdbg_model::uapi::GuestDebugControl;
use hypdbg_model::uapi::KvmGuestDebugArch;

use super::{Variant, VariantKind, make_fn};
use crate::access::{RegAccess, Scope};
use crate::context::{DebugFlags, DebugOwner, KvmCpuContext, KvmVcpu};
use crate::fault::HypFault;
use crate::flow::HostMode;
use crate::flow::{
    Common, DebugDirty, Era1, Era1Engine, Era2, Era2Engine, Era3, Era3Engine, SysRegParams,
    TrapOutcome,
};

/// seed-v2-kde-twice: the 2015 v2 posting tests KDE twice.
#[derive(Default)]
pub struct SeedV2KdeTwice;
impl Common for SeedV2KdeTwice {}
impl DebugDirty for SeedV2KdeTwice {}
impl Era1 for SeedV2KdeTwice {
    fn __debug_cond_save_host_state<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host_ctxt: &mut KvmCpuContext,
    ) -> Result<(), HypFault> {
        let mdscr = vcpu.mdscr_el1();
        #[allow(clippy::nonminimal_bool, clippy::eq_op)]
        if (mdscr & DBG_MDSCR_KDE != 0) || (mdscr & DBG_MDSCR_KDE != 0) {
            vcpu.set_flag(DebugFlags::DEBUG_DIRTY, true);
        }
        a.scope(Scope::SaveHost);
        self.__debug_save_state_if_dirty(a, vcpu, Some(host_ctxt))
    }
}

/// debug-reg-indexing: accessors indexed by a descriptor field that was 0 for every register.
#[derive(Default)]
pub struct DebugRegIndexing;
impl Common for DebugRegIndexing {
    fn demux_wb_reg<'a>(&self, dbg: &'a mut KvmGuestDebugArch, reg: SysReg) -> Option<&'a mut u64> {
        let (bank, _crm) = reg.bank_index()?;
        let rd_reg = 0; // 03fdfb2690099 set .reg = 0 for every DBG*_EL1 entry
        dbg.bank_mut(bank).get_mut(rd_reg)
    }
}
impl DebugDirty for DebugRegIndexing {}
impl Era2 for DebugRegIndexing {}

/// pstate-ss-not-preserved: only MDSCR_EL1 was restored after userspace stepping.
#[derive(Default)]
pub struct PstateSsNotPreserved;
impl Common for PstateSsNotPreserved {}
impl DebugDirty for PstateSsNotPreserved {
    fn restore_guest_debug_regs(&self, vcpu: &mut KvmVcpu) {
        vcpu.arch.ctxt.sys_regs.mdscr_el1 = vcpu.arch.guest_debug_preserved.mdscr_el1;
    }
}
impl Era2 for PstateSsNotPreserved {}

/// ss-active-pending: SPSR.SS forced to 1 on every entry while stepping.
#[derive(Default)]
pub struct SsActivePending;
impl Common for SsActivePending {}
impl DebugDirty for SsActivePending {
    fn kvm_arm_setup_singlestep(&self, vcpu: &mut KvmVcpu) {
        if vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
            vcpu.set_pstate_ss(true);
            vcpu.arch.ctxt.sys_regs.mdscr_el1 |= DBG_MDSCR_SS;
        } else {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 &= !DBG_MDSCR_SS;
        }
    }
}
impl Era2 for SsActivePending {}

/// oslsr-write: writes to OSLSR_EL1 ignored instead of UNDEFINED.
#[derive(Default)]
pub struct OslsrWrite;
impl Common for OslsrWrite {
    fn trap_oslsr_el1(&self, vcpu: &mut KvmVcpu, p: &mut SysRegParams) -> TrapOutcome {
        if !p.is_write {
            p.regval = vcpu.arch.ctxt.sys_regs.oslsr_el1;
        }
        TrapOutcome::Handled // ignore_write
    }
}
impl DebugDirty for OslsrWrite {}
impl Era2 for OslsrWrite {}

/// os-lock-ignored: OSLAR_EL1 was RAZ/WI, so the OS lock never took effect.
#[derive(Default)]
pub struct OsLockIgnored;
impl Common for OsLockIgnored {
    fn trap_oslar_el1(&self, _vcpu: &mut KvmVcpu, p: &mut SysRegParams) -> TrapOutcome {
        if !p.is_write {
            p.regval = 0;
        }
        TrapOutcome::Handled // trap_raz_wi
    }
}
impl DebugDirty for OsLockIgnored {}
impl Era2 for OsLockIgnored {}

/// mdcr-el2-32bit: the host's MDCR_EL2 kept in a u32.
#[derive(Default)]
pub struct MdcrEl2U32;
impl Common for MdcrEl2U32 {
    fn __activate_traps_common<A: RegAccess>(
        &self,
        a: &mut A,
        host_mdcr: &mut u64,
        vcpu_mdcr: u64,
    ) {
        let mdcr_el2: u32 = a.read_mdcr_el2() as u32;
        *host_mdcr = u64::from(mdcr_el2);
        a.write_mdcr_el2(vcpu_mdcr);
    }
}
impl DebugDirty for MdcrEl2U32 {}
impl Era2 for MdcrEl2U32 {}

/// pkvm-owner-not-flushed: v6.14-rc1's `flush_hyp_vcpu`/`sync_hyp_vcpu` after the
/// debug-owner rework: no `flush_debug_state`/`sync_debug_state` at all, so the hyp's vcpu
/// keeps the owner it was created with (FREE) and never sees the owned block.
#[derive(Default)]
pub struct PkvmOwnerNotFlushed;
impl Common for PkvmOwnerNotFlushed {}
impl Era3 for PkvmOwnerNotFlushed {
    fn protected_mode(&self) -> bool {
        true
    }
    fn flush_debug_state(&self, _hyp_vcpu: &mut KvmVcpu, _host_vcpu: &KvmVcpu) {}
    fn sync_debug_state(&self, _host_vcpu: &mut KvmVcpu, _hyp_vcpu: &KvmVcpu) {}
}

/// pkvm-external-mdscr-not-flushed: v6.14..v7.2's `flush_debug_state` gives the hyp's vcpu
/// the owner and the owned block but not `external_mdscr_el1`: while the host owns debug the
/// guest runs with whatever MDSCR_EL1 the hyp vcpu's last exit saved there.
#[derive(Default)]
pub struct PkvmExternalMdscrNotFlushed;
impl Common for PkvmExternalMdscrNotFlushed {}
impl Era3 for PkvmExternalMdscrNotFlushed {
    fn protected_mode(&self) -> bool {
        true
    }
    fn flush_debug_state(&self, hyp_vcpu: &mut KvmVcpu, host_vcpu: &KvmVcpu) {
        hyp_vcpu.arch.debug_owner = host_vcpu.arch.debug_owner;
        match hyp_vcpu.arch.debug_owner {
            DebugOwner::VcpuDebugGuestOwned => {
                hyp_vcpu.arch.vcpu_debug_state = host_vcpu.arch.vcpu_debug_state
            }
            DebugOwner::VcpuDebugHostOwned => {
                hyp_vcpu.arch.external_debug_state = host_vcpu.arch.external_debug_state
            }
            DebugOwner::VcpuDebugFree => {}
        }
    }
}

/// ownership-no-mdcr: promotion to GUEST_OWNED without recomputing MDCR_EL2.
#[derive(Default)]
pub struct OwnershipNoMdcr;
impl Common for OwnershipNoMdcr {}
impl Era3 for OwnershipNoMdcr {
    fn kvm_debug_set_guest_ownership(&self, vcpu: &mut KvmVcpu, _host_mdcr_el2: u64) {
        if vcpu.arch.debug_owner == DebugOwner::VcpuDebugHostOwned {
            return;
        }
        vcpu.arch.debug_owner = DebugOwner::VcpuDebugGuestOwned;
    }
}

/// ownership-on-write-only: only trapped writes promote ownership.
#[derive(Default)]
pub struct OwnershipOnWriteOnly;
impl Common for OwnershipOnWriteOnly {}
impl Era3 for OwnershipOnWriteOnly {
    fn trap_debug_access(&self, vcpu: &mut KvmVcpu, is_write: bool, host_mdcr_el2: u64) {
        if is_write {
            self.kvm_debug_set_guest_ownership(vcpu, host_mdcr_el2);
        }
    }
}

/// ss-pending-survives: upstream v6.14+ forgets HOST_SS_ACTIVE_PENDING only in
/// KVM_SET_GUEST_DEBUG when ENABLE goes; `kvm_vcpu_load_debug` as upstream has it keeps a
/// pending step through runs without SINGLESTEP.
#[derive(Default)]
pub struct SsPendingSurvives;
impl Common for SsPendingSurvives {}
impl Era3 for SsPendingSurvives {
    fn kvm_vcpu_load_debug(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
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
}

/// ss-pending-survives-era2: v6.1..v6.13's `kvm_arm_setup_debug` as upstream has it: without
/// SINGLESTEP only MDSCR.SS goes; DBG_SS_ACTIVE_PENDING is forgotten only when ENABLE goes.
#[derive(Default)]
pub struct SsPendingSurvivesEra2;
impl Common for SsPendingSurvivesEra2 {}
impl DebugDirty for SsPendingSurvivesEra2 {
    fn kvm_arm_setup_singlestep(&self, vcpu: &mut KvmVcpu) {
        if vcpu.guest_debug.contains(GuestDebugControl::SINGLESTEP) {
            let pending = vcpu.flag(DebugFlags::DBG_SS_ACTIVE_PENDING);
            vcpu.set_pstate_ss(!pending);
            vcpu.arch.ctxt.sys_regs.mdscr_el1 |= DBG_MDSCR_SS;
        } else {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 &= !DBG_MDSCR_SS;
        }
    }
}
impl Era2 for SsPendingSurvivesEra2 {}

/// immediate-exit-loses-step: v6.1..v6.13's `kvm_arch_vcpu_ioctl_run` as upstream has it:
/// the `__kvm_adjust_pc` on the way out completes an MMIO access under SINGLESTEP and nothing
/// records that the step is now pending, so the next run arms a fresh step.
#[derive(Default)]
pub struct ImmediateExitLosesStep;
impl Common for ImmediateExitLosesStep {}
impl DebugDirty for ImmediateExitLosesStep {
    fn kvm_arch_vcpu_ioctl_run_out(&self, _vcpu: &mut KvmVcpu, _adjusted: bool) {}
}
impl Era2 for ImmediateExitLosesStep {}

/// The historical variants.
pub fn variants() -> Vec<Variant> {
    let h = |name, description, fix, make| Variant {
        name,
        kind: VariantKind::Historical,
        description,
        fix: Some(fix),
        make: make_fn(make),
        host: HostMode::Nvhe,
        hidden_on: None,
    };
    vec![
        h(
            "seed-v2",
            "__debug_cond_save_host_state tests (mdscr & KDE) || (mdscr & KDE): an MDE-only guest runs on the host's registers",
            "posted, never merged: v2 of the 2015 posting of \"arm64: KVM: Implement debug save/restore\"; v3, merged in v4.5, tests KDE || MDE",
            || Box::new(Era1Engine(SeedV2KdeTwice)),
        ),
        h(
            "debug-reg-indexing",
            "trap and ONE_REG accessors index vcpu_debug_state by rd->reg, which is 0 for every DBG*_EL1: all alias slot 0",
            "shipped v5.3..v5.12; fixed by cb853ded1d25 \"KVM: arm64: Fix debug register indexing\" (v5.13)",
            || Box::new(Era2Engine(DebugRegIndexing)),
        ),
        h(
            "pstate-ss-not-preserved",
            "restore_guest_debug_regs restores MDSCR_EL1 only: KVM's PSTATE.SS leaks into the guest after stepping",
            "shipped until v6.0; fixed by 34fbdee086cf \"KVM: arm64: Preserve PSTATE.SS for the guest while single-step is enabled\" (v6.1)",
            || Box::new(Era2Engine(PstateSsNotPreserved)),
        ),
        h(
            "ss-active-pending",
            "kvm_arm_setup_debug sets SPSR.SS on every entry: an active-pending step state is lost and the guest runs an extra instruction",
            "shipped until v6.0; fixed by 370531d1e95b \"KVM: arm64: Clear PSTATE.SS when the Software Step state was Active-pending\" (v6.1)",
            || Box::new(Era2Engine(SsActivePending)),
        ),
        h(
            "oslsr-write",
            "trap_oslsr_el1 ignores writes to the read-only OSLSR_EL1 instead of injecting UNDEF",
            "shipped until v5.17; fixed by e2ffceaae508 \"KVM: arm64: Correctly treat writes to OSLSR_EL1 as undefined\" (v5.18)",
            || Box::new(Era2Engine(OslsrWrite)),
        ),
        h(
            "os-lock-ignored",
            "OSLAR_EL1 is RAZ/WI: the guest's OS lock never masks MDE or arms the traps",
            "shipped until v5.17; fixed by 7dabf02f43a1 \"KVM: arm64: Emulate the OS Lock\" (v5.18)",
            || Box::new(Era2Engine(OsLockIgnored)),
        ),
        h(
            "mdcr-el2-32bit",
            "__activate_traps_common keeps the host's MDCR_EL2 in a u32: bits 32+ are lost across a run",
            "shipped until v5.14; fixed by d6c850dd6ce9 \"KVM: arm64: MDCR_EL2 is a 64-bit register\" (v5.15)",
            || Box::new(Era2Engine(MdcrEl2U32)),
        ),
        h(
            "pkvm-owner-not-flushed",
            "v6.14-rc1: flush_hyp_vcpu has no flush_debug_state: pKVM's hyp vcpu keeps debug_owner FREE and never sees the owned block",
            "shipped in v6.14-rc1 only; fixed by 0f1a6c5c9784 \"KVM: arm64: Flush/sync debug state in protected mode\" (v6.14-rc2)",
            || Box::new(Era3Engine(PkvmOwnerNotFlushed)),
        ),
        h(
            "pkvm-external-mdscr-not-flushed",
            "flush_debug_state copies the owner and the block but not external_mdscr_el1: under pKVM the guest runs with the hyp vcpu's stale MDSCR_EL1, so userspace single-step and USE_HW never arm",
            "shipped v6.14..v7.2; fixed by 119a9a23fbae \"KVM: arm64: Flush external_mdscr_el1 to the pKVM hyp vCPU\" (v7.3)",
            || Box::new(Era3Engine(PkvmExternalMdscrNotFlushed)),
        ),
        h(
            "ownership-no-mdcr",
            "kvm_debug_set_guest_ownership does not recompute MDCR_EL2: TDA stays set and every guest access traps",
            "hypothetical: never shipped nor posted (in the mid-series 6.14 tree MDCR_EL2 was still recomputed at every entry); kvm_debug_set_guest_ownership recomputes it since it exists (v6.14)",
            || Box::new(Era3Engine(OwnershipNoMdcr)),
        ),
        h(
            "ss-pending-survives",
            "kvm_vcpu_load_debug keeps HOST_SS_ACTIVE_PENDING through runs without SINGLESTEP (only KVM_SET_GUEST_DEBUG without ENABLE clears it): the next step after a debugger's continue reports without executing an instruction",
            "shipped v6.14 onward, still upstream: HOST_SS_ACTIVE_PENDING is cleared only when ENABLE goes; found by hypdbg's random search, no fix yet. It is also why 6.18 and 7.3, after an MMIO exit completed with immediate_exit under SINGLESTEP, report the next step after a continue without executing anything (measured on real KVM)",
            || Box::new(Era3Engine(SsPendingSurvives)),
        ),
        h(
            "ss-pending-survives-era2",
            "kvm_arm_setup_debug keeps DBG_SS_ACTIVE_PENDING through runs without SINGLESTEP (only KVM_SET_GUEST_DEBUG without ENABLE clears it): the next step after a debugger's continue reports without executing an instruction",
            "shipped v6.1..v6.13 (DBG_SS_ACTIVE_PENDING cleared only when ENABLE goes), never fixed there; the era-2 form of ss-pending-survives",
            || Box::new(Era2Engine(SsPendingSurvivesEra2)),
        ),
        h(
            "immediate-exit-loses-step",
            "KVM_RUN with immediate_exit completes a stepped MMIO access on its way out without recording the pending step: the next run executes one more instruction before its step exit",
            "shipped v6.1..v6.13 (measured on real KVM 6.1 and 6.12: the step exit after an MMIO access completed with immediate_exit comes one instruction late); v6.14 moved the step bookkeeping to vcpu_load/put, which run around every KVM_RUN",
            || Box::new(Era2Engine(ImmediateExitLosesStep)),
        ),
        h(
            "ownership-on-write-only",
            "only trapped writes promote ownership: a guest that only reads its debug registers traps forever",
            "posted, never in a release: the 6.14 debug-owner series before its last patch, c4a6ed85 \"KVM: arm64: Promote guest ownership for DBGxVR/DBGxCR reads\" (merged with the series in v6.14)",
            || Box::new(Era3Engine(OwnershipOnWriteOnly)),
        ),
    ]
}
