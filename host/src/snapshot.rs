//! The debug part of QEMU's `kvm_arch_get_registers` / `kvm_arch_put_registers`: a vcpu's
//! debug state through KVM_{GET,SET}_ONE_REG — every implemented `DBG{B,W}{C,V}R<n>_EL1`,
//! MDSCR_EL1, MDCCINT_EL1 and OSLSR_EL1 — as a serialisable snapshot (migration, handoff to
//! another vcpu or VM, whatever physical CPU it runs on).
//!
//! Restoring checks the whole snapshot before writing anything: a non-zero register at an
//! index the target does not implement is an error (the target has fewer breakpoints or
//! watchpoints than the snapshot uses), never a silent truncation. Registers the target has
//! beyond the snapshot's are written as zero, so the target ends up exactly as the source.

use hypdbg_model::uapi::{KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS};
use hypdbg_model::{DbgBank, KVM_ARM_MAX_DBG_REGS, SysReg};
use serde::{Deserialize, Serialize};

use crate::error::{HwDebugError, SnapshotError};
use crate::vcpu::DebugVcpu;

/// A vcpu's debug registers. JSON writes every value as a `"0x…"` string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugSnapshot {
    /// `DBGBCR<n>_EL1` for every implemented breakpoint of the source.
    #[serde(with = "crate::hex::vec")]
    pub bcr: Vec<u64>,
    /// `DBGBVR<n>_EL1`.
    #[serde(with = "crate::hex::vec")]
    pub bvr: Vec<u64>,
    /// `DBGWCR<n>_EL1` for every implemented watchpoint of the source.
    #[serde(with = "crate::hex::vec")]
    pub wcr: Vec<u64>,
    /// `DBGWVR<n>_EL1`.
    #[serde(with = "crate::hex::vec")]
    pub wvr: Vec<u64>,
    /// MDSCR_EL1.
    #[serde(with = "crate::hex")]
    pub mdscr_el1: u64,
    /// MDCCINT_EL1.
    #[serde(with = "crate::hex")]
    pub mdccint_el1: u64,
    /// OSLSR_EL1 (the OS lock travels with the state).
    #[serde(with = "crate::hex")]
    pub oslsr_el1: u64,
}

fn count(cap: &'static str, v: i64) -> Result<usize, HwDebugError> {
    match usize::try_from(v) {
        Ok(n) if n <= KVM_ARM_MAX_DBG_REGS => Ok(n),
        _ => Err(HwDebugError::BadCapacity { cap, value: v }),
    }
}

/// The number of breakpoints and watchpoints a vcpu implements (KVM_CAP_GUEST_DEBUG_HW_BPS /
/// _WPS).
pub fn implemented<V: DebugVcpu + ?Sized>(vcpu: &V) -> Result<(usize, usize), HwDebugError> {
    Ok((
        count(
            "KVM_CAP_GUEST_DEBUG_HW_BPS",
            vcpu.check_extension(KVM_CAP_GUEST_DEBUG_HW_BPS),
        )?,
        count(
            "KVM_CAP_GUEST_DEBUG_HW_WPS",
            vcpu.check_extension(KVM_CAP_GUEST_DEBUG_HW_WPS),
        )?,
    ))
}

fn reg(bank: DbgBank, n: usize) -> SysReg {
    SysReg::Dbg(bank, n as u8)
}

impl DebugSnapshot {
    /// Read every implemented debug register of `vcpu` (KVM_GET_ONE_REG).
    pub fn save<V: DebugVcpu + ?Sized>(vcpu: &mut V) -> Result<Self, SnapshotError> {
        let (bps, wps) = implemented(vcpu)?;
        let mut bank = |b: DbgBank, n: usize| -> Result<Vec<u64>, SnapshotError> {
            (0..n)
                .map(|i| Ok(vcpu.get_one_reg(reg(b, i).one_reg_id())?))
                .collect()
        };
        let bcr = bank(DbgBank::Bcr, bps)?;
        let bvr = bank(DbgBank::Bvr, bps)?;
        let wcr = bank(DbgBank::Wcr, wps)?;
        let wvr = bank(DbgBank::Wvr, wps)?;
        Ok(DebugSnapshot {
            bcr,
            bvr,
            wcr,
            wvr,
            mdscr_el1: vcpu.get_one_reg(SysReg::MdscrEl1.one_reg_id())?,
            mdccint_el1: vcpu.get_one_reg(SysReg::MdccintEl1.one_reg_id())?,
            oslsr_el1: vcpu.get_one_reg(SysReg::OslsrEl1.one_reg_id())?,
        })
    }

    /// The breakpoints the snapshot uses: one past the highest index with a non-zero control
    /// or value register.
    pub fn used_breakpoints(&self) -> usize {
        used(&self.bcr, &self.bvr)
    }

    /// The watchpoints the snapshot uses.
    pub fn used_watchpoints(&self) -> usize {
        used(&self.wcr, &self.wvr)
    }

