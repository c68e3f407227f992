//! The obvious slips every validator should kill (docs/variants.md, "Generic
//! mutants"), each the one kernel function it changes.

use hypdbg_model::ctrl::MDCR_EL2_TDA;
use hypdbg_model::uapi::KvmGuestDebugArch;
use hypdbg_model::{DbgBank, SysReg};

use super::{Variant, VariantKind, make_fn};
use hypdbg_model::DebugFeatures;

use crate::access::{RegAccess, Scope};
use crate::context::{DebugFlags, DebugOwner, DebugPtr, KvmCpuContext, KvmHostData, KvmVcpu};
use crate::debug_sr;
use crate::fault::HypFault;
use crate::flow::HostMode;
use crate::flow::era1::debug_ptr_and_ctxt;
use crate::flow::era3::debug_block_and_ctxt;
use crate::flow::mdcr_el2_base;
use crate::flow::{
    Common, DebugCounts, DebugDirty, Era1, Era1Engine, Era2, Era2Engine, Era3, Era3Engine,
};
use crate::sync::{Mutex, lock};

/// The fields as the kernel reads them, for the count mutants.
fn fields(id_aa64dfr0: u64) -> (u8, u8) {
    (
        ((id_aa64dfr0 >> 12) & 0xf) as u8,
        ((id_aa64dfr0 >> 20) & 0xf) as u8,
    )
}

/// count-plus-one: `nr` treated as a count and incremented (moves nr + 2 registers).
#[derive(Default)]
pub struct CountPlusOne;
impl Common for CountPlusOne {
    fn read_debug_counts(&self, id_aa64dfr0: u64) -> DebugCounts {
        let (b, w) = fields(id_aa64dfr0);
        DebugCounts {
            brps: b + 1,
            wrps: w + 1,
        }
    }
}
impl Era3 for CountPlusOne {}

/// count-minus-one: `nr - 1` passed to the switch (one register short).
#[derive(Default)]
pub struct CountMinusOne;
impl Common for CountMinusOne {
    fn read_debug_counts(&self, id_aa64dfr0: u64) -> DebugCounts {
        let (b, w) = fields(id_aa64dfr0);
        DebugCounts {
            brps: b.saturating_sub(1),
            wrps: w.saturating_sub(1),
        }
    }
}
impl Era3 for CountMinusOne {}

/// brps-wrps-swapped: `brps = (aa64dfr0 >> 20)`, `wrps = (aa64dfr0 >> 12)`.
#[derive(Default)]
pub struct ShiftsSwapped;
impl Common for ShiftsSwapped {
    fn read_debug_counts(&self, id_aa64dfr0: u64) -> DebugCounts {
        let (b, w) = fields(id_aa64dfr0);
        DebugCounts { brps: w, wrps: b }
    }
}
impl DebugDirty for ShiftsSwapped {}
impl Era1 for ShiftsSwapped {}

/// count-mask-0x7: `(aa64dfr0 >> 12) & 0x7`: a 3-bit field.
#[derive(Default)]
pub struct CountMask7;
impl Common for CountMask7 {
    fn read_debug_counts(&self, id_aa64dfr0: u64) -> DebugCounts {
        DebugCounts {
            brps: ((id_aa64dfr0 >> 12) & 0x7) as u8,
            wrps: ((id_aa64dfr0 >> 20) & 0x7) as u8,
        }
    }
}
impl DebugDirty for CountMask7 {}
impl Era2 for CountMask7 {}

