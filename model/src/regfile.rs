//! A physical CPU's debug register file: only the implemented DBG{B,W}{C,V}R\<n>_EL1 exist
//! (Arm ARM D2.8.2: accessing an unimplemented one is UNDEFINED), plus MDSCR_EL1,
//! MDCCINT_EL1, OSLSR_EL1, OSDLR_EL1 and CONTEXTIDR_EL1.

use serde::{Deserialize, Serialize};

use crate::KVM_ARM_MAX_DBG_REGS;
use crate::ctrl::OSLSR_EL1_OSLM_IMPLEMENTED;
use crate::dfr0::DebugFeatures;
use crate::error::ModelError;
use crate::matching::MatchEnv;
use crate::sysreg::{DbgBank, SysReg};

/// The debug registers of one physical CPU.
///
/// ```
/// use hypdbg_model::{DebugFeatures, DebugRegFile, DbgBank, SysReg};
/// let mut rf = DebugRegFile::new(DebugFeatures::new(0x1030_5106).unwrap()); // 6 bps, 4 wps
/// rf.write_dbg(DbgBank::Bcr, 5, 0x1e7).unwrap();
/// assert_eq!(rf.read_dbg(DbgBank::Bcr, 5).unwrap(), 0x1e7);
/// let err = rf.read_dbg(DbgBank::Wvr, 4).unwrap_err(); // only 4 watchpoints: 0..=3
/// assert!(err.to_string().contains("DBGWVR4_EL1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugRegFile {
    features: DebugFeatures,
    /// Implemented count per bank (Bcr, Bvr, Wcr, Wvr).
    implemented: [usize; 4],
    banks: [[u64; KVM_ARM_MAX_DBG_REGS]; 4],
    /// MDSCR_EL1.
    pub mdscr_el1: u64,
    /// MDCCINT_EL1.
    pub mdccint_el1: u64,
    /// OSLSR_EL1 (the physical OS lock status).
    pub oslsr_el1: u64,
    /// OSDLR_EL1.
    pub osdlr_el1: u64,
    /// CONTEXTIDR_EL1.
    pub contextidr_el1: u64,
}

impl<'de> Deserialize<'de> for DebugFeatures {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            raw: u64,
        }
        let r = Raw::deserialize(d)?;
        DebugFeatures::new(r.raw).map_err(serde::de::Error::custom)
    }
}

impl DebugRegFile {
    /// All registers zero (OSLSR_EL1 reads "OS lock implemented, unlocked").
    pub fn new(features: DebugFeatures) -> Self {
        let (b, w) = (features.num_brps(), features.num_wrps());
        DebugRegFile {
            features,
            implemented: [b, b, w, w],
            banks: [[0; KVM_ARM_MAX_DBG_REGS]; 4],
            mdscr_el1: 0,
            mdccint_el1: 0,
            oslsr_el1: OSLSR_EL1_OSLM_IMPLEMENTED,
            osdlr_el1: 0,
            contextidr_el1: 0,
        }
    }

    /// The CPU's ID_AA64DFR0_EL1.
    pub const fn features(&self) -> &DebugFeatures {
        &self.features
    }

    /// Implemented registers in `bank`.
    #[inline(always)]
    pub const fn implemented(&self, bank: DbgBank) -> usize {
        self.implemented[bank as usize]
    }

    /// MRS DBG\<bank>\<n>_EL1: UNDEFINED above the implemented count.
    #[inline(always)]
    pub fn read_dbg(&self, bank: DbgBank, n: usize) -> Result<u64, ModelError> {
        if n < self.implemented[bank as usize] {
            Ok(self.banks[bank as usize][n])
        } else {
            Err(Self::undefined(bank, n))
        }
    }

    /// MSR DBG\<bank>\<n>_EL1: UNDEFINED above the implemented count.
    #[inline(always)]
    pub fn write_dbg(&mut self, bank: DbgBank, n: usize, value: u64) -> Result<(), ModelError> {
        if n < self.implemented[bank as usize] {
            self.banks[bank as usize][n] = value;
            Ok(())
        } else {
            Err(Self::undefined(bank, n))
        }
    }

