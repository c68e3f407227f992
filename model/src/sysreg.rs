//! The debug system registers by name, by encoding (op0, op1, CRn, CRm, op2) and by
//! KVM_{GET,SET}_ONE_REG id, with the MDCR_EL2 bit that traps each of them.
//!
//! Encodings: Arm ARM C5.3 / Linux arch/arm64/tools/sysreg. ONE_REG ids:
//! `ARM64_SYS_REG(op0, op1, CRn, CRm, op2)` from arch/arm64/include/uapi/asm/kvm.h.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::KVM_ARM_MAX_DBG_REGS;
use crate::error::ModelError;

/// One of the four banks of breakpoint/watchpoint registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DbgBank {
    /// DBGBCR\<n>_EL1, breakpoint control.
    Bcr,
    /// DBGBVR\<n>_EL1, breakpoint value.
    Bvr,
    /// DBGWCR\<n>_EL1, watchpoint control.
    Wcr,
    /// DBGWVR\<n>_EL1, watchpoint value.
    Wvr,
}

impl DbgBank {
    /// All four, in the order the kernel's `__debug_save_state` moves them.
    pub const ALL: [DbgBank; 4] = [DbgBank::Bcr, DbgBank::Bvr, DbgBank::Wcr, DbgBank::Wvr];

    /// op2 of the encoding (DBGBVR 4, DBGBCR 5, DBGWVR 6, DBGWCR 7).
    pub const fn op2(self) -> u8 {
        match self {
            DbgBank::Bvr => 4,
            DbgBank::Bcr => 5,
            DbgBank::Wvr => 6,
            DbgBank::Wcr => 7,
        }
    }
    /// The bank for an op2 of 4..=7.
    pub const fn from_op2(op2: u8) -> Option<Self> {
        match op2 {
            4 => Some(DbgBank::Bvr),
            5 => Some(DbgBank::Bcr),
            6 => Some(DbgBank::Wvr),
            7 => Some(DbgBank::Wcr),
            _ => None,
        }
    }
    /// Breakpoint bank (counted by BRPs) or watchpoint bank (WRPs).
    pub const fn is_breakpoint(self) -> bool {
        matches!(self, DbgBank::Bcr | DbgBank::Bvr)
    }
    /// `breakpoints` or `watchpoints`: what the bank's registers program.
    pub const fn units(self) -> &'static str {
        if self.is_breakpoint() {
            "breakpoints"
        } else {
            "watchpoints"
        }
    }
    /// The kernel's lower-case stem (`dbgbcr`), as in `save_debug(ptr, dbgbcr, nr)`.
    pub const fn stem(self) -> &'static str {
        match self {
            DbgBank::Bcr => "dbgbcr",
            DbgBank::Bvr => "dbgbvr",
            DbgBank::Wcr => "dbgwcr",
            DbgBank::Wvr => "dbgwvr",
        }
    }
}

/// The MDCR_EL2 bit that traps a register to EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrapBit {
    /// MDCR_EL2.TDA: debug register accesses.
    Tda,
    /// MDCR_EL2.TDOSA: OS lock and power-down registers.
    Tdosa,
    /// MDCR_EL2.TDRA: MDRAR_EL1.
    Tdra,
}