/// wcr-with-brps: `save_debug(dbg->dbg_wcr, dbgwcr, brps)` (and the restore).
#[derive(Default)]
pub struct WcrWithBrps;
impl Common for WcrWithBrps {
    fn __debug_save_state<A: RegAccess>(
        &self,
        a: &mut A,
        dbg: &mut KvmGuestDebugArch,
        ctxt: &mut KvmCpuContext,
        c: DebugCounts,
    ) -> Result<(), HypFault> {
        self.save_debug(a, &mut dbg.dbg_bcr, DbgBank::Bcr, c.brps)?;
        self.save_debug(a, &mut dbg.dbg_bvr, DbgBank::Bvr, c.brps)?;
        self.save_debug(a, &mut dbg.dbg_wcr, DbgBank::Wcr, c.brps)?;
        self.save_debug(a, &mut dbg.dbg_wvr, DbgBank::Wvr, c.wrps)?;
        ctxt.sys_regs.mdccint_el1 = a.read_sys(SysReg::MdccintEl1)?;
        Ok(())
    }
    fn __debug_restore_state<A: RegAccess>(
        &self,
        a: &mut A,
        dbg: &KvmGuestDebugArch,
        ctxt: &KvmCpuContext,
        c: DebugCounts,
    ) -> Result<(), HypFault> {
        self.restore_debug(a, &dbg.dbg_bcr, DbgBank::Bcr, c.brps)?;
        self.restore_debug(a, &dbg.dbg_bvr, DbgBank::Bvr, c.brps)?;
        self.restore_debug(a, &dbg.dbg_wcr, DbgBank::Wcr, c.brps)?;
        self.restore_debug(a, &dbg.dbg_wvr, DbgBank::Wvr, c.wrps)?;
        a.write_sys(SysReg::MdccintEl1, ctxt.sys_regs.mdccint_el1)
    }
}
impl Era3 for WcrWithBrps {}

/// mdccint-not-moved: the save/restore forgets MDCCINT_EL1.
#[derive(Default)]
pub struct MdccintNotMoved;
impl Common for MdccintNotMoved {
    fn __debug_save_state<A: RegAccess>(
        &self,
        a: &mut A,
        dbg: &mut KvmGuestDebugArch,
        _ctxt: &mut KvmCpuContext,
        c: DebugCounts,
    ) -> Result<(), HypFault> {
        self.save_debug(a, &mut dbg.dbg_bcr, DbgBank::Bcr, c.brps)?;
        self.save_debug(a, &mut dbg.dbg_bvr, DbgBank::Bvr, c.brps)?;
        self.save_debug(a, &mut dbg.dbg_wcr, DbgBank::Wcr, c.wrps)?;
        self.save_debug(a, &mut dbg.dbg_wvr, DbgBank::Wvr, c.wrps)
    }
    fn __debug_restore_state<A: RegAccess>(
        &self,
        a: &mut A,
        dbg: &KvmGuestDebugArch,
        _ctxt: &KvmCpuContext,
        c: DebugCounts,
    ) -> Result<(), HypFault> {
        self.restore_debug(a, &dbg.dbg_bcr, DbgBank::Bcr, c.brps)?;
        self.restore_debug(a, &dbg.dbg_bvr, DbgBank::Bvr, c.brps)?;
        self.restore_debug(a, &dbg.dbg_wcr, DbgBank::Wcr, c.wrps)?;
        self.restore_debug(a, &dbg.dbg_wvr, DbgBank::Wvr, c.wrps)
    }
}
impl Era3 for MdccintNotMoved {}

/// bcr-bvr-swapped: `restore_debug(dbg->dbg_bcr, dbgbvr, brps)` and the other way round.
#[derive(Default)]
pub struct BcrBvrSwapped;
impl Common for BcrBvrSwapped {
    fn restore_debug<A: RegAccess>(
        &self,
        a: &mut A,
        ptr: &[u64; 16],
        reg: DbgBank,
        nr: u8,
    ) -> Result<(), HypFault> {
        let swapped = match reg {
            DbgBank::Bcr => DbgBank::Bvr,
            DbgBank::Bvr => DbgBank::Bcr,
            other => other,
        };
        debug_sr::restore_debug(a, ptr, swapped, nr)
    }
}
impl Era3 for BcrBvrSwapped {}

/// restore-guest-before-save-host: `__debug_switch_to_guest_common` loads the guest's block
/// before saving the host's registers.
#[derive(Default)]
pub struct RestoreBeforeSave;
impl Common for RestoreBeforeSave {}
impl Era3 for RestoreBeforeSave {
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
        a.scope(Scope::RestoreGuest);
        let which = self.__vcpu_debug_regs(vcpu);
        let (dbg, ctxt) = debug_block_and_ctxt(vcpu, which);
        self.__debug_restore_state(a, dbg, ctxt, c)?;
        a.scope(Scope::SaveHost);
        self.__debug_save_state(a, &mut host.host_debug_state.regs, &mut host.host_ctxt, c)
    }
}

