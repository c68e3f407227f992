//! The checks at a guest entry, on the live registers the guest runs with and the accesses
//! the switch to the guest made.

use hypdbg_hyp::access::{AccessRecord, HypReg};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::pcpu::HostSnapshot;
use hypdbg_model::ctrl::{
    DBG_MDSCR_MDE, DBG_MDSCR_SS, MDCR_EL2_HPMN_MASK, MDCR_EL2_TDA, MDCR_EL2_TDE, MDCR_EL2_TDOSA,
    MDCR_EL2_TDRA, MDCR_EL2_TPM, MDCR_EL2_TPMCR, MDCR_EL2_TPMS, MDCR_EL2_TTRF,
};
use hypdbg_model::uapi::GuestDebugControl;
use hypdbg_model::{DbgBank, SysReg};

use super::shadow::Shadow;
use super::{Checker, Invariant};

/// Whether an access moves debug state (a DBG{B,W}{C,V}R\<n> or MDCCINT_EL1).
fn moves_debug_state(a: &AccessRecord) -> bool {
    matches!(
        a.reg,
        HypReg::Sys(SysReg::Dbg(..)) | HypReg::Sys(SysReg::MdccintEl1)
    )
}

/// How many accesses move debug state, and the register of the first (the one a lazy
/// violation names).
pub(super) fn debug_moves(accesses: &[AccessRecord]) -> (usize, Option<String>) {
    let n = accesses.iter().filter(|a| moves_debug_state(a)).count();
    let first = accesses
        .iter()
        .find(|a| moves_debug_state(a))
        .map(|a| a.reg.to_string());
    (n, first)
}

impl Checker {
    /// A violation seen in a live register while the guest ran on `pcpu`.
    fn live_violation(
        &mut self,
        inv: Invariant,
        vcpu: usize,
        pcpu: usize,
        register: &str,
        live: u64,
        message: String,
    ) {
        self.violation(inv, vcpu, message)
            .cpu(pcpu)
            .register(register)
            .actual(live)
            .push();
    }

    pub(super) fn on_entered(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        live: &HostSnapshot,
        accesses: &[AccessRecord],
    ) {
        self.check_accesses(vcpu, pcpu, accesses, "to the guest");
        let s = *self.shadow(vcpu);
        let (in_use, users) = s.expectation(self.era);
        if in_use {
            self.check_block_loaded(vcpu, pcpu, live, users, s.user_on());
            self.check_mdccint_loaded(vcpu, pcpu, live, &s);
            self.check_owned_untrapped(vcpu, pcpu, live, users);
        } else {
            self.check_lazy_entry(vcpu, pcpu, live, &s, debug_moves(accesses));
        }
        self.check_live_mdscr(vcpu, pcpu, live.mdscr_el1, &s);
        self.check_tde(vcpu, pcpu, live.mdcr_el2, &s);
        // VHE: the host's MDCR_EL2 is the one before vcpu_load.
        let host_mdcr = self
            .host_at_load
            .get(&pcpu)
            .or(self.host_before.get(&pcpu))
            .map(|h| h.mdcr_el2);
        self.check_mdcr_contract(vcpu, pcpu, live.mdcr_el2, host_mdcr);
        let s = self.shadow(vcpu);
        s.entry_in_use = in_use;
        s.dirty_write = false;
    }

    /// Invariants 4 and 5 on one side of a switch: if any debug register moved, every
    /// implemented index of every bank was read and written.
    pub(super) fn check_accesses(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        accesses: &[AccessRecord],
        side: &str,
    ) {
        // [bank][write] -> bitmask of indices moved.
        let mut moved = [[0u32; 2]; 4];
        let mut any = false;
        for a in accesses {
            if let HypReg::Sys(SysReg::Dbg(bank, n)) = a.reg {
                moved[bank as usize][usize::from(a.write)] |= 1 << n;
                any = true;
            }
        }
        if !any {
            return;
        }
        for bank in DbgBank::ALL {
            let n = self.features.count(bank);
            for write in [false, true] {
                let got = moved[bank as usize][usize::from(write)];
                if let Some(missing) = (0..n).find(|i| got & (1 << i) == 0) {
                    let reg = SysReg::Dbg(bank, missing as u8);
                    let msg = format!(
                        "the switch {side} {} {} of the {n} implemented {} registers but not {reg}",
                        if write { "wrote" } else { "read" },
                        got.count_ones(),
                        bank.stem().to_ascii_uppercase()
                    );
                    self.violation(Invariant::NoShortCopy, vcpu, msg)
                        .cpu(pcpu)
                        .register(reg.to_string())
                        .push();
                    return;
                }
            }
        }
    }