    /// Check the shape: paired banks of equal length, at most 16 each.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        for (what, c, v) in [
            ("breakpoint", &self.bcr, &self.bvr),
            ("watchpoint", &self.wcr, &self.wvr),
        ] {
            if c.len() != v.len() {
                return Err(SnapshotError::Malformed {
                    why: format!(
                        "{} {what} control registers but {} value registers: they come in pairs",
                        c.len(),
                        v.len()
                    ),
                });
            }
            if c.len() > KVM_ARM_MAX_DBG_REGS {
                return Err(SnapshotError::Malformed {
                    why: format!(
                        "{} {what}s: the architecture has at most {KVM_ARM_MAX_DBG_REGS}",
                        c.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether it fits a vcpu with `bps` breakpoints and `wps` watchpoints; the error names
    /// the first register that does not.
    pub fn check_fits(&self, bps: usize, wps: usize) -> Result<(), SnapshotError> {
        self.validate()?;
        for (what, ctrl_bank, val_bank, c, v, available) in [
            (
                "breakpoint",
                DbgBank::Bcr,
                DbgBank::Bvr,
                &self.bcr,
                &self.bvr,
                bps,
            ),
            (
                "watchpoint",
                DbgBank::Wcr,
                DbgBank::Wvr,
                &self.wcr,
                &self.wvr,
                wps,
            ),
        ] {
            for n in available..c.len() {
                for (bank, value) in [(ctrl_bank, c[n]), (val_bank, v[n])] {
                    if value != 0 {
                        return Err(SnapshotError::TooFewRegisters {
                            reg: reg(bank, n),
                            value,
                            what,
                            available,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Write the snapshot into `vcpu` (KVM_SET_ONE_REG), after checking that it fits: the
    /// target's registers beyond the snapshot's are zeroed. Nothing is written if it does not
    /// fit.
    pub fn restore<V: DebugVcpu + ?Sized>(&self, vcpu: &mut V) -> Result<(), SnapshotError> {
        let (bps, wps) = implemented(vcpu)?;
        self.check_fits(bps, wps)?;
        for (ctrl_bank, val_bank, c, v, n_target) in [
            (DbgBank::Bcr, DbgBank::Bvr, &self.bcr, &self.bvr, bps),
            (DbgBank::Wcr, DbgBank::Wvr, &self.wcr, &self.wvr, wps),
        ] {
            for n in 0..n_target {
                let cv = c.get(n).copied().unwrap_or(0);
                let vv = v.get(n).copied().unwrap_or(0);
                vcpu.set_one_reg(reg(val_bank, n).one_reg_id(), vv)?;
                vcpu.set_one_reg(reg(ctrl_bank, n).one_reg_id(), cv)?;
            }
        }
        vcpu.set_one_reg(SysReg::MdccintEl1.one_reg_id(), self.mdccint_el1)?;
        vcpu.set_one_reg(SysReg::OslsrEl1.one_reg_id(), self.oslsr_el1)?;
        vcpu.set_one_reg(SysReg::MdscrEl1.one_reg_id(), self.mdscr_el1)?;
        Ok(())
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, SnapshotError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parse JSON and check the shape.
    pub fn from_json(text: &str) -> Result<Self, SnapshotError> {
        let s: DebugSnapshot = serde_json::from_str(text)?;
        s.validate()?;
        Ok(s)
    }
}

fn used(c: &[u64], v: &[u64]) -> usize {
    (0..c.len().max(v.len()))
        .rev()
        .find(|&n| c.get(n).copied().unwrap_or(0) != 0 || v.get(n).copied().unwrap_or(0) != 0)
        .map_or(0, |n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(bps: usize, wps: usize) -> DebugSnapshot {
        DebugSnapshot {
            bcr: vec![0; bps],
            bvr: vec![0; bps],
            wcr: vec![0; wps],
            wvr: vec![0; wps],
            ..Default::default()
        }
    }

    #[test]
    fn fits_checks_every_register_beyond_the_target() {
        let mut s = snap(6, 4);
        assert!(s.check_fits(2, 2).is_ok());
        s.bvr[3] = 0x1000;
        assert_eq!(s.used_breakpoints(), 4);
        let e = s.check_fits(2, 2).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("DBGBVR3_EL1") && m.contains("0x1000") && m.contains("only 2"),
            "{m}"
        );
        assert!(s.check_fits(4, 2).is_ok());
        s.wcr[2] = 1;
        let m = s.check_fits(6, 2).unwrap_err().to_string();
        assert!(m.contains("DBGWCR2_EL1") && m.contains("WPS"), "{m}");
    }

    #[test]
    fn json_round_trips_with_hex_and_rejects_bad_shapes() {
        let mut s = snap(2, 2);
        s.bcr[1] = 0x1e7;
        s.mdscr_el1 = 0xa000;
        let j = s.to_json().unwrap();
        assert!(j.contains("\"0x1e7\"") && j.contains("\"0xa000\""), "{j}");
        assert_eq!(DebugSnapshot::from_json(&j).unwrap(), s);
        let bad = r#"{"bcr":["0x1"],"bvr":[],"wcr":[],"wvr":[],"mdscr_el1":0,"mdccint_el1":0,"oslsr_el1":"0x8"}"#;
        let e = DebugSnapshot::from_json(bad).unwrap_err().to_string();
        assert!(e.contains("pairs"), "{e}");
        assert!(DebugSnapshot::from_json("{").is_err());
    }
}