    #[cold]
    fn undefined(bank: DbgBank, n: usize) -> ModelError {
        ModelError::Undefined {
            reg: SysReg::Dbg(bank, n.min(KVM_ARM_MAX_DBG_REGS - 1) as u8),
            why: if n < KVM_ARM_MAX_DBG_REGS {
                "the register index is above ID_AA64DFR0_EL1.BRPs/WRPs (not implemented)"
            } else {
                "there is no such register (index above 15)"
            },
        }
    }

    /// The implemented registers of a bank.
    pub fn bank(&self, bank: DbgBank) -> &[u64] {
        &self.banks[bank as usize][..self.implemented[bank as usize]]
    }

    /// MRS of any register the file holds.
    pub fn read(&self, reg: SysReg) -> Result<u64, ModelError> {
        match reg {
            SysReg::Dbg(bank, n) => self.read_dbg(bank, n.into()),
            SysReg::MdscrEl1 => Ok(self.mdscr_el1),
            SysReg::MdccintEl1 => Ok(self.mdccint_el1),
            SysReg::OslsrEl1 => Ok(self.oslsr_el1),
            SysReg::OsdlrEl1 => Ok(self.osdlr_el1),
            SysReg::ContextidrEl1 => Ok(self.contextidr_el1),
            other => Err(ModelError::Undefined {
                reg: other,
                why: "not part of the debug register file",
            }),
        }
    }

    /// MSR of any register the file holds (OSLSR_EL1 is read-only: UNDEFINED).
    pub fn write(&mut self, reg: SysReg, value: u64) -> Result<(), ModelError> {
        match reg {
            SysReg::Dbg(bank, n) => self.write_dbg(bank, n.into(), value),
            SysReg::MdscrEl1 => {
                self.mdscr_el1 = value;
                Ok(())
            }
            SysReg::MdccintEl1 => {
                self.mdccint_el1 = value;
                Ok(())
            }
            SysReg::OsdlrEl1 => {
                self.osdlr_el1 = value;
                Ok(())
            }
            SysReg::ContextidrEl1 => {
                self.contextidr_el1 = value;
                Ok(())
            }
            other => Err(ModelError::Undefined {
                reg: other,
                why: "read-only or not part of the debug register file",
            }),
        }
    }

    /// The comparators as the matcher sees them.
    pub fn match_env(&self) -> MatchEnv<'_> {
        MatchEnv {
            features: &self.features,
            bcr: self.bank(DbgBank::Bcr),
            bvr: self.bank(DbgBank::Bvr),
            wcr: self.bank(DbgBank::Wcr),
            wvr: self.bank(DbgBank::Wvr),
            contextidr: self.contextidr_el1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_implemented_registers_exist_for_every_count() {
        for b in 2..=16u8 {
            for w in [2u8, 4, 16] {
                let mut rf = DebugRegFile::new(DebugFeatures::from_counts(b, w, 1).unwrap());
                for bank in DbgBank::ALL {
                    let n = if bank.is_breakpoint() { b } else { w } as usize;
                    assert_eq!(rf.features().count(bank), n);
                    assert_eq!(rf.implemented(bank), n);
                    for i in 0..16 {
                        let ok = rf.write_dbg(bank, i, i as u64 + 1).is_ok();
                        assert_eq!(ok, i < n, "{bank:?} {i} of {n}");
                        assert_eq!(rf.read_dbg(bank, i).ok(), ok.then_some(i as u64 + 1));
                    }
                    assert!(rf.read_dbg(bank, 99).is_err());
                    assert_eq!(rf.bank(bank).len(), n);
                }
            }
        }
    }

    #[test]
    fn named_registers() {
        let mut rf = DebugRegFile::new(DebugFeatures::from_counts(2, 2, 1).unwrap());
        rf.write(SysReg::MdscrEl1, 0x8000).unwrap();
        assert_eq!(rf.read(SysReg::MdscrEl1).unwrap(), 0x8000);
        assert_eq!(rf.read(SysReg::OslsrEl1).unwrap(), 0x8);
        assert!(rf.write(SysReg::OslsrEl1, 0).is_err());
        assert!(rf.read(SysReg::OslarEl1).is_err());
        assert!(rf.write(SysReg::Dbg(DbgBank::Bcr, 2), 1).is_err());
    }
}