    /// Invariants 1 and 7: every implemented register holds the selected block's value (the
    /// guest's own, or userspace's when `users`); the first difference is reported.
    fn check_block_loaded(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        live: &HostSnapshot,
        users: bool,
        user_on: bool,
    ) {
        let blocks = self.blocks(vcpu).clone();
        let host = self.host_before.get(&pcpu).copied();
        for bank in DbgBank::ALL {
            for n in 0..self.features.count(bank) {
                let want = blocks.value(users, bank, n);
                let got = live.banks[bank as usize].get(n).copied().unwrap_or(0);
                if want == got {
                    continue;
                }
                let reg = SysReg::Dbg(bank, n as u8);
                let held = match &host {
                    Some(h) if h.banks[bank as usize].get(n) == Some(&got) => {
                        format!("held the host's {got:#x}")
                    }
                    _ => format!("held {got:#x}"),
                };
                let whose = if users { "userspace's" } else { "the guest's" };
                let inv = if users && user_on {
                    Invariant::UserspaceDebug
                } else {
                    Invariant::GuestStateLoaded
                };
                let msg = format!("{reg} {held} while the guest ran; expected {whose} {want:#x}");
                self.violation(inv, vcpu, msg)
                    .cpu(pcpu)
                    .register(reg.to_string())
                    .expected(want)
                    .actual(got)
                    .push();
                return;
            }
        }
    }

    /// Invariant 9: MDCCINT_EL1 travels with the loaded state.
    fn check_mdccint_loaded(&mut self, vcpu: usize, pcpu: usize, live: &HostSnapshot, s: &Shadow) {
        if live.mdccint_el1 != s.mdccint {
            let msg = format!(
                "MDCCINT_EL1 held {:#x} while the guest ran with its debug state loaded; expected the guest's {:#x}",
                live.mdccint_el1, s.mdccint
            );
            self.violation(Invariant::MdccintMdcr, vcpu, msg)
                .cpu(pcpu)
                .register("MDCCINT_EL1")
                .expected(s.mdccint)
                .actual(live.mdccint_el1)
                .push();
        }
    }

    /// Invariant 6, era 3: once the guest owns its debug registers they no longer trap.
    fn check_owned_untrapped(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        live: &HostSnapshot,
        users: bool,
    ) {
        let trapped = live.mdcr_el2 & (MDCR_EL2_TDA | MDCR_EL2_TDE) != 0;
        if self.era == Era::Three && !users && trapped {
            let msg = format!(
                "the guest owns its debug registers but MDCR_EL2 = {:#x} still traps them (TDA): every access exits to EL2",
                live.mdcr_el2
            );
            self.live_violation(Invariant::Lazy, vcpu, pcpu, "MDCR_EL2", live.mdcr_el2, msg);
        }
    }

    /// Invariant 6: state nobody uses is not moved, and its traps stay armed.
    fn check_lazy_entry(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        live: &HostSnapshot,
        s: &Shadow,
        (moves, first): (usize, Option<String>),
    ) {
        if let Some(first) = first.filter(|_| moves > 0) {
            let msg = format!(
                "the guest does not use its debug registers (MDSCR_EL1 = {:#x}, nobody debugs it) but the switch to the guest moved {moves} of them, {first} first",
                s.mdscr
            );
            self.violation(Invariant::Lazy, vcpu, msg)
                .cpu(pcpu)
                .register(first)
                .expected(0)
                .actual(moves as u64)
                .push();
        }
        if live.mdcr_el2 & (MDCR_EL2_TDA | MDCR_EL2_TDE) == 0 {
            let msg = format!(
                "the guest's debug registers are not loaded but MDCR_EL2 = {:#x} does not trap them (TDA clear): a first use would be missed",
                live.mdcr_el2
            );
            self.live_violation(Invariant::Lazy, vcpu, pcpu, "MDCR_EL2", live.mdcr_el2, msg);
        }
    }

