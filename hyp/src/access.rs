//! The register-access trait the world-switch code is generic over.
//!
//! [`PlainAccess`] reads and writes the physical registers directly: with inlining the fall-
//! through copy compiles to moves (plus the implemented-count check that keeps an UNDEFINED
//! access a value, not a panic). [`CheckingAccess`] runs the same code and records every
//! access (register, index, direction, value, which kernel function), so that invariants,
//! traces and a modelled cycle cost all come from one implementation of the switch.

use hypdbg_model::{DbgBank, DebugRegFile, SysReg};
use serde::Serialize;

use crate::fault::HypFault;

/// The physical registers the switch touches: the debug register file and MDCR_EL2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysRegs {
    /// DBG{B,W}{C,V}R\<n>_EL1, MDSCR_EL1, MDCCINT_EL1, OSLSR_EL1, CONTEXTIDR_EL1.
    pub file: DebugRegFile,
    /// MDCR_EL2.
    pub mdcr_el2: u64,
}

/// The kernel function an access belongs to (for traces and accounting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Scope {
    /// `__debug_save_state(host_dbg, host_ctxt)`.
    SaveHost,
    /// `__debug_restore_state(guest_dbg, guest_ctxt)`.
    RestoreGuest,
    /// `__debug_save_state(guest_dbg, guest_ctxt)`.
    SaveGuest,
    /// `__debug_restore_state(host_dbg, host_ctxt)`.
    RestoreHost,
    /// `__sysreg_save_state` / `__sysreg_restore_state` (MDSCR_EL1, CONTEXTIDR_EL1).
    SysregSwitch,
    /// `__activate_traps_common` / `__deactivate_traps_common` (MDCR_EL2).
    Traps,
    /// ID_AA64DFR0_EL1 reads and anything else.
    Other,
}

impl Scope {
    /// The kernel's words.
    pub const fn kernel_name(self) -> &'static str {
        match self {
            Scope::SaveHost => "__debug_save_state(host)",
            Scope::RestoreGuest => "__debug_restore_state(guest)",
            Scope::SaveGuest => "__debug_save_state(guest)",
            Scope::RestoreHost => "__debug_restore_state(host)",
            Scope::SysregSwitch => "__sysreg_{save,restore}_state",
            Scope::Traps => "__{activate,deactivate}_traps_common",
            Scope::Other => "other",
        }
    }

    /// The kernel's words in the kernels of `era`: v4.5..v4.16 had no
    /// `__{activate,deactivate}_traps_common` (MDCR_EL2 was switched in `__activate_traps`).
    pub const fn kernel_name_in(self, era: crate::flow::Era) -> &'static str {
        match (self, era) {
            (Scope::Traps, crate::flow::Era::One) => "__{activate,deactivate}_traps",
            _ => self.kernel_name(),
        }
    }
}

/// A register as the switch code names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum HypReg {
    /// A system register of the debug register file.
    Sys(SysReg),
    /// MDCR_EL2.
    MdcrEl2,
    /// ID_AA64DFR0_EL1.
    IdAa64dfr0El1,
}

impl std::fmt::Display for HypReg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HypReg::Sys(r) => write!(f, "{r}"),
            HypReg::MdcrEl2 => f.write_str("MDCR_EL2"),
            HypReg::IdAa64dfr0El1 => f.write_str("ID_AA64DFR0_EL1"),
        }
    }
}

/// One recorded register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AccessRecord {
    /// The register.
    pub reg: HypReg,
    /// MSR (true) or MRS.
    pub write: bool,
    /// The value moved.
    pub value: u64,
    /// The kernel function.
    pub scope: Scope,
}

/// How the world-switch code reaches the physical registers (`read_sysreg`/`write_sysreg`).
pub trait RegAccess {
    /// `read_debug(reg, n)`: MRS DBG\<bank>\<n>_EL1.
    fn read_dbg(&mut self, bank: DbgBank, n: usize) -> Result<u64, HypFault>;
    /// `write_debug(v, reg, n)`: MSR DBG\<bank>\<n>_EL1.
    fn write_dbg(&mut self, bank: DbgBank, n: usize, v: u64) -> Result<(), HypFault>;
    /// MRS of MDSCR_EL1, MDCCINT_EL1, CONTEXTIDR_EL1...
    fn read_sys(&mut self, reg: SysReg) -> Result<u64, HypFault>;
    /// MSR of MDSCR_EL1, MDCCINT_EL1, CONTEXTIDR_EL1...
    fn write_sys(&mut self, reg: SysReg, v: u64) -> Result<(), HypFault>;
    /// MRS MDCR_EL2.
    fn read_mdcr_el2(&mut self) -> u64;
    /// MSR MDCR_EL2.
    fn write_mdcr_el2(&mut self, v: u64);
    /// MRS ID_AA64DFR0_EL1.
    fn read_id_aa64dfr0(&mut self) -> u64;
    /// Say which kernel function the following accesses belong to (no-op when plain).
    #[inline(always)]
    fn scope(&mut self, _scope: Scope) {}
}

/// Direct access: what the compiled kernel does.
pub struct PlainAccess<'a> {
    regs: &'a mut PhysRegs,
}

impl<'a> PlainAccess<'a> {
    /// Access `regs`.
    pub fn new(regs: &'a mut PhysRegs) -> Self {
        PlainAccess { regs }
    }
}