/// A system register the model knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SysReg {
    /// DBG{B,W}{C,V}R\<n>_EL1, n in 0..16 (CRm = n).
    Dbg(DbgBank, u8),
    /// MDSCR_EL1 (2, 0, 0, 2, 2).
    MdscrEl1,
    /// MDCCINT_EL1 (2, 0, 0, 2, 0).
    MdccintEl1,
    /// MDRAR_EL1 (2, 0, 1, 0, 0), read-only.
    MdrarEl1,
    /// OSLAR_EL1 (2, 0, 1, 0, 4), write-only.
    OslarEl1,
    /// OSLSR_EL1 (2, 0, 1, 1, 4), read-only.
    OslsrEl1,
    /// OSDLR_EL1 (2, 0, 1, 3, 4).
    OsdlrEl1,
    /// DBGPRCR_EL1 (2, 0, 1, 4, 4).
    DbgprcrEl1,
    /// CONTEXTIDR_EL1 (3, 0, 13, 0, 1), matched by context breakpoints.
    ContextidrEl1,
    /// SPSR_EL1 (3, 0, 4, 0, 0).
    SpsrEl1,
    /// ELR_EL1 (3, 0, 4, 0, 1).
    ElrEl1,
    /// ESR_EL1 (3, 0, 5, 2, 0).
    EsrEl1,
    /// FAR_EL1 (3, 0, 6, 0, 0).
    FarEl1,
    /// DBGCLAIMSET_EL1 (2, 0, 7, 8, 6): KVM's trap_raz_wi.
    DbgclaimsetEl1,
    /// DBGCLAIMCLR_EL1 (2, 0, 7, 9, 6): KVM's trap_raz_wi.
    DbgclaimclrEl1,
    /// DBGAUTHSTATUS_EL1 (2, 0, 7, 14, 6), read-only: KVM returns the host's value.
    DbgauthstatusEl1,
    /// MDCCSR_EL0 (2, 3, 0, 1, 0), read-only: KVM's trap_raz_wi.
    MdccsrEl0,
    /// DBGDTR_EL0 (2, 3, 0, 4, 0): KVM's trap_raz_wi.
    DbgdtrEl0,
    /// DBGDTRTX_EL0 / DBGDTRRX_EL0 (2, 3, 0, 5, 0), one encoding: KVM's trap_raz_wi.
    DbgdtrtxEl0,
    /// OSDTRRX_EL1 (2, 0, 0, 0, 2): no sys_regs.c descriptor, so a trapped access UNDEFs.
    OsdtrrxEl1,
    /// OSDTRTX_EL1 (2, 0, 0, 3, 2): no sys_regs.c descriptor, so a trapped access UNDEFs.
    OsdtrtxEl1,
    /// OSECCR_EL1 (2, 0, 0, 6, 2): no sys_regs.c descriptor, so a trapped access UNDEFs.
    OseccrEl1,
    /// DBGVCR32_EL2 (2, 4, 0, 7, 0): an EL2 register (UNDEFINED at EL1), kept by KVM for
    /// AArch32 guests and reachable through ONE_REG only.
    Dbgvcr32El2,
    /// ID_AA64DFR0_EL1 (3, 0, 0, 5, 0): the VM's (sanitised, partly writable) view.
    IdAa64dfr0El1,
}

/// An (op0, op1, CRn, CRm, op2) encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Encoding {
    /// op0 (2 for debug registers, 3 for the others).
    pub op0: u8,
    /// op1.
    pub op1: u8,
    /// CRn.
    pub crn: u8,
    /// CRm.
    pub crm: u8,
    /// op2.
    pub op2: u8,
}

const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
const KVM_REG_ARM64_SYSREG: u64 = 0x0013 << 16;
const ONE_REG_PREFIX: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG;

