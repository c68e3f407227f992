//! ID_AA64DFR0_EL1, AArch64 Debug Feature Register 0 (Arm ARM D23.2.59).
//!
//! The BRPs, WRPs and CTX_CMPs fields hold the number of implemented units **minus one**; the
//! kernel's `save_debug(ptr, reg, nr)` switches on that raw value. Decoding uses the
//! `arm-sysregs` crate's `IdAa64dfr0El1`, generated from Arm's machine-readable specification.

pub use arm_sysregs::el1::registers::IdAa64dfr0El1;
use serde::Serialize;

use crate::error::ModelError;

/// DebugVer values that name an AArch64 debug architecture (Armv8.0 and later).
const DEBUGVER_V8: u8 = 0b0110;
/// DebugVer of Armv8.8 debug, the most KVM shows a guest (`ID_REG_LIMIT_FIELD_ENUM(..., V8P8)`).
const DEBUGVER_V8P8: u64 = 0xa;
/// The fields of ID_AA64DFR0_EL1 userspace may lower through KVM_SET_ONE_REG (v6.7+
/// `ID_FILTERED(ID_AA64DFR0_EL1, ..., DoubleLock | WRPs | PMUVer | DebugVer)`): each a 4-bit
/// field at this shift.
const WRITABLE_SHIFTS: [u32; 4] = [0, 8, 20, 36];

/// `sanitise_id_aa64dfr0_el1`: the ID_AA64DFR0_EL1 a guest sees for a host value: DebugVer
/// capped at Armv8.8, SPE (PMSVer), TRBE (TraceBuffer) and BRBE hidden. BRPs, WRPs and
/// CTX_CMPs are the host's.
pub const fn sanitise_id_aa64dfr0_el1(host: u64) -> u64 {
    let mut v = host;
    if v & 0xf > DEBUGVER_V8P8 {
        v = (v & !0xf) | DEBUGVER_V8P8;
    }
    v & !((0xf << 32) | (0xf << 44) | (0xf << 52))
}

/// `set_id_aa64dfr0_el1` / `arm64_check_features`: whether userspace may replace the VM's
/// ID_AA64DFR0_EL1 `cur` by `new`: only DoubleLock, WRPs, PMUVer and DebugVer may differ, and
/// only downwards (BRPs and CTX_CMPs are locked: the kernel answers -E2BIG).
pub fn id_aa64dfr0_write_is_safe(cur: u64, new: u64) -> bool {
    let mut mask = 0u64;
    for sh in WRITABLE_SHIFTS {
        let (c, n) = ((cur >> sh) & 0xf, (new >> sh) & 0xf);
        if n > c {
            return false;
        }
        mask |= 0xf << sh;
    }
    cur & !mask == new & !mask
}

/// The debug resources a physical CPU implements, decoded from ID_AA64DFR0_EL1 and validated.
///
/// ```
/// use hypdbg_model::DebugFeatures;
/// let a57 = DebugFeatures::new(0x1030_5106).unwrap();
/// assert_eq!((a57.brps(), a57.wrps()), (5, 3)); // raw fields: 6 and 4 units
/// assert_eq!((a57.num_brps(), a57.num_wrps(), a57.num_ctx_cmps()), (6, 4, 2));
/// assert!(DebugFeatures::new(0x0000_5106).is_err()); // WRPs = 0: fewer than 2 watchpoints
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct DebugFeatures {
    raw: u64,
    debugver: u8,
    brps: u8,
    wrps: u8,
    ctx_cmps: u8,
    pmuver: u8,
    pmsver: u8,
    tracebuffer: u8,
}