impl RegAccess for PlainAccess<'_> {
    #[inline(always)]
    fn read_dbg(&mut self, bank: DbgBank, n: usize) -> Result<u64, HypFault> {
        Ok(self.regs.file.read_dbg(bank, n)?)
    }
    #[inline(always)]
    fn write_dbg(&mut self, bank: DbgBank, n: usize, v: u64) -> Result<(), HypFault> {
        Ok(self.regs.file.write_dbg(bank, n, v)?)
    }
    #[inline(always)]
    fn read_sys(&mut self, reg: SysReg) -> Result<u64, HypFault> {
        Ok(self.regs.file.read(reg)?)
    }
    #[inline(always)]
    fn write_sys(&mut self, reg: SysReg, v: u64) -> Result<(), HypFault> {
        Ok(self.regs.file.write(reg, v)?)
    }
    #[inline(always)]
    fn read_mdcr_el2(&mut self) -> u64 {
        self.regs.mdcr_el2
    }
    #[inline(always)]
    fn write_mdcr_el2(&mut self, v: u64) {
        self.regs.mdcr_el2 = v;
    }
    #[inline(always)]
    fn read_id_aa64dfr0(&mut self) -> u64 {
        self.regs.file.features().raw()
    }
}

/// Access that records everything, including the faulting access that stops a run.
pub struct CheckingAccess<'a> {
    inner: PlainAccess<'a>,
    log: &'a mut Vec<AccessRecord>,
    scope: Scope,
}

impl<'a> CheckingAccess<'a> {
    /// Access `regs`, appending to `log`.
    pub fn new(regs: &'a mut PhysRegs, log: &'a mut Vec<AccessRecord>) -> Self {
        CheckingAccess {
            inner: PlainAccess::new(regs),
            log,
            scope: Scope::Other,
        }
    }
    fn record(&mut self, reg: HypReg, write: bool, value: u64) {
        self.log.push(AccessRecord {
            reg,
            write,
            value,
            scope: self.scope,
        });
    }
}

impl RegAccess for CheckingAccess<'_> {
    fn read_dbg(&mut self, bank: DbgBank, n: usize) -> Result<u64, HypFault> {
        let r = self.inner.read_dbg(bank, n);
        let reg = SysReg::Dbg(bank, n.min(15) as u8);
        self.record(HypReg::Sys(reg), false, *r.as_ref().unwrap_or(&0));
        r
    }
    fn write_dbg(&mut self, bank: DbgBank, n: usize, v: u64) -> Result<(), HypFault> {
        self.record(HypReg::Sys(SysReg::Dbg(bank, n.min(15) as u8)), true, v);
        self.inner.write_dbg(bank, n, v)
    }
    fn read_sys(&mut self, reg: SysReg) -> Result<u64, HypFault> {
        let r = self.inner.read_sys(reg);
        self.record(HypReg::Sys(reg), false, *r.as_ref().unwrap_or(&0));
        r
    }
    fn write_sys(&mut self, reg: SysReg, v: u64) -> Result<(), HypFault> {
        self.record(HypReg::Sys(reg), true, v);
        self.inner.write_sys(reg, v)
    }
    fn read_mdcr_el2(&mut self) -> u64 {
        let v = self.inner.read_mdcr_el2();
        self.record(HypReg::MdcrEl2, false, v);
        v
    }
    fn write_mdcr_el2(&mut self, v: u64) {
        self.record(HypReg::MdcrEl2, true, v);
        self.inner.write_mdcr_el2(v);
    }
    fn read_id_aa64dfr0(&mut self) -> u64 {
        let v = self.inner.read_id_aa64dfr0();
        self.record(HypReg::IdAa64dfr0El1, false, v);
        v
    }
    fn scope(&mut self, scope: Scope) {
        self.scope = scope;
    }
}

/// Registers read and written, by class: what a world switch cost in register moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SwitchStats {
    /// DBG{B,W}{C,V}R\<n>_EL1 reads.
    pub dbg_reads: u32,
    /// DBG{B,W}{C,V}R\<n>_EL1 writes.
    pub dbg_writes: u32,
    /// MDCCINT_EL1 reads and writes.
    pub mdccint: u32,
    /// MDSCR_EL1 and CONTEXTIDR_EL1 moves (EL1 context switch).
    pub context: u32,
    /// MDCR_EL2 reads and writes.
    pub mdcr_el2: u32,
    /// ID_AA64DFR0_EL1 reads.
    pub id_reads: u32,
}

impl SwitchStats {
    /// Count the records.
    pub fn of(records: &[AccessRecord]) -> Self {
        let mut s = SwitchStats::default();
        for r in records {
            match r.reg {
                HypReg::Sys(SysReg::Dbg(..)) if r.write => s.dbg_writes += 1,
                HypReg::Sys(SysReg::Dbg(..)) => s.dbg_reads += 1,
                HypReg::Sys(SysReg::MdccintEl1) => s.mdccint += 1,
                HypReg::Sys(_) => s.context += 1,
                HypReg::MdcrEl2 => s.mdcr_el2 += 1,
                HypReg::IdAa64dfr0El1 => s.id_reads += 1,
            }
        }
        s
    }
    /// Debug-state moves: breakpoint/watchpoint registers and MDCCINT_EL1 (what "lazy" must
    /// keep at zero).
    pub const fn debug_state_moves(&self) -> u32 {
        self.dbg_reads + self.dbg_writes + self.mdccint
    }
    /// Add another.
    pub fn add(&mut self, o: &SwitchStats) {
        self.dbg_reads += o.dbg_reads;
        self.dbg_writes += o.dbg_writes;
        self.mdccint += o.mdccint;
        self.context += o.context;
        self.mdcr_el2 += o.mdcr_el2;
        self.id_reads += o.id_reads;
    }
}