impl SysReg {
    /// Every named register except the banked ones.
    const NAMED: [(SysReg, &'static str, Encoding); 23] = [
        (SysReg::MdscrEl1, "MDSCR_EL1", enc(2, 0, 0, 2, 2)),
        (SysReg::MdccintEl1, "MDCCINT_EL1", enc(2, 0, 0, 2, 0)),
        (SysReg::MdrarEl1, "MDRAR_EL1", enc(2, 0, 1, 0, 0)),
        (SysReg::OslarEl1, "OSLAR_EL1", enc(2, 0, 1, 0, 4)),
        (SysReg::OslsrEl1, "OSLSR_EL1", enc(2, 0, 1, 1, 4)),
        (SysReg::OsdlrEl1, "OSDLR_EL1", enc(2, 0, 1, 3, 4)),
        (SysReg::DbgprcrEl1, "DBGPRCR_EL1", enc(2, 0, 1, 4, 4)),
        (SysReg::ContextidrEl1, "CONTEXTIDR_EL1", enc(3, 0, 13, 0, 1)),
        (SysReg::SpsrEl1, "SPSR_EL1", enc(3, 0, 4, 0, 0)),
        (SysReg::ElrEl1, "ELR_EL1", enc(3, 0, 4, 0, 1)),
        (SysReg::EsrEl1, "ESR_EL1", enc(3, 0, 5, 2, 0)),
        (SysReg::FarEl1, "FAR_EL1", enc(3, 0, 6, 0, 0)),
        (
            SysReg::DbgclaimsetEl1,
            "DBGCLAIMSET_EL1",
            enc(2, 0, 7, 8, 6),
        ),
        (
            SysReg::DbgclaimclrEl1,
            "DBGCLAIMCLR_EL1",
            enc(2, 0, 7, 9, 6),
        ),
        (
            SysReg::DbgauthstatusEl1,
            "DBGAUTHSTATUS_EL1",
            enc(2, 0, 7, 14, 6),
        ),
        (SysReg::MdccsrEl0, "MDCCSR_EL0", enc(2, 3, 0, 1, 0)),
        (SysReg::DbgdtrEl0, "DBGDTR_EL0", enc(2, 3, 0, 4, 0)),
        (SysReg::DbgdtrtxEl0, "DBGDTRTX_EL0", enc(2, 3, 0, 5, 0)),
        (SysReg::OsdtrrxEl1, "OSDTRRX_EL1", enc(2, 0, 0, 0, 2)),
        (SysReg::OsdtrtxEl1, "OSDTRTX_EL1", enc(2, 0, 0, 3, 2)),
        (SysReg::OseccrEl1, "OSECCR_EL1", enc(2, 0, 0, 6, 2)),
        (SysReg::Dbgvcr32El2, "DBGVCR32_EL2", enc(2, 4, 0, 7, 0)),
        (SysReg::IdAa64dfr0El1, "ID_AA64DFR0_EL1", enc(3, 0, 0, 5, 0)),
    ];

    /// DBG{B,W}{C,V}R\<n>_EL1; `n` must be below 16.
    pub fn dbg(bank: DbgBank, n: usize) -> Result<Self, ModelError> {
        if n >= KVM_ARM_MAX_DBG_REGS {
            return Err(ModelError::BadField {
                what: "debug register index",
                value: n as u64,
                rule: "DBG{B,W}{C,V}R<n>_EL1 exist for n = 0..15 (CRm is 4 bits)",
            });
        }
        Ok(SysReg::Dbg(bank, n as u8))
    }

    /// The encoding.
    pub fn encoding(self) -> Encoding {
        match self {
            SysReg::Dbg(bank, n) => enc(2, 0, 0, n, bank.op2()),
            other => Self::NAMED
                .iter()
                .find(|(r, _, _)| *r == other)
                .map_or(enc(0, 0, 0, 0, 0), |(_, _, e)| *e),
        }
    }

    /// The register with this encoding, if the model knows it.
    pub fn from_encoding(e: Encoding) -> Option<Self> {
        if (e.op0, e.op1, e.crn) == (2, 0, 0)
            && e.crm < 16
            && let Some(bank) = DbgBank::from_op2(e.op2)
        {
            return Some(SysReg::Dbg(bank, e.crm));
        }
        Self::NAMED
            .iter()
            .find(|(_, _, x)| *x == e)
            .map(|(r, _, _)| *r)
    }

    /// The KVM_{GET,SET}_ONE_REG id (ARM64_SYS_REG).
    ///
    /// ```
    /// use hypdbg_model::{SysReg, DbgBank};
    /// assert_eq!(SysReg::MdscrEl1.one_reg_id(), 0x6030_0000_0013_8012);
    /// let id = SysReg::Dbg(DbgBank::Wcr, 3).one_reg_id();
    /// assert_eq!(SysReg::from_one_reg_id(id).unwrap(), SysReg::Dbg(DbgBank::Wcr, 3));
    /// ```
    pub fn one_reg_id(self) -> u64 {
        let e = self.encoding();
        ONE_REG_PREFIX
            | (e.op0 as u64) << 14
            | (e.op1 as u64) << 11
            | (e.crn as u64) << 7
            | (e.crm as u64) << 3
            | e.op2 as u64
    }

    /// The debug register a ONE_REG id names.
    pub fn from_one_reg_id(id: u64) -> Result<Self, ModelError> {
        if id & !0xffff != ONE_REG_PREFIX {
            return Err(ModelError::UnknownOneRegId { id });
        }
        let e = Encoding {
            op0: ((id >> 14) & 3) as u8,
            op1: ((id >> 11) & 7) as u8,
            crn: ((id >> 7) & 0xf) as u8,
            crm: ((id >> 3) & 0xf) as u8,
            op2: (id & 7) as u8,
        };
        match Self::from_encoding(e) {
            Some(r) if r.is_debug() || r == SysReg::IdAa64dfr0El1 => Ok(r),
            _ => Err(ModelError::UnknownOneRegId { id }),
        }
    }

    /// Whether this is one of the debug registers (op0 = 2) KVM saves with the debug state.
    pub fn is_debug(self) -> bool {
        self.encoding().op0 == 2
    }

    /// The MDCR_EL2 bit that traps a guest access to this register, if any.
    pub const fn trapped_by(self) -> Option<TrapBit> {
        match self {
            SysReg::Dbg(..)
            | SysReg::MdscrEl1
            | SysReg::MdccintEl1
            | SysReg::DbgclaimsetEl1
            | SysReg::DbgclaimclrEl1
            | SysReg::DbgauthstatusEl1
            | SysReg::MdccsrEl0
            | SysReg::DbgdtrEl0
            | SysReg::DbgdtrtxEl0
            | SysReg::OsdtrrxEl1
            | SysReg::OsdtrtxEl1
            | SysReg::OseccrEl1 => Some(TrapBit::Tda),
            SysReg::OslarEl1 | SysReg::OslsrEl1 | SysReg::OsdlrEl1 | SysReg::DbgprcrEl1 => {
                Some(TrapBit::Tdosa)
            }
            SysReg::MdrarEl1 => Some(TrapBit::Tdra),
            _ => None,
        }
    }

    /// Whether MSR to it at EL1 is architecturally defined (OSLSR_EL1, MDRAR_EL1,
    /// DBGAUTHSTATUS_EL1, MDCCSR_EL0 and the ID register are read-only; DBGVCR32_EL2 is an EL2
    /// register).
    pub const fn is_writable(self) -> bool {
        !matches!(
            self,
            SysReg::OslsrEl1
                | SysReg::MdrarEl1
                | SysReg::DbgauthstatusEl1
                | SysReg::MdccsrEl0
                | SysReg::Dbgvcr32El2
                | SysReg::IdAa64dfr0El1
        )
    }

    /// Whether MRS of it at EL1 is architecturally defined (OSLAR_EL1 is write-only;
    /// DBGVCR32_EL2 is an EL2 register).
    pub const fn is_readable(self) -> bool {
        !matches!(self, SysReg::OslarEl1 | SysReg::Dbgvcr32El2)
    }

    /// The registers KVM's sys_regs.c handles with `trap_raz_wi` when their access traps:
    /// reads return 0, writes are ignored (no ROM table, no power-down request, no claim
    /// tags, no Debug Communications Channel). OSDTRRX/TX_EL1 and OSECCR_EL1 are not among
    /// them: no descriptor exists, so KVM injects UNDEF for a trapped access.
    pub const fn is_raz_wi(self) -> bool {
        matches!(
            self,
            SysReg::OsdlrEl1
                | SysReg::DbgprcrEl1
                | SysReg::MdrarEl1
                | SysReg::DbgclaimsetEl1
                | SysReg::DbgclaimclrEl1
                | SysReg::MdccsrEl0
                | SysReg::DbgdtrEl0
                | SysReg::DbgdtrtxEl0
        )
    }

    /// The bank and index of a breakpoint/watchpoint register.
    pub const fn bank_index(self) -> Option<(DbgBank, u8)> {
        match self {
            SysReg::Dbg(b, n) => Some((b, n)),
            _ => None,
        }
    }
}

const fn enc(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Encoding {
    Encoding {
        op0,
        op1,
        crn,
        crm,
        op2,
    }
}

impl fmt::Display for SysReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysReg::Dbg(bank, n) => write!(f, "{}{}_EL1", bank.stem().to_ascii_uppercase(), n),
            other => {
                let name = Self::NAMED
                    .iter()
                    .find(|(r, _, _)| r == other)
                    .map(|(_, n, _)| *n);
                f.write_str(name.unwrap_or("?"))
            }
        }
    }
}