/// clear-dirty-before-restore: `__debug_cond_restore_host_state` clears DEBUG_DIRTY first, so
/// the DIRTY-gated restore of the host's registers does nothing.
#[derive(Default)]
pub struct ClearDirtyFirst;
impl Common for ClearDirtyFirst {}
impl DebugDirty for ClearDirtyFirst {}
impl Era1 for ClearDirtyFirst {
    fn __debug_cond_restore_host_state<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host_ctxt: &KvmCpuContext,
    ) -> Result<(), HypFault> {
        vcpu.set_flag(DebugFlags::DEBUG_DIRTY, false);
        a.scope(Scope::RestoreHost);
        self.__debug_restore_state_if_dirty(a, vcpu, Some(host_ctxt))
    }
}

/// never-clear-dirty: `__debug_switch_to_host_common` never clears DEBUG_DIRTY.
#[derive(Default)]
pub struct NeverClearDirty;
impl Common for NeverClearDirty {}
impl DebugDirty for NeverClearDirty {}
impl Era2 for NeverClearDirty {
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
        self.__debug_restore_state(a, &vcpu.arch.host_debug_state, host_ctxt, c)
    }
}

/// debug-ptr-ignored: USE_HW never points `debug_ptr` at `external_debug_state`.
#[derive(Default)]
pub struct DebugPtrIgnored;
impl Common for DebugPtrIgnored {}
impl DebugDirty for DebugPtrIgnored {
    fn kvm_arm_setup_guest_debug(&self, vcpu: &mut KvmVcpu) {
        if vcpu.guest_debug.is_empty() && !vcpu.os_lock_enabled() {
            return;
        }
        self.save_guest_debug_regs(vcpu);
        self.kvm_arm_setup_singlestep(vcpu);
        if vcpu
            .guest_debug
            .contains(hypdbg_model::uapi::GuestDebugControl::USE_HW)
        {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 |= hypdbg_model::ctrl::DBG_MDSCR_MDE;
            vcpu.set_flag(DebugFlags::DEBUG_DIRTY, true);
        } else if vcpu.os_lock_enabled() {
            vcpu.arch.ctxt.sys_regs.mdscr_el1 &= !hypdbg_model::ctrl::DBG_MDSCR_MDE;
        }
    }
}
impl Era2 for DebugPtrIgnored {}

/// owner-ignored: `__vcpu_debug_regs` always returns the guest's own block.
#[derive(Default)]
pub struct OwnerIgnored;
impl Common for OwnerIgnored {}
impl Era3 for OwnerIgnored {
    fn __vcpu_debug_regs(&self, _vcpu: &KvmVcpu) -> DebugPtr {
        DebugPtr::VcpuDebugState
    }
}

/// debug-ptr-not-reset: `kvm_arm_reset_debug_ptr` does nothing, so `debug_ptr` stays on
/// `external_debug_state` after USE_HW ends.
#[derive(Default)]
pub struct DebugPtrNotReset;
impl Common for DebugPtrNotReset {}
impl DebugDirty for DebugPtrNotReset {
    fn kvm_arm_reset_debug_ptr(&self, _vcpu: &mut KvmVcpu) {}
}
impl Era1 for DebugPtrNotReset {}

/// The era-3 MDCR_EL2 computation, with the TDA and TDE decisions as parameters.
fn era3_mdcr(vcpu: &KvmVcpu, host_mdcr_el2: u64, tda: bool, tde: bool) -> u64 {
    let mut mdcr = mdcr_el2_base(host_mdcr_el2);
    if tde && !vcpu.guest_debug.is_empty() {
        mdcr |= hypdbg_model::ctrl::MDCR_EL2_TDE;
    }
    if tda {
        mdcr |= MDCR_EL2_TDA;
    }
    mdcr
}

/// tda-inverted: `if (kvm_guest_owns_debug_regs(vcpu)) mdcr |= TDA`.
#[derive(Default)]
pub struct TdaInverted;
impl Common for TdaInverted {}
impl Era3 for TdaInverted {
    fn kvm_arm_setup_mdcr_el2(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        let owned = vcpu.arch.debug_owner == DebugOwner::VcpuDebugGuestOwned;
        vcpu.arch.mdcr_el2 = era3_mdcr(vcpu, host_mdcr_el2, owned, true);
    }
}

