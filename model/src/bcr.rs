//! DBGBCR\<n>_EL1, Debug Breakpoint Control Register (Arm ARM D23.3.4).
//!
//! `E[0] PMC[2:1] BAS[8:5] HMC[13] SSC[15:14] LBN[19:16] BT[23:20]`; everything else is RES0
//! on the modelled cores (no FEAT_BWE breakpoint MASK, no FEAT_RME SSCE).

use bitflags::bitflags;
use serde::{Deserialize, Serialize};

use crate::bits::Field;
use crate::error::ModelError;

bitflags! {
    /// The single-bit fields of DBGBCR\<n>_EL1.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DbgbcrFlags: u64 {
        /// E, enable.
        const E = 1 << 0;
        /// HMC, higher mode control.
        const HMC = 1 << 13;
    }
}

/// E, enable.
pub const E: Field = Field::new("E", 0, 0);
/// PMC, privilege mode control.
pub const PMC: Field = Field::new("PMC", 2, 1);
/// BAS, byte address select (RES1 = 0b1111 for A64 instructions).
pub const BAS: Field = Field::new("BAS", 8, 5);
/// HMC, higher mode control.
pub const HMC: Field = Field::new("HMC", 13, 13);
/// SSC, security state control.
pub const SSC: Field = Field::new("SSC", 15, 14);
/// LBN, linked breakpoint number.
pub const LBN: Field = Field::new("LBN", 19, 16);
/// BT, breakpoint type.
pub const BT: Field = Field::new("BT", 23, 20);
/// The RES0 bits: \[4:3\], \[12:9\], \[63:24\].
pub const RES0_MASK: u64 = 0xffff_ffff_ff00_0000 | 0x1e00 | 0x18;

/// Breakpoint types (DBGBCR.BT) the model distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BreakpointType {
    /// 0b0000 unlinked instruction address match.
    UnlinkedAddress,
    /// 0b0001 linked instruction address match (fires only with its LBN context breakpoint).
    LinkedAddress,
    /// 0b0010 unlinked CONTEXTIDR_EL1 match.
    UnlinkedContext,
    /// 0b0011 linked CONTEXTIDR_EL1 match (never fires alone; the target of LBN).
    LinkedContext,
    /// 0b0100 / 0b0101 address mismatch: reserved in AArch64 without FEAT_BWE.
    AddressMismatch(u8),
    /// 0b1000..0b1011 VMID (and context) match: needs EL2 in the guest, reserved for a guest.
    Vmid(u8),
    /// 0b0110, 0b0111, 0b1100..0b1111: CONTEXTIDR_EL2 / full-context types (VHE hosts).
    El2Context(u8),
}

impl BreakpointType {
    /// Decode the 4-bit BT field.
    pub const fn from_bt(bt: u8) -> Self {
        match bt & 0xf {
            0b0000 => Self::UnlinkedAddress,
            0b0001 => Self::LinkedAddress,
            0b0010 => Self::UnlinkedContext,
            0b0011 => Self::LinkedContext,
            v @ (0b0100 | 0b0101) => Self::AddressMismatch(v),
            v @ 0b1000..=0b1011 => Self::Vmid(v),
            v => Self::El2Context(v),
        }
    }

    /// The BT encoding.
    pub const fn bt(self) -> u8 {
        match self {
            Self::UnlinkedAddress => 0,
            Self::LinkedAddress => 1,
            Self::UnlinkedContext => 2,
            Self::LinkedContext => 3,
            Self::AddressMismatch(v) | Self::Vmid(v) | Self::El2Context(v) => v,
        }
    }

    /// In words.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::UnlinkedAddress => "unlinked instruction address match",
            Self::LinkedAddress => {
                "linked instruction address match (needs its LBN context breakpoint)"
            }
            Self::UnlinkedContext => "unlinked context ID match (CONTEXTIDR_EL1)",
            Self::LinkedContext => "context ID match with linking enabled (never fires alone)",
            Self::AddressMismatch(_) => "address mismatch: reserved in AArch64 without FEAT_BWE",
            Self::Vmid(_) => "VMID match: reserved for a guest (it has no EL2)",
            Self::El2Context(_) => {
                "CONTEXTIDR_EL2 / full context match: reserved for a non-VHE guest"
            }
        }
    }
}

/// A DBGBCR\<n>_EL1 value with typed accessors.
///
/// ```
/// use hypdbg_model::bcr::{Dbgbcr, DbgbcrFields, BreakpointType};
/// // The usual VMM encoding: E, PMC = 0b11 (EL1 and EL0), BAS = 0b1111.
/// let bcr = Dbgbcr::address_match(0b11);
/// assert_eq!(bcr.bits(), 0x1e7);
/// assert_eq!(bcr.bt(), BreakpointType::UnlinkedAddress);
/// let f = DbgbcrFields { e: true, pmc: 1, bas: 0xf, bt: 3, ..Default::default() };
/// assert_eq!(Dbgbcr::from_fields(&f).unwrap().bits(), 0x3001e3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dbgbcr(u64);

/// Every field of DBGBCR\<n>_EL1, for building and decoding (RES0 bits kept verbatim so that
/// any 64-bit value round-trips).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DbgbcrFields {
    /// E, enable.
    pub e: bool,
    /// PMC\[1:0\]: bit 0 = EL1, bit 1 = EL0 (with HMC = 0, SSC = 0b00).
    pub pmc: u8,
    /// BAS\[3:0\].
    pub bas: u8,
    /// HMC.
    pub hmc: bool,
    /// SSC\[1:0\].
    pub ssc: u8,
    /// LBN\[3:0\].
    pub lbn: u8,
    /// BT\[3:0\].
    pub bt: u8,
    /// The RES0 bits as found (should be zero).
    pub res0: u64,
}