impl FromStr for SysReg {
    type Err = ModelError;

    /// `DBGBCR3_EL1`, `dbgbcr3_el1`, `dbgbcr3`, `MDSCR_EL1`, `mdscr`...
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let up = s.trim().to_ascii_uppercase();
        let stem = up.strip_suffix("_EL1").unwrap_or(&up);
        let unknown = || ModelError::UnknownRegister {
            name: s.to_string(),
            hint: "expected DBG{B,W}{C,V}R<0..15>_EL1, MDSCR_EL1, MDCCINT_EL1, OSLAR_EL1, \
                   OSLSR_EL1, OSDLR_EL1, DBGPRCR_EL1, MDRAR_EL1, CONTEXTIDR_EL1, SPSR_EL1, \
                   ELR_EL1, ESR_EL1, FAR_EL1, DBGCLAIMSET_EL1, DBGCLAIMCLR_EL1, \
                   DBGAUTHSTATUS_EL1, MDCCSR_EL0, DBGDTR_EL0, DBGDTRRX_EL0, DBGDTRTX_EL0, \
                   OSDTRRX_EL1, OSDTRTX_EL1, OSECCR_EL1, DBGVCR32_EL2 or ID_AA64DFR0_EL1",
        };
        for bank in DbgBank::ALL {
            if let Some(num) = stem.strip_prefix(&bank.stem().to_ascii_uppercase()) {
                let n: usize = num.parse().map_err(|_| unknown())?;
                return SysReg::dbg(bank, n);
            }
        }
        if up == "DBGDTRRX_EL0" {
            // DBGDTRRX_EL0 (MRS) and DBGDTRTX_EL0 (MSR) share one encoding.
            return Ok(SysReg::DbgdtrtxEl0);
        }
        Self::NAMED
            .iter()
            .find(|(_, name, _)| *name == up || name.strip_suffix("_EL1") == Some(stem))
            .map(|(r, _, _)| *r)
            .ok_or_else(unknown)
    }
}

