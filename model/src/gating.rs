//! Whether a debug event is generated, and where it is taken (Arm ARM D2.3 and the shared
//! pseudocode AArch64.GenerateDebugExceptionsFrom, AArch64.DebugTarget,
//! DebugExceptionReturnSS), for a Non-secure guest at EL0 or EL1 under a hypervisor at EL2.

use serde::{Deserialize, Serialize};

use crate::El;
use crate::ctrl::{
    DBG_MDSCR_KDE, DBG_MDSCR_MDE, DBG_MDSCR_SS, DBG_SPSR_SS, MDCR_EL2_TDA, MDCR_EL2_TDE,
    MDCR_EL2_TDOSA, MDCR_EL2_TDRA, PSR_D_BIT,
};
use crate::esr::Esr;
use crate::sysreg::{SysReg, TrapBit};

/// The kinds of debug event a guest can cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DebugEvent {
    /// A hardware breakpoint matched the PC.
    Breakpoint,
    /// A hardware watchpoint matched an access (`wnr`: it was a store).
    Watchpoint {
        /// Write-not-read.
        wnr: bool,
    },
    /// A software step exception (`stepped`: an instruction completed, ISV = 1).
    SoftwareStep {
        /// Whether an instruction was stepped before the exception.
        stepped: bool,
    },
    /// A BRK #imm instruction.
    Brk(u16),
}

/// The live state that decides whether debug exceptions are generated: what the PE reads when
/// the guest executes (the *physical* registers, whatever KVM loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugContext {
    /// The exception level the guest executes at.
    pub el: El,
    /// PSTATE.D.
    pub pstate_d: bool,
    /// The live MDSCR_EL1.
    pub mdscr: u64,
    /// The live MDCR_EL2.
    pub mdcr_el2: u64,
    /// The physical OSLSR_EL1.OSLK (the host's; a guest's OS lock is KVM's emulation).
    pub oslk: bool,
    /// The physical OS double lock (OSDLR_EL1.DLK with the core powered).
    pub os_double_lock: bool,
}

impl DebugContext {
    /// AArch64.DebugTarget(): EL2 when MDCR_EL2.TDE (or HCR_EL2.TGE) routes debug exceptions
    /// there, else EL1.
    pub const fn debug_target(&self) -> El {
        if self.mdcr_el2 & MDCR_EL2_TDE != 0 {
            El::El2
        } else {
            El::El1
        }
    }

    /// AArch64.GenerateDebugExceptionsFrom(PSTATE.EL, NonSecure, PSTATE.D).
    pub const fn generate_debug_exceptions(&self) -> bool {
        self.generate_debug_exceptions_from(self.el, self.pstate_d)
    }

    /// AArch64.GenerateDebugExceptionsFrom(from_el, NonSecure, mask).
    pub const fn generate_debug_exceptions_from(&self, from: El, mask: bool) -> bool {
        if self.oslk || self.os_double_lock {
            return false;
        }
        let target = self.debug_target();
        if from.number() == target.number() {
            self.mdscr & DBG_MDSCR_KDE != 0 && !mask
        } else {
            target.number() > from.number()
        }
    }

    /// AArch64.CheckBreakpoint / CheckWatchpoint enable: MDSCR_EL1.MDE and generation.
    pub const fn breakpoints_enabled(&self) -> bool {
        self.mdscr & DBG_MDSCR_MDE != 0 && self.generate_debug_exceptions()
    }

    /// Software step is active (CheckSoftwareStep): MDSCR_EL1.SS and generation.
    pub const fn step_active(&self) -> bool {
        self.mdscr & DBG_MDSCR_SS != 0 && self.generate_debug_exceptions()
    }

    /// Where an event is taken: the debug target for bp/wp/step; for BRK (always generated,
    /// AArch64.SoftwareBreakpoint) EL2 with TDE, else EL1.
    pub const fn target_of(&self, _event: DebugEvent) -> El {
        self.debug_target()
    }

    /// The syndrome the event is reported with at its target EL.
    pub fn syndrome(&self, event: DebugEvent) -> Esr {
        let same_el = self.el.number() == self.target_of(event).number();
        match event {
            DebugEvent::Breakpoint => Esr::breakpoint(same_el),
            DebugEvent::Watchpoint { wnr } => Esr::watchpoint(same_el, wnr),
            DebugEvent::SoftwareStep { stepped } => Esr::software_step(same_el, stepped),
            DebugEvent::Brk(imm) => Esr::brk(imm),
        }
    }

    /// DebugExceptionReturnSS(spsr): PSTATE.SS after an ERET at the current EL to the EL and
    /// D bit in `spsr`. The step state becomes active-not-pending only when debug exceptions
    /// are disabled at the source and enabled at the destination.
    pub const fn exception_return_ss(&self, spsr: u64, dest: El) -> bool {
        let enabled_at_source = self.generate_debug_exceptions();
        let enabled_at_dest = self.generate_debug_exceptions_from(dest, spsr & PSR_D_BIT != 0);
        self.mdscr & DBG_MDSCR_SS != 0
            && !enabled_at_source
            && enabled_at_dest
            && spsr & DBG_SPSR_SS != 0
    }
}