    /// Invariants 1, 7 and 8 on the MDSCR_EL1 the guest runs with: the guest's own when
    /// nobody debugs it; MDE with USE_HW, SS with SINGLESTEP; MDE clear under the OS lock.
    fn check_live_mdscr(&mut self, vcpu: usize, pcpu: usize, mdscr: u64, s: &Shadow) {
        let use_hw = s.control.contains(GuestDebugControl::USE_HW);
        if !s.user_on() && !s.oslk && mdscr != s.mdscr {
            let msg = format!(
                "MDSCR_EL1 held {mdscr:#x} while the guest ran; the guest wrote {:#x}",
                s.mdscr
            );
            self.violation(Invariant::GuestStateLoaded, vcpu, msg)
                .cpu(pcpu)
                .register("MDSCR_EL1")
                .expected(s.mdscr)
                .actual(mdscr)
                .push();
        }
        // (broken, invariant, what was asked, what the live MDSCR_EL1 lacks or has)
        let rules = [
            (
                use_hw && mdscr & DBG_MDSCR_MDE == 0,
                Invariant::UserspaceDebug,
                "userspace set KVM_GUESTDBG_USE_HW but the guest",
                "MDE clear",
            ),
            (
                s.control.contains(GuestDebugControl::SINGLESTEP) && mdscr & DBG_MDSCR_SS == 0,
                Invariant::UserspaceDebug,
                "userspace set KVM_GUESTDBG_SINGLESTEP but the guest",
                "SS clear",
            ),
            (
                s.oslk && !use_hw && mdscr & DBG_MDSCR_MDE != 0,
                Invariant::EventDelivery,
                "the guest's OS lock is set but it",
                "MDE set",
            ),
        ];
        for (broken, inv, asked, bit) in rules {
            if broken {
                let msg = format!("{asked} ran with MDSCR_EL1 = {mdscr:#x} ({bit})");
                self.live_violation(inv, vcpu, pcpu, "MDSCR_EL1", mdscr, msg);
            }
        }
    }

    /// Invariant 8: while userspace debugs the guest, MDCR_EL2.TDE routes its debug events to
    /// EL2.
    fn check_tde(&mut self, vcpu: usize, pcpu: usize, mdcr: u64, s: &Shadow) {
        if s.user_on() && mdcr & MDCR_EL2_TDE == 0 {
            let msg = format!(
                "userspace debugs the guest but MDCR_EL2 = {mdcr:#x} has TDE clear: debug events stay in the guest"
            );
            self.live_violation(Invariant::EventDelivery, vcpu, pcpu, "MDCR_EL2", mdcr, msg);
        }
    }

    /// The MDCR_EL2 every vcpu runs with whatever its debug state: the OS lock and MDRAR
    /// always trap (KVM emulates them: invariant 6), and the PMU/SPE/trace traps and the
    /// host's HPMN partition are kept (`kvm_arm_setup_mdcr_el2`: HPMN | TPM | TPMCR, plus TPMS
    /// and TTRF from v4.17: invariant 9).
    fn check_mdcr_contract(&mut self, vcpu: usize, pcpu: usize, mdcr: u64, host_mdcr: Option<u64>) {
        let always_traps = MDCR_EL2_TDOSA | MDCR_EL2_TDRA;
        if mdcr & always_traps != always_traps {
            let msg = format!(
                "the guest ran with MDCR_EL2 = {mdcr:#x}: TDOSA and TDRA must always be set (KVM emulates the OS lock and MDRAR_EL1)"
            );
            self.violation(Invariant::Lazy, vcpu, msg)
                .cpu(pcpu)
                .register("MDCR_EL2")
                .expected(always_traps)
                .actual(mdcr)
                .push();
        }
        let mut kept = MDCR_EL2_TPM | MDCR_EL2_TPMCR;
        if self.era != Era::One {
            kept |= MDCR_EL2_TPMS | MDCR_EL2_TTRF;
        }
        let hpmn_ok = host_mdcr.is_none_or(|h| h & MDCR_EL2_HPMN_MASK == mdcr & MDCR_EL2_HPMN_MASK);
        if mdcr & kept != kept || !hpmn_ok {
            let msg = format!(
                "the guest ran with MDCR_EL2 = {mdcr:#x}: it must keep the host's HPMN ({:#x}) and the PMU/SPE/trace traps {kept:#x}",
                host_mdcr.unwrap_or(0) & MDCR_EL2_HPMN_MASK
            );
            self.violation(Invariant::MdccintMdcr, vcpu, msg)
                .cpu(pcpu)
                .register("MDCR_EL2")
                .expected(kept)
                .actual(mdcr)
                .push();
        }
    }
}