impl DebugFeatures {
    /// Decode and validate a raw ID_AA64DFR0_EL1 value.
    pub fn new(raw: u64) -> Result<Self, ModelError> {
        let reg = IdAa64dfr0El1::from_bits_retain(raw);
        let f = DebugFeatures {
            raw,
            debugver: reg.debugver(),
            brps: reg.brps(),
            wrps: reg.wrps(),
            ctx_cmps: reg.ctx_cmps(),
            pmuver: reg.pmuver(),
            pmsver: reg.pmsver(),
            tracebuffer: reg.tracebuffer(),
        };
        let invalid = |rule: String| Err(ModelError::InvalidDfr0 { value: raw, rule });
        if f.debugver < DEBUGVER_V8 {
            return invalid(format!(
                "DebugVer = {:#x} is not an AArch64 debug architecture (Armv8.0 is 0x6)",
                f.debugver
            ));
        }
        if f.brps == 0 {
            return invalid(
                "BRPs = 0 means 1 breakpoint; the architecture requires at least 2".into(),
            );
        }
        if f.wrps == 0 {
            return invalid(
                "WRPs = 0 means 1 watchpoint; the architecture requires at least 2".into(),
            );
        }
        if f.ctx_cmps > f.brps {
            return invalid(format!(
                "CTX_CMPs = {} ({} context-aware breakpoints) exceeds BRPs = {} ({} breakpoints): \
                 context-aware breakpoints are the highest-numbered breakpoints",
                f.ctx_cmps,
                f.ctx_cmps + 1,
                f.brps,
                f.brps + 1
            ));
        }
        Ok(f)
    }

    /// Build a valid value from unit counts (2..=16 breakpoints and watchpoints, 1..=breakpoints
    /// context-aware), DebugVer = Armv8.0.
    pub fn from_counts(num_brps: u8, num_wrps: u8, num_ctx: u8) -> Result<Self, ModelError> {
        let check = |what: &'static str, n: u8, lo: u8, hi: u8, rule: &'static str| {
            if n < lo || n > hi {
                Err(ModelError::BadField {
                    what,
                    value: n.into(),
                    rule,
                })
            } else {
                Ok(())
            }
        };
        check(
            "breakpoints",
            num_brps,
            2,
            16,
            "the architecture implements 2 to 16 breakpoints",
        )?;
        check(
            "watchpoints",
            num_wrps,
            2,
            16,
            "the architecture implements 2 to 16 watchpoints",
        )?;
        check(
            "context-aware breakpoints",
            num_ctx,
            1,
            num_brps,
            "at least 1 and at most the number of breakpoints",
        )?;
        let reg = IdAa64dfr0El1::empty()
            .with_debugver(DEBUGVER_V8)
            .with_brps(num_brps - 1)
            .with_wrps(num_wrps - 1)
            .with_ctx_cmps(num_ctx - 1);
        Self::new(reg.bits())
    }