impl Serialize for SysReg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SysReg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_debug() -> Vec<SysReg> {
        let mut v: Vec<SysReg> = DbgBank::ALL
            .iter()
            .flat_map(|&b| (0..16).map(move |n| SysReg::Dbg(b, n)))
            .collect();
        v.extend([
            SysReg::MdscrEl1,
            SysReg::MdccintEl1,
            SysReg::OslarEl1,
            SysReg::OslsrEl1,
            SysReg::OsdlrEl1,
            SysReg::DbgprcrEl1,
            SysReg::MdrarEl1,
        ]);
        v
    }

    #[test]
    fn one_reg_ids_match_the_uapi_formula() {
        // ARM64_SYS_REG(2, 0, 0, n, 4..7) and the named ones, from the facts page.
        assert_eq!(
            SysReg::Dbg(DbgBank::Bvr, 0).one_reg_id(),
            0x6030_0000_0013_8004
        );
        assert_eq!(
            SysReg::Dbg(DbgBank::Bcr, 15).one_reg_id(),
            0x6030_0000_0013_807d
        );
        assert_eq!(
            SysReg::Dbg(DbgBank::Wvr, 1).one_reg_id(),
            0x6030_0000_0013_800e
        );
        assert_eq!(
            SysReg::Dbg(DbgBank::Wcr, 2).one_reg_id(),
            0x6030_0000_0013_8017
        );
        assert_eq!(SysReg::MdccintEl1.one_reg_id(), 0x6030_0000_0013_8010);
        assert_eq!(SysReg::OslarEl1.one_reg_id(), 0x6030_0000_0013_8084);
        assert_eq!(SysReg::OslsrEl1.one_reg_id(), 0x6030_0000_0013_808c);
        for r in all_debug() {
            assert_eq!(SysReg::from_one_reg_id(r.one_reg_id()).unwrap(), r, "{r}");
        }
        assert!(SysReg::from_one_reg_id(0x6030_0000_0013_8003).is_err());
        assert!(SysReg::from_one_reg_id(SysReg::ContextidrEl1.one_reg_id()).is_err());
        assert!(SysReg::from_one_reg_id(0).is_err());
    }

    #[test]
    fn names_round_trip() {
        for r in all_debug()
            .into_iter()
            .chain([SysReg::ContextidrEl1, SysReg::ElrEl1])
        {
            assert_eq!(r.to_string().parse::<SysReg>().unwrap(), r);
            assert_eq!(SysReg::from_encoding(r.encoding()).unwrap(), r);
        }
        assert_eq!(
            "dbgwvr7".parse::<SysReg>().unwrap(),
            SysReg::Dbg(DbgBank::Wvr, 7)
        );
        assert_eq!(SysReg::Dbg(DbgBank::Bcr, 3).to_string(), "DBGBCR3_EL1");
        assert!("dbgbcr16_el1".parse::<SysReg>().is_err());
        assert!("dbgbcr".parse::<SysReg>().is_err());
        assert!("foo".parse::<SysReg>().is_err());
    }

    #[test]
    fn trap_bits() {
        assert_eq!(
            SysReg::Dbg(DbgBank::Wvr, 9).trapped_by(),
            Some(TrapBit::Tda)
        );
        assert_eq!(SysReg::MdscrEl1.trapped_by(), Some(TrapBit::Tda));
        assert_eq!(SysReg::OslarEl1.trapped_by(), Some(TrapBit::Tdosa));
        assert_eq!(SysReg::MdrarEl1.trapped_by(), Some(TrapBit::Tdra));
        assert_eq!(SysReg::ContextidrEl1.trapped_by(), None);
        assert!(!SysReg::OslsrEl1.is_writable() && !SysReg::OslarEl1.is_readable());
        assert!(SysReg::MdscrEl1.is_writable() && SysReg::MdscrEl1.is_readable());
    }
}
