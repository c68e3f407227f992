//! A physical CPU: its ID_AA64DFR0 profile, live registers and per-CPU `kvm_host_data`.

use hypdbg_model::ctrl::{DBG_MDSCR_KDE, DBG_MDSCR_MDE, MDCR_EL2_HPMFZS};
use hypdbg_model::{DbgBank, DebugFeatures, DebugRegFile};
use serde::Serialize;

use crate::access::PhysRegs;
use crate::context::KvmHostData;

/// The implemented registers of one bank (a fixed array and the count, so that snapshots
/// cost no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bank {
    regs: [u64; 16],
    len: u8,
}

impl Bank {
    /// The implemented registers.
    pub fn as_slice(&self) -> &[u64] {
        &self.regs[..usize::from(self.len)]
    }
    /// Register `n`, if implemented.
    pub fn get(&self, n: usize) -> Option<&u64> {
        self.as_slice().get(n)
    }
    /// Number of implemented registers.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    /// Whether the bank is empty (never, on a valid CPU).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Iterate.
    pub fn iter(&self) -> std::slice::Iter<'_, u64> {
        self.as_slice().iter()
    }
}

impl std::ops::Index<usize> for Bank {
    type Output = u64;
    fn index(&self, n: usize) -> &u64 {
        &self.as_slice()[n]
    }
}

impl Serialize for Bank {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

/// Everything of the host's that a run must give back bit for bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HostSnapshot {
    /// DBGBCR\<n>, DBGBVR\<n>, DBGWCR\<n>, DBGWVR\<n> (implemented ones), per bank.
    pub banks: [Bank; 4],
    /// MDSCR_EL1.
    pub mdscr_el1: u64,
    /// MDCCINT_EL1.
    pub mdccint_el1: u64,
    /// CONTEXTIDR_EL1.
    pub contextidr_el1: u64,
    /// OSLSR_EL1 (the physical OS lock).
    pub oslsr_el1: u64,
    /// MDCR_EL2.
    pub mdcr_el2: u64,
}

impl HostSnapshot {
    /// Read the live registers.
    pub fn of(regs: &PhysRegs) -> Self {
        HostSnapshot {
            banks: DbgBank::ALL.map(|b| {
                let src = regs.file.bank(b);
                let mut regs = [0; 16];
                regs[..src.len()].copy_from_slice(src);
                Bank {
                    regs,
                    len: src.len() as u8,
                }
            }),
            mdscr_el1: regs.file.mdscr_el1,
            mdccint_el1: regs.file.mdccint_el1,
            contextidr_el1: regs.file.contextidr_el1,
            oslsr_el1: regs.file.oslsr_el1,
            mdcr_el2: regs.mdcr_el2,
        }
    }
}

/// A physical CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcpu {
    /// Its number.
    pub id: usize,
    /// The live registers.
    pub regs: PhysRegs,
    /// `kvm_host_data` for this CPU.
    pub host_data: KvmHostData,
    /// The per-CPU `mdcr_el2` KVM read at init (`__kvm_get_mdcr_el2`): the HPMN source.
    pub mdcr_el2_boot: u64,
}

impl Pcpu {
    /// A CPU whose host kernel uses its own hardware breakpoints and watchpoints, so that
    /// every host register has a distinctive value a run must preserve: DBGBCR = 0x1e7,
    /// DBGBVR = a kernel address, DBGWCR = 0x1ff7 (stores, whole doubleword), MDSCR_EL1 =
    /// KDE|MDE, MDCCINT_EL1 and CONTEXTIDR_EL1 non-zero, MDCR_EL2 with HPMN = 6 and bit 36
    /// (HPMFZS) set.
    pub fn new(id: usize, features: DebugFeatures) -> Self {
        let mut file = DebugRegFile::new(features);
        let base = 0xffff_8000_1000_0000u64 + (id as u64) * 0x1_0000;
        for n in 0..features.num_brps() {
            let _ = file.write_dbg(DbgBank::Bcr, n, 0x1e7);
            let _ = file.write_dbg(DbgBank::Bvr, n, base + (n as u64) * 4);
        }
        for n in 0..features.num_wrps() {
            let _ = file.write_dbg(DbgBank::Wcr, n, 0x1ff7);
            let _ = file.write_dbg(DbgBank::Wvr, n, base + 0x8000 + (n as u64) * 8);
        }
        file.mdscr_el1 = DBG_MDSCR_KDE | DBG_MDSCR_MDE;
        file.mdccint_el1 = 1 << 29;
        file.contextidr_el1 = 0x100 + id as u64;
        let mdcr = MDCR_EL2_HPMFZS | 6;
        Pcpu {
            id,
            regs: PhysRegs {
                file,
                mdcr_el2: mdcr,
            },
            host_data: KvmHostData::default(),
            mdcr_el2_boot: mdcr,
        }
    }

    /// The CPU's ID_AA64DFR0_EL1.
    pub fn features(&self) -> &DebugFeatures {
        self.regs.file.features()
    }

    /// What the host has in its registers now.
    pub fn host_snapshot(&self) -> HostSnapshot {
        HostSnapshot::of(&self.regs)
    }
}