    /// The raw register value.
    pub const fn raw(&self) -> u64 {
        self.raw
    }
    /// DebugVer (6 = v8.0, 7 = v8.1, 8 = v8.2, 9 = v8.4, 0xA = v8.8, 0xB = v8.9).
    pub const fn debugver(&self) -> u8 {
        self.debugver
    }
    /// The raw BRPs field: number of breakpoints minus one (the kernel's `nr`).
    pub const fn brps(&self) -> u8 {
        self.brps
    }
    /// The raw WRPs field: number of watchpoints minus one.
    pub const fn wrps(&self) -> u8 {
        self.wrps
    }
    /// The raw CTX_CMPs field: number of context-aware breakpoints minus one.
    pub const fn ctx_cmps(&self) -> u8 {
        self.ctx_cmps
    }
    /// PMUVer.
    pub const fn pmuver(&self) -> u8 {
        self.pmuver
    }
    /// PMSVer (Statistical Profiling Extension).
    pub const fn pmsver(&self) -> u8 {
        self.pmsver
    }
    /// TraceBuffer (TRBE).
    pub const fn tracebuffer(&self) -> u8 {
        self.tracebuffer
    }
    /// Implemented breakpoints (BRPs + 1).
    pub const fn num_brps(&self) -> usize {
        self.brps as usize + 1
    }
    /// Implemented watchpoints (WRPs + 1).
    pub const fn num_wrps(&self) -> usize {
        self.wrps as usize + 1
    }
    /// The implemented registers of `bank`: BRPs + 1 for DBGB{C,V}R, WRPs + 1 for DBGW{C,V}R.
    ///
    /// ```
    /// # use hypdbg_model::{DbgBank, DebugFeatures};
    /// let a57 = DebugFeatures::from_counts(6, 4, 2).unwrap();
    /// assert_eq!((a57.count(DbgBank::Bvr), a57.count(DbgBank::Wcr)), (6, 4));
    /// ```
    pub const fn count(&self, bank: crate::DbgBank) -> usize {
        if bank.is_breakpoint() {
            self.num_brps()
        } else {
            self.num_wrps()
        }
    }
    /// Whether `other` implements as many breakpoints and watchpoints: the physical CPUs a
    /// guest may run on must, since it sees one ID_AA64DFR0_EL1.
    pub const fn same_counts(&self, other: &DebugFeatures) -> bool {
        self.brps == other.brps && self.wrps == other.wrps
    }
    /// `6 breakpoints, 4 watchpoints` (singular where one).
    pub fn counts_words(&self) -> String {
        let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
        format!(
            "{}, {}",
            n(self.num_brps(), "breakpoint"),
            n(self.num_wrps(), "watchpoint")
        )
    }
    /// Implemented context-aware breakpoints (CTX_CMPs + 1).
    pub const fn num_ctx_cmps(&self) -> usize {
        self.ctx_cmps as usize + 1
    }
    /// The lowest-numbered context-aware breakpoint (they are the highest-numbered units).
    pub const fn first_ctx_cmp(&self) -> usize {
        self.num_brps() - self.num_ctx_cmps()
    }
    /// Whether breakpoint `n` can match a context (CONTEXTIDR_EL1).
    pub const fn is_context_aware(&self, n: usize) -> bool {
        n >= self.first_ctx_cmp() && n < self.num_brps()
    }
    /// The debug architecture version in words.
    pub fn debugver_name(&self) -> &'static str {
        match self.debugver {
            0x6 => "Armv8.0 debug",
            0x7 => "Armv8.1 debug (VHE)",
            0x8 => "Armv8.2 debug",
            0x9 => "Armv8.4 debug",
            0xa => "Armv8.8 debug",
            0xb => "Armv8.9 debug",
            _ => "a later debug architecture",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_fields_plus_one_for_every_field_value() {
        for b in 1..=15u8 {
            for w in 1..=15u8 {
                let f = DebugFeatures::from_counts(b + 1, w + 1, 1).unwrap();
                assert_eq!((f.brps(), f.wrps(), f.ctx_cmps()), (b, w, 0));
                assert_eq!(
                    (f.num_brps(), f.num_wrps()),
                    (b as usize + 1, w as usize + 1)
                );
                assert_eq!(DebugFeatures::new(f.raw()).unwrap(), f);
            }
        }
    }

    #[test]
    fn real_values_decode() {
        let n1 = DebugFeatures::new(0x1_1030_5408).unwrap();
        assert_eq!((n1.num_brps(), n1.num_wrps(), n1.num_ctx_cmps()), (6, 4, 2));
        assert_eq!(n1.debugver(), 8);
        assert_eq!(n1.pmsver(), 1);
        let a710 = DebugFeatures::new(0x11f0_1030_5619).unwrap();
        assert_eq!(a710.tracebuffer(), 1);
        assert_eq!(a710.debugver(), 9);
        assert_eq!(a710.first_ctx_cmp(), 4);
        assert!(a710.is_context_aware(4) && a710.is_context_aware(5));
        assert!(!a710.is_context_aware(3) && !a710.is_context_aware(6));
    }

    #[test]
    fn invalid_values_are_rejected_with_the_rule() {
        let e = DebugFeatures::new(0x1030_0106).unwrap_err();
        assert!(e.to_string().contains("BRPs = 0"), "{e}");
        let e = DebugFeatures::new(0x1000_5106).unwrap_err();
        assert!(e.to_string().contains("WRPs = 0"), "{e}");
        let e = DebugFeatures::new(0x6030_5106).unwrap_err();
        assert!(e.to_string().contains("CTX_CMPs = 6"), "{e}");
        let e = DebugFeatures::new(0x1030_5105).unwrap_err();
        assert!(e.to_string().contains("DebugVer"), "{e}");
        assert!(DebugFeatures::from_counts(1, 4, 1).is_err());
        assert!(DebugFeatures::from_counts(17, 4, 1).is_err());
        assert!(DebugFeatures::from_counts(6, 4, 7).is_err());
        assert!(DebugFeatures::from_counts(6, 4, 0).is_err());
    }

    #[test]
    fn ctx_equal_to_brps_is_valid() {
        let f = DebugFeatures::from_counts(16, 16, 16).unwrap();
        assert_eq!(f.first_ctx_cmp(), 0);
        assert_eq!(f.raw() & 0xf0f0_f00f, 0xf0f0_f006);
    }
}
