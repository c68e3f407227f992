//! The loaded code's register accesses, routed by the shim's register number to the
//! simulator's [`RegAccess`] (so the checking access records and checks each one), with the
//! kernel function each belongs to.

use hypdbg_hyp::access::{RegAccess, Scope};
use hypdbg_hyp::fault::HypFault;
use hypdbg_model::{DbgBank, SysReg};

/// Which half of the world switch a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `__debug_switch_to_guest` (era 1: `__debug_cond_save_host_state` + restore).
    ToGuest,
    /// `__debug_switch_to_host` (era 1: save + `__debug_cond_restore_host_state`).
    ToHost,
}

/// The host-only registers of the nVHE wrappers (SPE, TRBE, BRBE): the shim's number and name.
pub const HOST_ONLY: [(u32, &str); 9] = [
    (0x80, "PMSCR_EL1"),
    (0x81, "PMBLIMITR_EL1"),
    (0x82, "PMBPTR_EL1"),
    (0x83, "PMBSR_EL1"),
    (0x84, "TRFCR_EL1"),
    (0x85, "TRBLIMITR_EL1"),
    (0x86, "TRBPTR_EL1"),
    (0x87, "TRBSR_EL1"),
    (0x88, "BRBCR_EL1"),
];

/// A register as the shim numbers it (`enum hypdbg_sysreg` in shim.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShimReg {
    /// DBG{B,W}{C,V}R\<n>_EL1: 0x00 + bank * 16 + n.
    Dbg(DbgBank, usize),
    /// MDCCINT_EL1 (0x40).
    Mdccint,
    /// MDSCR_EL1 (0x41).
    Mdscr,
    /// ID_AA64DFR0_EL1 (0x42).
    IdAa64dfr0,
    /// MDCR_EL2 (0x43).
    MdcrEl2,
    /// A host-only register (0x80..): index into [`HOST_ONLY`].
    HostOnly(usize),
}

impl ShimReg {
    /// The register numbered `id`.
    pub fn decode(id: u32) -> Option<Self> {
        let bank = |b: u32| match b {
            0 => Some(DbgBank::Bcr),
            1 => Some(DbgBank::Bvr),
            2 => Some(DbgBank::Wcr),
            3 => Some(DbgBank::Wvr),
            _ => None,
        };
        Some(match id {
            0x00..=0x3f => ShimReg::Dbg(bank(id / 16)?, (id % 16) as usize),
            0x40 => ShimReg::Mdccint,
            0x41 => ShimReg::Mdscr,
            0x42 => ShimReg::IdAa64dfr0,
            0x43 => ShimReg::MdcrEl2,
            _ => ShimReg::HostOnly(HOST_ONLY.iter().position(|(n, _)| *n == id)?),
        })
    }
}

/// One call's state, behind the context pointer the C callbacks receive.
pub struct CallCtx<'a, A> {
    a: &'a mut A,
    dir: Direction,
    host_only: [u64; HOST_ONLY.len()],
    /// The first faulting access (the loaded code stops there, a hyp panic).
    pub fault: Option<HypFault>,
}

impl<'a, A: RegAccess> CallCtx<'a, A> {
    /// A call in direction `dir` through `a`.
    pub fn new(a: &'a mut A, dir: Direction) -> Self {
        CallCtx {
            a,
            dir,
            host_only: [0; HOST_ONLY.len()],
            fault: None,
        }
    }

    /// The kernel function a debug-state access belongs to: on entry the host is saved (MRS)
    /// and the guest restored (MSR); on exit the guest is saved and the host restored.
    fn scope(&self, write: bool) -> Scope {
        match (self.dir, write) {
            (Direction::ToGuest, false) => Scope::SaveHost,
            (Direction::ToGuest, true) => Scope::RestoreGuest,
            (Direction::ToHost, false) => Scope::SaveGuest,
            (Direction::ToHost, true) => Scope::RestoreHost,
        }
    }

