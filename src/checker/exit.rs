//! The checks at an exit: the accesses of the switch back to the host, the host's registers
//! after the run against before the entry, and what the exit to userspace reports.

use hypdbg_hyp::access::AccessRecord;
use hypdbg_hyp::events::ExitReason;
use hypdbg_hyp::pcpu::HostSnapshot;
use hypdbg_model::esr::{ESR_ELX_EC_SOFTSTP_LOW, Esr, ec_name};
use hypdbg_model::{DbgBank, SysReg};

use super::entry::debug_moves;
use super::{Checker, Invariant};

impl Checker {
    pub(super) fn on_exited(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        reason: &ExitReason,
        instructions: u64,
        host: &HostSnapshot,
        accesses: &[AccessRecord],
    ) {
        self.check_accesses(vcpu, pcpu, accesses, "back to the host");
        if !self.shadow(vcpu).entry_in_use {
            self.check_lazy_exit(vcpu, pcpu, debug_moves(accesses));
        }
        if let Some(before) = self.host_before.get(&pcpu).copied() {
            self.compare_host(vcpu, pcpu, &before, host);
        }
        if let Some(c) = self.shadow(vcpu).step_count.as_mut() {
            *c += instructions;
        }
        if let ExitReason::Debug { esr, .. } = reason {
            self.on_debug_exit(vcpu, pcpu, *esr);
        }
    }

    /// Invariant 4: the switch touched an unimplemented register (the checking access made
    /// the hyp panic).
    pub(super) fn on_hyp_panic(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        fault: &str,
        accesses: &[AccessRecord],
    ) {
        let msg = format!("the world switch touched an unimplemented register: {fault}");
        let r = self
            .violation(Invariant::NoUnimplementedAccess, vcpu, msg)
            .cpu(pcpu);
        match accesses.last() {
            Some(a) => r.register(a.reg.to_string()).push(),
            None => r.push(),
        }
    }

    /// Invariant 6: state the guest did not use is not moved back either.
    fn check_lazy_exit(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        (moves, first): (usize, Option<String>),
    ) {
        if let Some(first) = first.filter(|_| moves > 0) {
            let msg = format!(
                "the guest did not use its debug registers but the switch back to the host moved {moves} of them, {first} first"
            );
            self.violation(Invariant::Lazy, vcpu, msg)
                .cpu(pcpu)
                .register(first)
                .expected(0)
                .actual(moves as u64)
                .push();
        }
    }

    /// Invariants 7 and 8 on an exit to userspace: a debug exit belongs to a debugging
    /// userspace, and a step exit comes after exactly one instruction.
    fn on_debug_exit(&mut self, vcpu: usize, pcpu: usize, esr: Esr) {
        let s = *self.shadow(vcpu);
        if !s.user_on() {
            let msg = format!(
                "{} exited to userspace but nobody debugs the guest: it belongs to the guest",
                ec_name(esr.ec())
            );
            self.violation(Invariant::EventDelivery, vcpu, msg)
                .cpu(pcpu)
                .actual(esr.bits())
                .push();
            return;
        }
        if esr.ec() == ESR_ELX_EC_SOFTSTP_LOW
            && let Some(n) = s.step_count
        {
            // One instruction per step; none only when an exception entry (an UNDEF or an
            // injected or taken exception: the step of an excepting instruction) came
            // between.
            if n > 1 || (n == 0 && !s.exception_since_step) {
                let msg = format!(
                    "KVM_GUESTDBG_SINGLESTEP: the guest executed {n} instructions between two step exits; exactly one is allowed"
                );
                self.violation(Invariant::UserspaceDebug, vcpu, msg)
                    .cpu(pcpu)
                    .expected(1)
                    .actual(n)
                    .push();
            }
            let s = self.shadow(vcpu);
            s.step_count = Some(0);
            s.exception_since_step = false;
        }
    }

    /// Invariants 2 and 9: the host's registers after the run are those of before the entry
    /// (the first differing DBG*R\<n>, then each other register).
    fn compare_host(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        before: &HostSnapshot,
        after: &HostSnapshot,
    ) {
        for bank in DbgBank::ALL {
            let (b, a) = (&before.banks[bank as usize], &after.banks[bank as usize]);
            if let Some(n) = (0..b.len()).find(|&n| b.get(n) != a.get(n)) {
                let reg = SysReg::Dbg(bank, n as u8);
                let (want, got) = (b[n], a.get(n).copied().unwrap_or(0));
                self.host_changed(
                    vcpu,
                    pcpu,
                    Invariant::HostRestored,
                    &reg.to_string(),
                    want,
                    got,
                );
                return;
            }
        }
        let pairs = [
            (
                "MDSCR_EL1",
                before.mdscr_el1,
                after.mdscr_el1,
                Invariant::HostRestored,
            ),
            (
                "CONTEXTIDR_EL1",
                before.contextidr_el1,
                after.contextidr_el1,
                Invariant::HostRestored,
            ),
            (
                "OSLSR_EL1",
                before.oslsr_el1,
                after.oslsr_el1,
                Invariant::HostRestored,
            ),
            (
                "MDCCINT_EL1",
                before.mdccint_el1,
                after.mdccint_el1,
                Invariant::MdccintMdcr,
            ),
            (
                "MDCR_EL2",
                before.mdcr_el2,
                after.mdcr_el2,
                Invariant::MdccintMdcr,
            ),
        ];
        // VHE: the vcpu's CONTEXTIDR_EL1 and MDCR_EL2 stay loaded from load to put.
        let vhe = self.host_at_load.contains_key(&pcpu);
        for (name, want, got, inv) in pairs {
            let at_put = matches!(name, "CONTEXTIDR_EL1" | "MDCR_EL2");
            if want != got && !(vhe && at_put) {
                self.host_changed(vcpu, pcpu, inv, name, want, got);
            }
        }
    }

    /// VHE: after `vcpu_put` the host has its CONTEXTIDR_EL1 (invariant 2) and its whole
    /// MDCR_EL2 (invariant 9) back, as they were before `vcpu_load`.
    pub(super) fn on_vhe_put(&mut self, vcpu: usize, pcpu: usize, after: &HostSnapshot) {
        let Some(before) = self.host_at_load.get(&pcpu).copied() else {
            return;
        };
        let pairs = [
            (
                "CONTEXTIDR_EL1",
                before.contextidr_el1,
                after.contextidr_el1,
                Invariant::HostRestored,
            ),
            (
                "MDCR_EL2",
                before.mdcr_el2,
                after.mdcr_el2,
                Invariant::MdccintMdcr,
            ),
        ];
        for (name, want, got, inv) in pairs {
            if want != got {
                let msg = format!(
                    "after vcpu_put the host's {name} is {got:#x}; it was {want:#x} before vcpu_load (VHE)"
                );
                self.violation(inv, vcpu, msg)
                    .cpu(pcpu)
                    .register(name)
                    .expected(want)
                    .actual(got)
                    .push();
            }
        }
    }

    fn host_changed(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        inv: Invariant,
        reg: &str,
        want: u64,
        got: u64,
    ) {
        let msg = format!(
            "after the run the host's {reg} is {got:#x}; it was {want:#x} before the entry"
        );
        self.violation(inv, vcpu, msg)
            .cpu(pcpu)
            .register(reg)
            .expected(want)
            .actual(got)
            .push();
    }
}
