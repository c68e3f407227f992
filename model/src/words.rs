//! Register values in words, as traces and counterexamples show them: the bits of MDSCR_EL1,
//! MDCR_EL2 and KVM_GUESTDBG_* by their kernel names. (`explain` decodes every field for
//! `hypdbg decode`; these are the one-line forms.)

use crate::ctrl::{
    DBG_MDSCR_KDE, DBG_MDSCR_MDE, DBG_MDSCR_SS, MDCR_EL2_HPMFZS, MDCR_EL2_HPMN_MASK, MDCR_EL2_TDA,
    MDCR_EL2_TDE, MDCR_EL2_TDOSA, MDCR_EL2_TDRA, MDCR_EL2_TPM, MDCR_EL2_TPMCR, MDCR_EL2_TPMS,
    MDCR_EL2_TTRF,
};
use crate::uapi::GuestDebugControl;

/// The MDSCR_EL1 bits the debug switch cares about, in the kernel's order.
const MDSCR_BITS: [(u64, &str); 3] = [
    (DBG_MDSCR_KDE, "KDE"),
    (DBG_MDSCR_MDE, "MDE"),
    (DBG_MDSCR_SS, "SS"),
];

/// The MDCR_EL2 trap bits named when set (TDE and TDA are always spelled).
const MDCR_BITS: [(u64, &str); 7] = [
    (MDCR_EL2_TDOSA, "TDOSA"),
    (MDCR_EL2_TDRA, "TDRA"),
    (MDCR_EL2_TPM, "TPM"),
    (MDCR_EL2_TPMCR, "TPMCR"),
    (MDCR_EL2_TPMS, "TPMS"),
    (MDCR_EL2_TTRF, "TTRF"),
    (MDCR_EL2_HPMFZS, "HPMFZS"),
];

/// The names of the KDE, MDE and SS bits set in `v`.
///
/// ```
/// assert_eq!(hypdbg_model::words::mdscr_names(0xa000), ["KDE", "MDE"]);
/// ```
pub fn mdscr_names(v: u64) -> Vec<&'static str> {
    MDSCR_BITS
        .iter()
        .filter(|(bit, _)| v & bit != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// MDSCR_EL1 in words: `0xa000 [KDE MDE]`.
pub fn mdscr(v: u64) -> String {
    let parts = mdscr_names(v);
    if parts.is_empty() {
        format!("{v:#x}")
    } else {
        format!("{v:#x} [{}]", parts.join(" "))
    }
}

/// MDCR_EL2 in words: TDE and TDA always spelled, the other trap bits when set, HPMN.
///
/// ```
/// assert_eq!(
///     hypdbg_model::words::mdcr_el2(0xe66),
///     "0xe66 [TDE=0 TDA=1 TDOSA TDRA TPM TPMCR HPMN=6]"
/// );
/// ```
pub fn mdcr_el2(v: u64) -> String {
    let mut parts = vec![
        format!("TDE={}", u8::from(v & MDCR_EL2_TDE != 0)),
        format!("TDA={}", u8::from(v & MDCR_EL2_TDA != 0)),
    ];
    parts.extend(
        MDCR_BITS
            .iter()
            .filter(|(bit, _)| v & bit != 0)
            .map(|(_, n)| n.to_string()),
    );
    parts.push(format!("HPMN={}", v & MDCR_EL2_HPMN_MASK));
    format!("{v:#x} [{}]", parts.join(" "))
}

/// The names of the KVM_GUESTDBG_* bits set in `c` (without the prefix).
pub fn guest_debug_names(c: u32) -> Vec<&'static str> {
    GuestDebugControl::from_bits_truncate(c)
        .iter_names()
        .map(|(n, _)| n)
        .collect()
}

/// KVM_GUESTDBG_* in words: `0x3 [ENABLE|SINGLESTEP]`, bits outside the valid mask called
/// invalid.
pub fn guest_debug(c: u32) -> String {
    let mut parts: Vec<String> = guest_debug_names(c).iter().map(|n| n.to_string()).collect();
    let extra = c & !GuestDebugControl::all().bits();
    if extra != 0 {
        parts.push(format!("invalid {extra:#x}"));
    }
    if parts.is_empty() {
        format!("{c:#x}")
    } else {
        format!("{c:#x} [{}]", parts.join("|"))
    }
}
