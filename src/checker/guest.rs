//! What the guest did: its MSR/MRS (trapped or not), the trap handler's verdicts, the
//! exceptions its EL1 took; and what userspace read back through ONE_REG. Invariants 3
//! (the guest reads back what it wrote) and 8 (event delivery).

use hypdbg_hyp::events::GuestEvent;
use hypdbg_hyp::flow::Era;
use hypdbg_model::SysReg;
use hypdbg_model::ctrl::{OSLSR_EL1_OSLK, OSLSR_EL1_OSLM_IMPLEMENTED};
use hypdbg_model::esr::{ESR_ELX_EC_BRK64, Esr, ec_name};

use super::{Checker, Invariant};

/// A register whose accesses decide ownership: DBG{B,W}{C,V}R\<n>, MDSCR_EL1, MDCCINT_EL1.
fn is_debug_reg(reg: SysReg) -> bool {
    matches!(reg, SysReg::Dbg(..) | SysReg::MdscrEl1 | SysReg::MdccintEl1)
}

impl Checker {
    /// The guest's own value of `reg` and, in words, what it is.
    fn own_value(&mut self, vcpu: usize, reg: SysReg) -> Option<(u64, &'static str)> {
        let s = *self.shadow(vcpu);
        Some(match reg {
            SysReg::Dbg(bank, n) => (
                self.blocks(vcpu).value(false, bank, usize::from(n)),
                "what it wrote",
            ),
            SysReg::MdscrEl1 => (s.mdscr, "what it wrote"),
            SysReg::MdccintEl1 => (s.mdccint, "what it wrote"),
            SysReg::OslsrEl1 => (
                OSLSR_EL1_OSLM_IMPLEMENTED | if s.oslk { OSLSR_EL1_OSLK } else { 0 },
                "the OS lock state it set",
            ),
            // sys_regs.c: trap_raz_wi (KVM emulates no ROM table and no powerdown request).
            SysReg::DbgauthstatusEl1 => (
                hypdbg_model::ctrl::DBGAUTHSTATUS_EL1_HW,
                "the host's value (trap_dbgauthstatus_el1)",
            ),
            r if r.is_raz_wi() && r != SysReg::OsdlrEl1 => (0, "KVM's trap_raz_wi: reads as zero"),
            _ => return None,
        })
    }

    /// Invariant 3: a read of `reg` (`how`: by the guest's MRS or KVM_GET_ONE_REG) returned
    /// the guest's own value.
    pub(super) fn check_read(&mut self, vcpu: usize, reg: SysReg, value: u64, how: &str) {
        let Some((expected, what)) = self.own_value(vcpu, reg) else {
            return;
        };
        if value != expected {
            let msg = format!(
                "{how} of {reg} returned {value:#x}; the guest's own value is {expected:#x} ({what})"
            );
            self.violation(Invariant::GuestReadsBack, vcpu, msg)
                .register(reg.to_string())
                .expected(expected)
                .actual(value)
                .push();
        }
    }

    /// `kvm_handle_sys_reg`: an access the architecture defines must not be made UNDEFINED
    /// (an implemented DBG*R\<n>, MDSCR_EL1, MDCCINT_EL1, or a write to OSLAR_EL1); an
    /// emulated instruction counts as one step.
    pub(super) fn on_trap(
        &mut self,
        vcpu: usize,
        reg: Option<SysReg>,
        is_write: bool,
        undef: bool,
    ) {
        let defined = match reg {
            Some(SysReg::Dbg(bank, n)) => usize::from(n) < self.features.count(bank),
            Some(SysReg::MdscrEl1 | SysReg::MdccintEl1) => true,
            Some(SysReg::OslarEl1) => is_write,
            // trap_raz_wi and trap_dbgauthstatus_el1: emulated, never UNDEFINED.
            Some(r) => r.is_raz_wi() || r == SysReg::DbgauthstatusEl1,
            _ => false,
        };
        if undef && defined {
            let r = reg.map(|r| r.to_string()).unwrap_or_default();
            let msg = format!(
                "the guest's {} of {r} trapped and KVM made it UNDEFINED; the register is implemented",
                if is_write { "MSR" } else { "MRS" }
            );
            self.violation(Invariant::GuestReadsBack, vcpu, msg)
                .register(r)
                .push();
        }
        if undef {
            // The instruction generated an exception (KVM injects UNDEF).
            self.shadow(vcpu).exception_since_step = true;
        } else {
            self.on_emulated(vcpu);
        }
    }

