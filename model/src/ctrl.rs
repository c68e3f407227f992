//! MDSCR_EL1, MDCR_EL2, OSLSR_EL1/OSLAR_EL1 and the PSTATE/SPSR debug bits.
//!
//! MDSCR_EL1 and MDCR_EL2 are the `arm-sysregs` crate's generated types; this module adds the
//! constants the kernel spells `DBG_MDSCR_*`, `MDCR_EL2_*`, `DBG_SPSR_*` and `OSLSR_EL1_*`.

pub use arm_sysregs::el1::registers::MdscrEl1;
pub use arm_sysregs::el2::registers::MdcrEl2;

/// MDSCR_EL1.SS, software step enable (kernel `DBG_MDSCR_SS`).
pub const DBG_MDSCR_SS: u64 = MdscrEl1::SS.bits();
/// MDSCR_EL1.KDE, debug exceptions at the same EL (kernel `DBG_MDSCR_KDE`).
pub const DBG_MDSCR_KDE: u64 = MdscrEl1::KDE.bits();
/// MDSCR_EL1.MDE, breakpoint/watchpoint enable (kernel `DBG_MDSCR_MDE`).
pub const DBG_MDSCR_MDE: u64 = MdscrEl1::MDE.bits();
/// DBGAUTHSTATUS_EL1 of every modelled CPU: Secure and Non-secure invasive and non-invasive
/// debug implemented and enabled (each 2-bit field 0b11). KVM hands the guest the host's.
pub const DBGAUTHSTATUS_EL1_HW: u64 = 0xff;
/// MDSCR_EL1.SS as v6.14+ code spells it (`MDSCR_EL1_SS`, generated from arch/arm64/tools/sysreg).
pub const MDSCR_EL1_SS: u64 = DBG_MDSCR_SS;
/// MDSCR_EL1.KDE as v6.14+ code spells it.
pub const MDSCR_EL1_KDE: u64 = DBG_MDSCR_KDE;
/// MDSCR_EL1.MDE as v6.14+ code spells it.
pub const MDSCR_EL1_MDE: u64 = DBG_MDSCR_MDE;

/// MDCR_EL2.HPMN mask (bits \[4:0\]).
pub const MDCR_EL2_HPMN_MASK: u64 = MdcrEl2::HPMN_MASK << MdcrEl2::HPMN_SHIFT;
/// MDCR_EL2.TPMCR.
pub const MDCR_EL2_TPMCR: u64 = MdcrEl2::TPMCR.bits();
/// MDCR_EL2.TPM.
pub const MDCR_EL2_TPM: u64 = MdcrEl2::TPM.bits();
/// MDCR_EL2.TDE: route debug exceptions to EL2 (and act as TDA|TDOSA|TDRA).
pub const MDCR_EL2_TDE: u64 = MdcrEl2::TDE.bits();
/// MDCR_EL2.TDA: trap debug register accesses.
pub const MDCR_EL2_TDA: u64 = MdcrEl2::TDA.bits();
/// MDCR_EL2.TDOSA: trap OS lock / power-down register accesses.
pub const MDCR_EL2_TDOSA: u64 = MdcrEl2::TDOSA.bits();
/// MDCR_EL2.TDRA: trap MDRAR_EL1.
pub const MDCR_EL2_TDRA: u64 = MdcrEl2::TDRA.bits();
/// MDCR_EL2.TPMS: trap SPE.
pub const MDCR_EL2_TPMS: u64 = MdcrEl2::TPMS.bits();
/// MDCR_EL2.TTRF: trap trace filter.
pub const MDCR_EL2_TTRF: u64 = MdcrEl2::TTRF.bits();
/// MDCR_EL2.HPMFZS (bit 36): the reason MDCR_EL2 is a 64-bit register (FEAT_SPEv1p2 era).
pub const MDCR_EL2_HPMFZS: u64 = MdcrEl2::HPMFZS.bits();

/// SPSR_ELx.SS (bit 21), the saved PSTATE.SS (kernel `DBG_SPSR_SS`).
pub const DBG_SPSR_SS: u64 = 1 << 21;
/// SPSR_ELx.D (bit 9), the saved PSTATE.D debug mask.
pub const PSR_D_BIT: u64 = 1 << 9;
/// SPSR_ELx.{D,A,I,F} (bits 9..6): every exception entry sets them (kernel `PSR_{D,A,I,F}_BIT`).
pub const PSR_DAIF_MASK: u64 = 0xf << 6;
/// KVM's vcpu reset PSTATE: EL1h with D, A, I, F masked (kernel `VCPU_RESET_PSTATE_EL1`).
pub const VCPU_RESET_PSTATE_EL1: u64 = PSR_MODE_EL1H | PSR_DAIF_MASK;
/// SPSR_ELx.M\[3:0\] for EL0t.
pub const PSR_MODE_EL0T: u64 = 0b0000;
/// SPSR_ELx.M\[3:0\] for EL1h.
pub const PSR_MODE_EL1H: u64 = 0b0101;
/// SPSR_ELx.M\[3:0\] mask.
pub const PSR_MODE_MASK: u64 = 0b1111;

/// OSLSR_EL1.OSLK (bit 1): the OS lock is locked.
pub const OSLSR_EL1_OSLK: u64 = 1 << 1;
/// OSLSR_EL1.OSLM = 0b10 (bit 3): the OS lock is implemented (the kernel's reset value).
pub const OSLSR_EL1_OSLM_IMPLEMENTED: u64 = 1 << 3;
/// OSLAR_EL1.OSLK (bit 0).
pub const OSLAR_EL1_OSLK: u64 = 1;

/// Whether an MDSCR_EL1 value asks for debug state (KDE or MDE): the test the kernel uses to
/// decide that the guest's debug registers must be switched.
pub const fn mdscr_uses_debug(mdscr: u64) -> bool {
    mdscr & (DBG_MDSCR_KDE | DBG_MDSCR_MDE) != 0
}

/// The exception level an SPSR_ELx.M value returns to.
pub fn spsr_el(spsr: u64) -> crate::El {
    if spsr & PSR_MODE_MASK == PSR_MODE_EL0T {
        crate::El::El0
    } else {
        crate::El::El1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_architectural_bits() {
        assert_eq!(DBG_MDSCR_SS, 1);
        assert_eq!(DBG_MDSCR_KDE, 1 << 13);
        assert_eq!(DBG_MDSCR_MDE, 1 << 15);
        assert_eq!(MDCR_EL2_HPMN_MASK, 0x1f);
        assert_eq!(MDCR_EL2_TDE, 1 << 8);
        assert_eq!(MDCR_EL2_TDA, 1 << 9);
        assert_eq!(MDCR_EL2_TDOSA, 1 << 10);
        assert_eq!(MDCR_EL2_TDRA, 1 << 11);
        assert_eq!(MDCR_EL2_HPMFZS, 1 << 36);
        assert!(mdscr_uses_debug(DBG_MDSCR_MDE) && mdscr_uses_debug(DBG_MDSCR_KDE));
        assert!(!mdscr_uses_debug(DBG_MDSCR_SS));
        assert_eq!(spsr_el(PSR_MODE_EL1H | PSR_D_BIT), crate::El::El1);
        assert_eq!(spsr_el(DBG_SPSR_SS), crate::El::El0);
    }
}