impl Dbgbcr {
    /// Wrap a raw value (any value is representable; see [`crate::explain`] for its meaning).
    pub const fn from_bits(bits: u64) -> Self {
        Dbgbcr(bits)
    }
    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// E | PMC | BAS = 0b1111, unlinked address match: what a debugger writes for an A64
    /// instruction breakpoint (0x1e7 with PMC = 0b11).
    pub const fn address_match(pmc: u8) -> Self {
        Dbgbcr(E.mask() | (((pmc & 3) as u64) << PMC.lsb) | BAS.mask())
    }
    /// The single-bit fields.
    pub const fn flags(self) -> DbgbcrFlags {
        DbgbcrFlags::from_bits_truncate(self.0)
    }
    /// E.
    pub const fn enabled(self) -> bool {
        self.0 & 1 != 0
    }
    /// PMC.
    pub const fn pmc(self) -> u8 {
        PMC.get(self.0) as u8
    }
    /// BAS.
    pub const fn bas(self) -> u8 {
        BAS.get(self.0) as u8
    }
    /// HMC.
    pub const fn hmc(self) -> bool {
        self.0 & HMC.mask() != 0
    }
    /// SSC.
    pub const fn ssc(self) -> u8 {
        SSC.get(self.0) as u8
    }
    /// LBN.
    pub const fn lbn(self) -> u8 {
        LBN.get(self.0) as u8
    }
    /// BT, decoded.
    pub const fn bt(self) -> BreakpointType {
        BreakpointType::from_bt(BT.get(self.0) as u8)
    }
    /// The RES0 bits that are set.
    pub const fn res0(self) -> u64 {
        self.0 & RES0_MASK
    }
    /// All fields.
    pub const fn fields(self) -> DbgbcrFields {
        DbgbcrFields {
            e: self.enabled(),
            pmc: self.pmc(),
            bas: self.bas(),
            hmc: self.hmc(),
            ssc: self.ssc(),
            lbn: self.lbn(),
            bt: self.bt().bt(),
            res0: self.res0(),
        }
    }
    /// Build from fields; a field wider than its bits, or RES0 bits outside the RES0 mask, is
    /// an error naming the field.
    pub fn from_fields(f: &DbgbcrFields) -> Result<Self, ModelError> {
        let mut v = 0;
        v = E.set(v, f.e.into(), "1 bit")?;
        v = PMC.set(v, f.pmc.into(), "PMC is 2 bits")?;
        v = BAS.set(v, f.bas.into(), "BAS is 4 bits")?;
        v = HMC.set(v, f.hmc.into(), "1 bit")?;
        v = SSC.set(v, f.ssc.into(), "SSC is 2 bits")?;
        v = LBN.set(v, f.lbn.into(), "LBN is 4 bits")?;
        v = BT.set(v, f.bt.into(), "BT is 4 bits")?;
        if f.res0 & !RES0_MASK != 0 {
            return Err(ModelError::BadField {
                what: "DBGBCR RES0 bits",
                value: f.res0,
                rule: "only bits [4:3], [12:9] and [63:24] are RES0",
            });
        }
        Ok(Dbgbcr(v | f.res0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn selftest_values_decode() {
        // debug-exceptions.c: 0x1fe3 = E, PMC=01, BAS=0xf, and ones in RES0 bits [12:9].
        let b = Dbgbcr::from_bits(0x1fe3);
        assert!(b.enabled());
        assert_eq!(
            (b.pmc(), b.bas(), b.bt()),
            (1, 0xf, BreakpointType::UnlinkedAddress)
        );
        assert_eq!(b.res0(), 0x1e00);
        let ctx = Dbgbcr::from_bits(0x30_1fe3);
        assert_eq!(ctx.bt(), BreakpointType::LinkedContext);
        let linked = Dbgbcr::from_bits(0x10_1fe3 | 5 << 16);
        assert_eq!(
            (linked.bt(), linked.lbn()),
            (BreakpointType::LinkedAddress, 5)
        );
        assert_eq!(Dbgbcr::address_match(3).bits(), 0x1e7);
        assert_eq!(Dbgbcr::address_match(3).res0(), 0);
        assert_eq!(
            Dbgbcr::from_bits(0x2001).flags(),
            DbgbcrFlags::E | DbgbcrFlags::HMC
        );
        assert_eq!(Dbgbcr::from_bits(0xc000).ssc(), 3);
    }

    #[test]
    fn every_bt_round_trips() {
        for bt in 0..16u8 {
            assert_eq!(BreakpointType::from_bt(bt).bt(), bt);
        }
    }

    #[test]
    fn wide_fields_are_rejected() {
        let f = DbgbcrFields {
            bas: 0x10,
            ..Default::default()
        };
        assert!(
            Dbgbcr::from_fields(&f)
                .unwrap_err()
                .to_string()
                .contains("BAS")
        );
        let f = DbgbcrFields {
            res0: 1,
            ..Default::default()
        };
        assert!(Dbgbcr::from_fields(&f).is_err());
    }

    proptest! {
        #[test]
        fn fields_round_trip(v in any::<u64>()) {
            let b = Dbgbcr::from_bits(v);
            prop_assert_eq!(Dbgbcr::from_fields(&b.fields()).unwrap(), b);
        }
    }
}
