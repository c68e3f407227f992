//! What the guest and userspace did, per vcpu: the state a correct flow must produce, and
//! each era's contract for when the debug state is in use.

use hypdbg_hyp::flow::Era;
use hypdbg_model::ctrl::{DBG_MDSCR_MDE, DBG_SPSR_SS, OSLSR_EL1_OSLK, mdscr_uses_debug};
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebugArch};
use hypdbg_model::{DbgBank, SysReg};

use super::{Checker, Invariant};

/// The register blocks the guest and userspace wrote, per vcpu (kept apart from [`Shadow`]
/// so that the small state can be copied freely).
#[derive(Clone, Debug, Default)]
pub struct Blocks {
    /// The guest's own DBG*R\<n> values.
    pub regs: KvmGuestDebugArch,
    /// The block userspace last passed with USE_HW.
    pub user_hw: KvmGuestDebugArch,
}

impl Blocks {
    /// The value of register `n` of `bank` in the guest's block (`users`: false) or in
    /// userspace's (true).
    pub fn value(&self, users: bool, bank: DbgBank, n: usize) -> u64 {
        let block = if users { &self.user_hw } else { &self.regs };
        block.bank(bank)[n]
    }
}

/// What the guest and userspace did, per vcpu: the expected state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shadow {
    /// The guest's MDSCR_EL1.
    pub mdscr: u64,
    /// The guest's MDCCINT_EL1.
    pub mdccint: u64,
    /// The guest's OS lock.
    pub oslk: bool,
    /// Userspace's current control (0 unless ENABLE).
    pub control: GuestDebugControl,
    /// Eras 1/2: a trapped write since the last entry.
    pub dirty_write: bool,
    /// Era 3: the guest's MDSCR at the last load.
    pub mdscr_at_load: u64,
    /// Era 3: a trapped access since the last load.
    pub accessed_since_load: bool,
    /// Whether the current entry was expected to move debug state.
    pub entry_in_use: bool,
    /// Userspace single-step: guest instructions since the last step exit.
    pub step_count: Option<u64>,
    /// The guest's own PSTATE.SS while userspace steps it (None: not predictable).
    pub ss_guest: Option<bool>,
    /// PSTATE.SS as userspace last saw it.
    pub visible_ss: bool,
    /// Exceptions userspace injected that the guest has not taken yet.
    pub injected: u32,
    /// An exception entry (UNDEF, injection, guest exception) since the last step exit.
    pub exception_since_step: bool,
}

impl Shadow {
    /// Whether the host owns debug (era 3's HOST_OWNED: userspace debugs, or the OS lock).
    pub fn host_owned(&self) -> bool {
        !self.control.is_empty() || self.oslk
    }

    /// Whether userspace debugs the guest.
    pub fn user_on(&self) -> bool {
        !self.control.is_empty()
    }

    /// Whether the flow's contract says the debug state is in use at an entry, and which
    /// block (userspace's: true).
    pub fn expectation(&self, era: Era) -> (bool, bool) {
        let use_hw = self.control.contains(GuestDebugControl::USE_HW);
        match era {
            Era::One | Era::Two => {
                let eff = if use_hw {
                    self.mdscr | DBG_MDSCR_MDE
                } else if self.oslk {
                    self.mdscr & !DBG_MDSCR_MDE
                } else {
                    self.mdscr
                };
                (use_hw || mdscr_uses_debug(eff) || self.dirty_write, use_hw)
            }
            Era::Three => {
                let host = self.host_owned();
                let in_use =
                    host || mdscr_uses_debug(self.mdscr_at_load) || self.accessed_since_load;
                (in_use, host)
            }
        }
    }

    /// `kvm_arch_vcpu_load`: era 3 decides ownership from the MDSCR_EL1 of now.
    pub fn on_load(&mut self) {
        self.mdscr_at_load = self.mdscr;
        self.accessed_since_load = false;
    }

    /// Userspace injected an exception.
    pub fn on_inject(&mut self) {
        self.injected += 1;
        self.exception_since_step = true;
    }

    /// KVM_SET_GUEST_DEBUG accepted `control`: track the session and the step counter.
    fn on_control(&mut self, c: GuestDebugControl) {
        let was_stepping = self.control.contains(GuestDebugControl::SINGLESTEP);
        self.control = if c.contains(GuestDebugControl::ENABLE) {
            c
        } else {
            GuestDebugControl::empty()
        };
        let stepping = self.control.contains(GuestDebugControl::SINGLESTEP);
        if stepping && !was_stepping {
            self.step_count = Some(0);
            self.ss_guest = Some(self.visible_ss);
        } else if !stepping {
            self.step_count = None;
        }
    }
}

impl Checker {
    pub(super) fn on_set_guest_debug(
        &mut self,
        vcpu: usize,
        control: u32,
        arch: &KvmGuestDebugArch,
    ) {
        let s = self.shadow(vcpu);
        s.on_control(GuestDebugControl::from_bits_truncate(control));
        if s.control.contains(GuestDebugControl::USE_HW) {
            self.blocks(vcpu).user_hw = *arch;
        }
    }

    pub(super) fn on_set_one_reg(&mut self, vcpu: usize, reg: SysReg, value: u64) {
        if let SysReg::Dbg(bank, n) = reg {
            self.blocks(vcpu).regs.bank_mut(bank)[usize::from(n)] = value;
        }
        let s = self.shadow(vcpu);
        match reg {
            SysReg::MdscrEl1 => s.mdscr = value,
            SysReg::MdccintEl1 => s.mdccint = value,
            SysReg::OslsrEl1 => s.oslk = value & OSLSR_EL1_OSLK != 0,
            _ => {}
        }
    }

    /// `kvm_arch_vcpu_put`: PSTATE.SS as userspace will see it must be the guest's own while
    /// userspace steps it (invariant 7).
    pub(super) fn on_put(&mut self, vcpu: usize, pstate: u64) {
        let s = self.shadow(vcpu);
        let visible = pstate & DBG_SPSR_SS != 0;
        s.visible_ss = visible;
        if let Some(own) = s.ss_guest
            && visible != own
        {
            let msg = format!(
                "between runs the guest's PSTATE.SS reads {} while userspace single-steps it; the guest's own is {}",
                visible as u8, own as u8
            );
            self.violation(Invariant::UserspaceDebug, vcpu, msg)
                .register("PSTATE.SS")
                .expected(own.into())
                .actual(visible.into())
                .push();
        }
    }
}