/// Whether a guest MSR/MRS of `reg` traps to EL2 under `mdcr_el2` (MDCR_EL2.TDA, TDOSA, TDRA;
/// with TDE = 1 all three behave as 1).
pub const fn access_traps(reg: SysReg, mdcr_el2: u64) -> bool {
    let tde = mdcr_el2 & MDCR_EL2_TDE != 0;
    match reg.trapped_by() {
        Some(TrapBit::Tda) => tde || mdcr_el2 & MDCR_EL2_TDA != 0,
        Some(TrapBit::Tdosa) => tde || mdcr_el2 & MDCR_EL2_TDOSA != 0,
        Some(TrapBit::Tdra) => tde || mdcr_el2 & MDCR_EL2_TDRA != 0,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysreg::DbgBank;

    fn ctx(el: El, d: bool, mdscr: u64, mdcr: u64) -> DebugContext {
        DebugContext {
            el,
            pstate_d: d,
            mdscr,
            mdcr_el2: mdcr,
            oslk: false,
            os_double_lock: false,
        }
    }

    #[test]
    fn same_el_needs_kde_and_d_clear() {
        let mde = DBG_MDSCR_MDE;
        assert!(!ctx(El::El1, false, mde, 0).breakpoints_enabled());
        assert!(ctx(El::El1, false, mde | DBG_MDSCR_KDE, 0).breakpoints_enabled());
        assert!(!ctx(El::El1, true, mde | DBG_MDSCR_KDE, 0).breakpoints_enabled());
        // EL0 is below the debug target: KDE and D do not matter, MDE does.
        assert!(ctx(El::El0, true, mde, 0).breakpoints_enabled());
        assert!(!ctx(El::El0, false, DBG_MDSCR_KDE, 0).breakpoints_enabled());
    }

    #[test]
    fn tde_routes_to_el2_whatever_kde_and_d() {
        let c = ctx(El::El1, true, DBG_MDSCR_MDE, MDCR_EL2_TDE);
        assert_eq!(c.debug_target(), El::El2);
        assert!(c.breakpoints_enabled());
        assert_eq!(c.syndrome(DebugEvent::Breakpoint).ec(), 0x30);
        assert_eq!(c.syndrome(DebugEvent::Brk(0)).ec(), 0x3c);
        // Still needs MDE for breakpoints and SS for step.
        assert!(!ctx(El::El1, false, 0, MDCR_EL2_TDE).breakpoints_enabled());
        assert!(ctx(El::El1, true, DBG_MDSCR_SS, MDCR_EL2_TDE).step_active());
        let own = ctx(El::El1, false, DBG_MDSCR_KDE | DBG_MDSCR_MDE, 0);
        assert_eq!(
            own.syndrome(DebugEvent::Watchpoint { wnr: true }).ec(),
            0x35
        );
        assert_eq!(
            ctx(El::El0, false, 0, 0)
                .syndrome(DebugEvent::Breakpoint)
                .ec(),
            0x30
        );
    }

    #[test]
    fn os_lock_suppresses_generation() {
        let mut c = ctx(
            El::El0,
            false,
            DBG_MDSCR_MDE | DBG_MDSCR_SS | DBG_MDSCR_KDE,
            MDCR_EL2_TDE,
        );
        c.oslk = true;
        assert!(!c.breakpoints_enabled() && !c.step_active());
        c.oslk = false;
        c.os_double_lock = true;
        assert!(!c.generate_debug_exceptions());
    }

    #[test]
    fn eret_enters_active_not_pending_only_from_a_disabled_source() {
        let ss = DBG_MDSCR_SS | DBG_MDSCR_KDE;
        // EL1 handler (D = 1) returning to EL1 with D = 0 and SPSR.SS = 1: active-not-pending.
        assert!(ctx(El::El1, true, ss, 0).exception_return_ss(DBG_SPSR_SS | 0b0101, El::El1));
        // SPSR.SS = 0: active-pending (PSTATE.SS = 0).
        assert!(!ctx(El::El1, true, ss, 0).exception_return_ss(0b0101, El::El1));
        // Returning with D = 1 masks debug at the destination: inactive.
        assert!(
            !ctx(El::El1, true, ss, 0).exception_return_ss(DBG_SPSR_SS | PSR_D_BIT | 5, El::El1)
        );
        // No MDSCR.SS: always 0.
        assert!(
            !ctx(El::El1, true, DBG_MDSCR_KDE, 0).exception_return_ss(DBG_SPSR_SS | 5, El::El1)
        );
    }

    #[test]
    fn traps_follow_mdcr_and_tde() {
        let bcr = SysReg::Dbg(DbgBank::Bcr, 0);
        assert!(access_traps(bcr, MDCR_EL2_TDA));
        assert!(!access_traps(bcr, MDCR_EL2_TDOSA | MDCR_EL2_TDRA));
        assert!(access_traps(bcr, MDCR_EL2_TDE));
        assert!(access_traps(SysReg::OslarEl1, MDCR_EL2_TDOSA));
        assert!(!access_traps(SysReg::OslarEl1, MDCR_EL2_TDA));
        assert!(access_traps(SysReg::MdrarEl1, MDCR_EL2_TDE));
        assert!(!access_traps(SysReg::ContextidrEl1, u64::MAX));
    }
}