/// tde-not-set: `kvm_arm_setup_mdcr_el2` forgets MDCR_EL2.TDE for guest_debug.
#[derive(Default)]
pub struct TdeNotSet;
impl Common for TdeNotSet {}
impl Era3 for TdeNotSet {
    fn kvm_arm_setup_mdcr_el2(&self, vcpu: &mut KvmVcpu, host_mdcr_el2: u64) {
        let trap = vcpu.arch.debug_owner != DebugOwner::VcpuDebugGuestOwned;
        vcpu.arch.mdcr_el2 = era3_mdcr(vcpu, host_mdcr_el2, trap, false);
    }
}

/// host-state-shared-slot: the host's registers saved in one slot for all physical CPUs
/// (a global instead of `host_data`).
#[derive(Default)]
pub struct HostStateSharedSlot {
    slot: Mutex<KvmGuestDebugArch>,
}
impl Common for HostStateSharedSlot {}
impl Era3 for HostStateSharedSlot {
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
        self.__debug_save_state(a, &mut lock(&self.slot), &mut host.host_ctxt, c)?;
        a.scope(Scope::RestoreGuest);
        let which = self.__vcpu_debug_regs(vcpu);
        let (dbg, ctxt) = debug_block_and_ctxt(vcpu, which);
        self.__debug_restore_state(a, dbg, ctxt, c)
    }
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
        let saved = *lock(&self.slot);
        self.__debug_restore_state(a, &saved, &host.host_ctxt, c)
    }
}

/// A slip between the BRPs and WRPs counts is invisible where the two are equal.
fn same_counts(f: &DebugFeatures) -> Option<&'static str> {
    (f.num_brps() == f.num_wrps()).then_some(
        "the CPU implements as many breakpoints as watchpoints: the slip reads the same counts",
    )
}

/// A 3-bit mask of a count field is invisible where both counts are 8 or fewer.
fn at_most_8(f: &DebugFeatures) -> Option<&'static str> {
    (f.num_brps() <= 8 && f.num_wrps() <= 8).then_some(
        "the CPU implements at most 8 breakpoints and 8 watchpoints: a 3-bit mask reads the same counts",
    )
}

/// guest-visible-count: the switch counts with the VM's ID_AA64DFR0_EL1
/// (`kvm_read_vm_id_reg`), which userspace may have lowered, instead of the hardware's
/// `host_data->debug_brps/wrps`: the slots above the guest's WRPs keep the host's values while
/// the guest runs, and the guest's own writes there are never loaded.
#[derive(Default)]
pub struct GuestVisibleCount;
impl Common for GuestVisibleCount {}
impl Era3 for GuestVisibleCount {
    fn __debug_switch_to_guest_common<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        if vcpu.arch.debug_owner == DebugOwner::VcpuDebugFree {
            return Ok(());
        }
        let c = self.read_debug_counts(vcpu.id_aa64dfr0_el1);
        a.scope(Scope::SaveHost);
        self.__debug_save_state(a, &mut host.host_debug_state.regs, &mut host.host_ctxt, c)?;
        a.scope(Scope::RestoreGuest);
        let which = self.__vcpu_debug_regs(vcpu);
        let (dbg, ctxt) = debug_block_and_ctxt(vcpu, which);
        self.__debug_restore_state(a, dbg, ctxt, c)
    }
    fn __debug_switch_to_host_common<A: RegAccess>(
        &self,
        a: &mut A,
        vcpu: &mut KvmVcpu,
        host: &mut KvmHostData,
    ) -> Result<(), HypFault> {
        if vcpu.arch.debug_owner == DebugOwner::VcpuDebugFree {
            return Ok(());
        }
        let c = self.read_debug_counts(vcpu.id_aa64dfr0_el1);
        a.scope(Scope::SaveGuest);
        let which = self.__vcpu_debug_regs(vcpu);
        let (dbg, ctxt) = debug_block_and_ctxt(vcpu, which);
        self.__debug_save_state(a, dbg, ctxt, c)?;
        a.scope(Scope::RestoreHost);
        self.__debug_restore_state(a, &host.host_debug_state.regs, &host.host_ctxt, c)
    }
}

