//! DBGWCR\<n>_EL1, Debug Watchpoint Control Register (Arm ARM D23.3.13).
//!
//! `E[0] PAC[2:1] LSC[4:3] BAS[12:5] HMC[13] SSC[15:14] LBN[19:16] WT[20] MASK[28:24]`;
//! bits \[23:21\] and \[63:29\] are RES0 on the modelled cores.

use bitflags::bitflags;
use serde::{Deserialize, Serialize};

use crate::bits::Field;
use crate::error::ModelError;

bitflags! {
    /// The single-bit fields of DBGWCR\<n>_EL1.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DbgwcrFlags: u64 {
        /// E, enable.
        const E = 1 << 0;
        /// HMC, higher mode control.
        const HMC = 1 << 13;
        /// WT, watchpoint type: 1 = linked to the context breakpoint LBN.
        const WT = 1 << 20;
    }
}

/// E, enable.
pub const E: Field = Field::new("E", 0, 0);
/// PAC, privilege of access control.
pub const PAC: Field = Field::new("PAC", 2, 1);
/// LSC, load/store control.
pub const LSC: Field = Field::new("LSC", 4, 3);
/// BAS, one bit per byte of the doubleword at DBGWVR.
pub const BAS: Field = Field::new("BAS", 12, 5);
/// HMC, higher mode control.
pub const HMC: Field = Field::new("HMC", 13, 13);
/// SSC, security state control.
pub const SSC: Field = Field::new("SSC", 15, 14);
/// LBN, linked breakpoint number.
pub const LBN: Field = Field::new("LBN", 19, 16);
/// WT, watchpoint type.
pub const WT: Field = Field::new("WT", 20, 20);
/// MASK, address mask: 0 = use BAS, 3..=31 = watch 2^MASK aligned bytes (1, 2 reserved).
pub const MASK: Field = Field::new("MASK", 28, 24);
/// The RES0 bits: \[23:21\] and \[63:29\].
pub const RES0_MASK: u64 = 0xffff_ffff_e000_0000 | 0x00e0_0000;

/// Which accesses a watchpoint matches (DBGWCR.LSC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lsc {
    /// 0b00: reserved, never generates a watchpoint exception.
    Reserved,
    /// 0b01: loads.
    Load,
    /// 0b10: stores.
    Store,
    /// 0b11: loads and stores.
    Both,
}

impl Lsc {
    /// Decode the 2-bit field.
    pub const fn from_bits(v: u8) -> Self {
        match v & 3 {
            0 => Lsc::Reserved,
            1 => Lsc::Load,
            2 => Lsc::Store,
            _ => Lsc::Both,
        }
    }
    /// The encoding.
    pub const fn bits(self) -> u8 {
        match self {
            Lsc::Reserved => 0,
            Lsc::Load => 1,
            Lsc::Store => 2,
            Lsc::Both => 3,
        }
    }
    /// Whether an access in this direction is watched.
    pub const fn matches(self, is_store: bool) -> bool {
        let bit = if is_store { 2 } else { 1 };
        self.bits() & bit != 0
    }
}

/// A DBGWCR\<n>_EL1 value with typed accessors.
///
/// ```
/// use hypdbg_model::wcr::{Dbgwcr, DbgwcrFields, Lsc};
/// // debug-exceptions.c's watchpoint: E, PAC = 0b01, LSC = 0b11, BAS = 0xff.
/// let w = Dbgwcr::from_bits(0x1ffb);
/// assert_eq!((w.pac(), w.lsc(), w.bas(), w.mask()), (1, Lsc::Both, 0xff, 0));
/// let f = DbgwcrFields { e: true, pac: 3, lsc: 2, bas: 0xff, mask: 12, ..Default::default() };
/// assert_eq!(Dbgwcr::from_fields(&f).unwrap().bits(), 0x0c00_1ff7);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dbgwcr(u64);

/// Every field of DBGWCR\<n>_EL1 (RES0 bits kept verbatim so that any value round-trips).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DbgwcrFields {
    /// E, enable.
    pub e: bool,
    /// PAC\[1:0\]: bit 0 = EL1, bit 1 = EL0.
    pub pac: u8,
    /// LSC\[1:0\].
    pub lsc: u8,
    /// BAS\[7:0\].
    pub bas: u8,
    /// HMC.
    pub hmc: bool,
    /// SSC\[1:0\].
    pub ssc: u8,
    /// LBN\[3:0\].
    pub lbn: u8,
    /// WT.
    pub wt: bool,
    /// MASK\[4:0\].
    pub mask: u8,
    /// The RES0 bits as found.
    pub res0: u64,
}