    /// `read_sysreg(reg)`.
    pub fn read(&mut self, id: u32) -> Result<u64, HypFault> {
        let reg =
            ShimReg::decode(id).ok_or(HypFault::Bug("the shim read an unknown register number"))?;
        match reg {
            ShimReg::Dbg(bank, n) => {
                self.a.scope(self.scope(false));
                self.a.read_dbg(bank, n)
            }
            ShimReg::Mdccint => {
                self.a.scope(self.scope(false));
                self.a.read_sys(SysReg::MdccintEl1)
            }
            ShimReg::Mdscr => {
                self.a.scope(Scope::SysregSwitch);
                self.a.read_sys(SysReg::MdscrEl1)
            }
            ShimReg::IdAa64dfr0 => {
                self.a.scope(Scope::Other);
                Ok(self.a.read_id_aa64dfr0())
            }
            ShimReg::MdcrEl2 => {
                self.a.scope(Scope::Traps);
                Ok(self.a.read_mdcr_el2())
            }
            ShimReg::HostOnly(i) => Ok(self.host_only.get(i).copied().unwrap_or(0)),
        }
    }

    /// `write_sysreg(v, reg)`.
    pub fn write(&mut self, id: u32, v: u64) -> Result<(), HypFault> {
        let reg = ShimReg::decode(id)
            .ok_or(HypFault::Bug("the shim wrote an unknown register number"))?;
        match reg {
            ShimReg::Dbg(bank, n) => {
                self.a.scope(self.scope(true));
                self.a.write_dbg(bank, n, v)
            }
            ShimReg::Mdccint => {
                self.a.scope(self.scope(true));
                self.a.write_sys(SysReg::MdccintEl1, v)
            }
            ShimReg::Mdscr => {
                self.a.scope(Scope::SysregSwitch);
                self.a.write_sys(SysReg::MdscrEl1, v)
            }
            ShimReg::IdAa64dfr0 => Err(HypFault::Bug(
                "MSR to ID_AA64DFR0_EL1, a read-only register",
            )),
            ShimReg::MdcrEl2 => {
                self.a.scope(Scope::Traps);
                self.a.write_mdcr_el2(v);
                Ok(())
            }
            ShimReg::HostOnly(i) => {
                if let Some(slot) = self.host_only.get_mut(i) {
                    *slot = v;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_decode_as_the_shim_assigns_them() {
        assert_eq!(ShimReg::decode(0x00), Some(ShimReg::Dbg(DbgBank::Bcr, 0)));
        assert_eq!(ShimReg::decode(0x1f), Some(ShimReg::Dbg(DbgBank::Bvr, 15)));
        assert_eq!(ShimReg::decode(0x25), Some(ShimReg::Dbg(DbgBank::Wcr, 5)));
        assert_eq!(ShimReg::decode(0x3f), Some(ShimReg::Dbg(DbgBank::Wvr, 15)));
        assert_eq!(ShimReg::decode(0x40), Some(ShimReg::Mdccint));
        assert_eq!(ShimReg::decode(0x42), Some(ShimReg::IdAa64dfr0));
        assert_eq!(ShimReg::decode(0x88), Some(ShimReg::HostOnly(8)));
        assert_eq!(ShimReg::decode(0x44), None);
    }

    #[test]
    fn shim_header_numbers_match() {
        let shim = include_str!("../shim/hypdbg/shim.h");
        for (n, name) in HOST_ONLY {
            assert!(
                shim.contains(&format!("HYPDBG_SR_SYS_{name} = {n:#x},")),
                "{name} {n:#x}"
            );
        }
        for (tok, n) in [
            ("mdccint_el1", 0x40),
            ("mdscr_el1", 0x41),
            ("id_aa64dfr0_el1", 0x42),
            ("mdcr_el2", 0x43),
        ] {
            assert!(
                shim.contains(&format!("HYPDBG_SR_{tok} = {n:#x},")),
                "{tok}"
            );
        }
        for (bank, base) in [
            ("dbgbcr", 0x00),
            ("dbgbvr", 0x10),
            ("dbgwcr", 0x20),
            ("dbgwvr", 0x30),
        ] {
            assert!(
                shim.contains(&format!("HYPDBG_BANK({bank}, {base:#04x})")),
                "{bank}"
            );
        }
    }
}