/// The generic variants.
pub fn variants() -> Vec<Variant> {
    let g = |name, description, make| Variant {
        name,
        kind: VariantKind::Generic,
        description,
        fix: None,
        make: make_fn(make),
        host: HostMode::Nvhe,
        hidden_on: None,
    };
    let hidden = |v: Variant, on: fn(&DebugFeatures) -> Option<&'static str>| Variant {
        hidden_on: Some(on),
        ..v
    };
    vec![
        g(
            "count-plus-one",
            "kvm_init_host_debug_data stores BRPs + 1: the copy touches one unimplemented register per bank",
            || Box::new(Era3Engine(CountPlusOne)),
        ),
        g(
            "count-minus-one",
            "kvm_init_host_debug_data stores BRPs - 1: the highest implemented register is never moved",
            || Box::new(Era3Engine(CountMinusOne)),
        ),
        hidden(
            g(
                "brps-wrps-swapped",
                "brps = (aa64dfr0 >> 20) & 0xf, wrps = (aa64dfr0 >> 12) & 0xf",
                || Box::new(Era1Engine(ShiftsSwapped)),
            ),
            same_counts,
        ),
        hidden(
            g(
                "count-mask-0x7",
                "brps = (aa64dfr0 >> 12) & 0x7: registers 8..15 are never moved",
                || Box::new(Era2Engine(CountMask7)),
            ),
            at_most_8,
        ),
        hidden(
            g(
                "wcr-with-brps",
                "save_debug(dbg->dbg_wcr, dbgwcr, brps): the watchpoint controls are copied with the breakpoint count",
                || Box::new(Era3Engine(WcrWithBrps)),
            ),
            same_counts,
        ),
        g(
            "restore-guest-before-save-host",
            "__debug_switch_to_guest_common restores the guest's block before saving the host's",
            || Box::new(Era3Engine(RestoreBeforeSave)),
        ),
        g(
            "clear-dirty-before-restore",
            "__debug_cond_restore_host_state clears DEBUG_DIRTY before the DIRTY-gated host restore",
            || Box::new(Era1Engine(ClearDirtyFirst)),
        ),
        g(
            "never-clear-dirty",
            "__debug_switch_to_host_common never clears DEBUG_DIRTY: the switch stays eager forever",
            || Box::new(Era2Engine(NeverClearDirty)),
        ),
        g(
            "mdccint-not-moved",
            "__debug_save_state / __debug_restore_state do not move MDCCINT_EL1",
            || Box::new(Era3Engine(MdccintNotMoved)),
        ),
        g(
            "bcr-bvr-swapped",
            "restore_debug writes dbg_bcr[] into DBGBVR<n>_EL1 and dbg_bvr[] into DBGBCR<n>_EL1",
            || Box::new(Era3Engine(BcrBvrSwapped)),
        ),
        g(
            "debug-ptr-ignored",
            "USE_HW never points debug_ptr at external_debug_state: userspace's registers are never loaded",
            || Box::new(Era2Engine(DebugPtrIgnored)),
        ),
        g(
            "owner-ignored",
            "__vcpu_debug_regs ignores debug_owner: HOST_OWNED loads the guest's block",
            || Box::new(Era3Engine(OwnerIgnored)),
        ),
        g(
            "debug-ptr-not-reset",
            "kvm_arm_reset_debug_ptr does nothing: debug_ptr stays on external_debug_state after USE_HW ends",
            || Box::new(Era1Engine(DebugPtrNotReset)),
        ),
        g(
            "tda-inverted",
            "kvm_arm_setup_mdcr_el2 sets TDA when the guest owns the registers instead of when it does not",
            || Box::new(Era3Engine(TdaInverted)),
        ),
        g(
            "tde-not-set",
            "kvm_arm_setup_mdcr_el2 forgets MDCR_EL2.TDE for guest_debug: debug events never reach userspace",
            || Box::new(Era3Engine(TdeNotSet)),
        ),
        g(
            "guest-visible-count",
            "the switch counts with the VM's ID_AA64DFR0_EL1 (userspace may lower WRPs) instead of the hardware's: slots above the guest's WRPs run with the host's values",
            || Box::new(Era3Engine(GuestVisibleCount)),
        ),
        g(
            "host-state-shared-slot",
            "the host's registers are saved in one slot for all physical CPUs instead of per-CPU host_data",
            || Box::new(Era3Engine(HostStateSharedSlot::default())),
        ),
    ]
}