impl Dbgwcr {
    /// Wrap a raw value.
    pub const fn from_bits(bits: u64) -> Self {
        Dbgwcr(bits)
    }
    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// An enabled, unlinked watchpoint for EL1 and EL0 (PAC = 0b11).
    pub fn new(lsc: Lsc, bas: u8, mask: u8) -> Result<Self, ModelError> {
        Self::from_fields(&DbgwcrFields {
            e: true,
            pac: 3,
            lsc: lsc.bits(),
            bas,
            mask,
            ..Default::default()
        })
    }
    /// The single-bit fields.
    pub const fn flags(self) -> DbgwcrFlags {
        DbgwcrFlags::from_bits_truncate(self.0)
    }
    /// E.
    pub const fn enabled(self) -> bool {
        self.0 & 1 != 0
    }
    /// PAC.
    pub const fn pac(self) -> u8 {
        PAC.get(self.0) as u8
    }
    /// LSC, decoded.
    pub const fn lsc(self) -> Lsc {
        Lsc::from_bits(LSC.get(self.0) as u8)
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
    /// WT: linked to a context breakpoint.
    pub const fn linked(self) -> bool {
        self.0 & WT.mask() != 0
    }
    /// MASK.
    pub const fn mask(self) -> u8 {
        MASK.get(self.0) as u8
    }
    /// The RES0 bits that are set.
    pub const fn res0(self) -> u64 {
        self.0 & RES0_MASK
    }
    /// All fields.
    pub const fn fields(self) -> DbgwcrFields {
        DbgwcrFields {
            e: self.enabled(),
            pac: self.pac(),
            lsc: self.lsc().bits(),
            bas: self.bas(),
            hmc: self.hmc(),
            ssc: self.ssc(),
            lbn: self.lbn(),
            wt: self.linked(),
            mask: self.mask(),
            res0: self.res0(),
        }
    }
    /// Build from fields; a field wider than its bits is an error naming the field.
    pub fn from_fields(f: &DbgwcrFields) -> Result<Self, ModelError> {
        let mut v = 0;
        v = E.set(v, f.e.into(), "1 bit")?;
        v = PAC.set(v, f.pac.into(), "PAC is 2 bits")?;
        v = LSC.set(v, f.lsc.into(), "LSC is 2 bits")?;
        v = BAS.set(v, f.bas.into(), "BAS is 8 bits")?;
        v = HMC.set(v, f.hmc.into(), "1 bit")?;
        v = SSC.set(v, f.ssc.into(), "SSC is 2 bits")?;
        v = LBN.set(v, f.lbn.into(), "LBN is 4 bits")?;
        v = WT.set(v, f.wt.into(), "1 bit")?;
        v = MASK.set(v, f.mask.into(), "MASK is 5 bits (0, or 3..=31)")?;
        if f.res0 & !RES0_MASK != 0 {
            return Err(ModelError::BadField {
                what: "DBGWCR RES0 bits",
                value: f.res0,
                rule: "only bits [23:21] and [63:29] are RES0",
            });
        }
        Ok(Dbgwcr(v | f.res0))
    }
}

/// The single watchpoint slot that watches exactly `len` bytes at `addr`, if one exists:
/// a range inside one doubleword uses BAS (MASK = 0, DBGWVR doubleword aligned); an aligned
/// power-of-two range of 8 bytes to 2 GiB uses MASK = log2(len) with BAS = 0xff (Arm ARM
/// D2.9.7). Anything else needs several slots (the VMM's business).
///
/// ```
/// use hypdbg_model::wcr::{encode_range, Lsc};
/// let (wcr, wvr) = encode_range(0x1003, 2, Lsc::Store).unwrap();
/// assert_eq!((wcr.bas(), wcr.mask(), wvr), (0b0001_1000, 0, 0x1000));
/// let (wcr, wvr) = encode_range(0x4000, 0x1000, Lsc::Both).unwrap();
/// assert_eq!((wcr.bas(), wcr.mask(), wvr), (0xff, 12, 0x4000));
/// assert!(encode_range(0x1006, 4, Lsc::Load).is_err()); // crosses a doubleword
/// ```
pub fn encode_range(addr: u64, len: u64, lsc: Lsc) -> Result<(Dbgwcr, u64), ModelError> {
    const MAX: u64 = 1 << 31;
    if len == 0 {
        return Err(ModelError::BadField {
            what: "watchpoint length",
            value: 0,
            rule: "a watchpoint watches at least one byte",
        });
    }
    if lsc == Lsc::Reserved {
        return Err(ModelError::BadField {
            what: "LSC",
            value: 0,
            rule: "LSC = 0b00 is reserved and never fires",
        });
    }
    let offset = addr & 7;
    if offset + len <= 8 {
        let bas = (((1u16 << len) - 1) << offset) as u8;
        return Ok((Dbgwcr::new(lsc, bas, 0)?, addr & !7));
    }
    if len.is_power_of_two() && (8..=MAX).contains(&len) && addr & (len - 1) == 0 {
        return Ok((Dbgwcr::new(lsc, 0xff, len.trailing_zeros() as u8)?, addr));
    }
    Err(ModelError::BadField {
        what: "watchpoint range length",
        value: len,
        rule: "one slot watches bytes inside one doubleword (BAS) or an aligned power of two \
               from 8 bytes to 2 GiB (MASK)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_decode() {
        let w = Dbgwcr::from_bits(0x1f00_1ff5 | 1 << 20 | 7 << 16 | 0x2000 | 0xc000);
        assert!(w.enabled() && w.linked() && w.hmc());
        assert_eq!(
            (w.pac(), w.lsc(), w.bas(), w.mask()),
            (2, Lsc::Store, 0xff, 31)
        );
        assert_eq!((w.lbn(), w.ssc(), w.res0()), (7, 3, 0));
        assert_eq!(w.flags(), DbgwcrFlags::all());
        assert_eq!(Dbgwcr::from_bits(0x20_0000).res0(), 0x20_0000);
    }

    #[test]
    fn lsc_directions() {
        assert!(Lsc::Load.matches(false) && !Lsc::Load.matches(true));
        assert!(Lsc::Store.matches(true) && !Lsc::Store.matches(false));
        assert!(Lsc::Both.matches(true) && Lsc::Both.matches(false));
        assert!(!Lsc::Reserved.matches(true) && !Lsc::Reserved.matches(false));
    }

    #[test]
    fn mask_too_wide_is_rejected() {
        let f = DbgwcrFields {
            mask: 32,
            ..Default::default()
        };
        assert!(
            Dbgwcr::from_fields(&f)
                .unwrap_err()
                .to_string()
                .contains("MASK")
        );
    }

    proptest! {
        #[test]
        fn fields_round_trip(v in any::<u64>()) {
            let w = Dbgwcr::from_bits(v);
            prop_assert_eq!(Dbgwcr::from_fields(&w.fields()).unwrap(), w);
        }
    }
}