    /// KVM completed an instruction for the guest (a trapped access, an MMIO access): it
    /// counts as one step.
    pub(super) fn on_emulated(&mut self, vcpu: usize) {
        if let Some(c) = self.shadow(vcpu).step_count.as_mut() {
            *c += 1;
        }
    }

    pub(super) fn on_guest(&mut self, vcpu: usize, what: &GuestEvent) {
        match what {
            GuestEvent::SysRegWrite {
                reg,
                value,
                trapped,
            } => self.on_guest_write(vcpu, *reg, *value, *trapped),
            GuestEvent::SysRegRead {
                reg,
                value,
                trapped,
            } => {
                let host_owned = self.shadow(vcpu).host_owned();
                self.check_read(vcpu, *reg, *value, "the guest's MRS");
                if *trapped && is_debug_reg(*reg) && !host_owned {
                    self.shadow(vcpu).accessed_since_load = true;
                }
            }
            GuestEvent::Exception { esr, elr, .. } => self.on_guest_exception(vcpu, *esr, *elr),
            GuestEvent::Executed { .. }
            | GuestEvent::Access { .. }
            | GuestEvent::Unpredictable { .. } => {}
        }
    }

    /// The guest's MSR: the shadow learns the value; a trapped write of a debug register
    /// dirties (eras 1, 2) or promotes ownership (era 3); a write to OSLSR_EL1 must UNDEF.
    fn on_guest_write(&mut self, vcpu: usize, reg: SysReg, value: u64, trapped: bool) {
        let host_owned = self.shadow(vcpu).host_owned();
        if let SysReg::Dbg(bank, n) = reg {
            self.blocks(vcpu).regs.bank_mut(bank)[usize::from(n)] = value;
        }
        let era = self.era;
        let s = self.shadow(vcpu);
        match reg {
            SysReg::Dbg(..) => {}
            SysReg::MdscrEl1 => s.mdscr = value,
            SysReg::MdccintEl1 => s.mdccint = value,
            SysReg::OslarEl1 => {
                s.oslk = value & 1 != 0;
                if era == Era::Three {
                    // kvm_debug_handle_oslar: a full put + load.
                    s.on_load();
                }
            }
            SysReg::OslsrEl1 => {
                let msg =
                    "a guest MSR to the read-only OSLSR_EL1 completed; it must be UNDEFINED".into();
                self.violation(Invariant::GuestReadsBack, vcpu, msg)
                    .register(reg.to_string())
                    .actual(value)
                    .push();
                return;
            }
            _ => return,
        }
        if trapped && is_debug_reg(reg) {
            s.dirty_write = true;
            if !host_owned {
                s.accessed_since_load = true;
            }
        }
    }

    /// Invariant 8: a debug exception the guest's EL1 took must not have been userspace's
    /// (TDE routes those to EL2) nor one its OS lock suppresses.
    fn on_guest_exception(&mut self, vcpu: usize, esr: Esr, elr: u64) {
        let s = *self.shadow(vcpu);
        // The guest's own PSTATE.SS now follows its own exception handling.
        let sh = self.shadow(vcpu);
        sh.ss_guest = None;
        sh.exception_since_step = true;
        if !esr.is_debug() {
            return;
        }
        if s.injected > 0 {
            self.shadow(vcpu).injected -= 1;
            return;
        }
        let ec = esr.ec();
        let why = if s.user_on() {
            "while userspace debugs it: with MDCR_EL2.TDE it must exit to userspace"
        } else if s.oslk && ec != ESR_ELX_EC_BRK64 {
            "while its OS lock is set: breakpoints, watchpoints and step must be suppressed"
        } else {
            return;
        };
        let msg = format!("the guest's EL1 took {} at {elr:#x} {why}", ec_name(ec));
        self.violation(Invariant::EventDelivery, vcpu, msg)
            .actual(esr.bits())
            .push();
    }
}
