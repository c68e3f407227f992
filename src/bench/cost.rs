//! THE cost table: what one register access of the debug world switch costs on a real Armv8
//! core, in cycles, and the published world-switch costs the report compares against.
//! Everything `hypdbg bench` says in cycles comes from this one file; what it says in
//! instructions of real kernels (`--kernel`) comes from measurements and the instruction model
//! fitted on them ([`super::predict::MODEL`]).
//!
//! # What is measured and what is modelled
//!
//! The simulator's round trip runs on the host CPU (x86-64 or arm64 alike) and moves the
//! debug state between Rust arrays: its nanoseconds say how much work the *flow code* does
//! (branches, the implemented-count checks, the fall-through copy), not what the same
//! moves cost as MRS/MSR on an Arm core. For that, the report counts the accesses of one
//! round trip with the checking implementation ([`hypdbg_hyp::CheckingAccess`]) and
//! multiplies them by [`COSTS`] ([`modelled_cycles`]).
//!
//! # Sources, and which numbers are ESTIMATES
//!
//! - *Arm Cortex-A57 Software Optimization Guide* (UAN 0015B, 2016), *Arm Cortex-A72
//!   Software Optimization Guide* (UAN 0016A, 2015) and *Arm Neoverse N1 Software
//!   Optimization Guide* (2019): instruction latencies and throughputs of the integer,
//!   load/store and ASIMD pipelines: at least one store per cycle and a 4-cycle
//!   load-to-use latency for an L1 hit; LLVM's scheduling models transcribed from them
//!   (`AArch64SchedA57.td`: `LoadLatency = 4`, `MispredictPenalty = 14`;
//!   `AArch64SchedNeoverseN1.td`: `LoadLatency = 4`, `MispredictPenalty = 11`) agree.
//! - We found **no published latency for MRS/MSR of the debug registers**
//!   (`DBG{B,W}{C,V}R<n>_EL1`, MDCCINT_EL1) or of ID_AA64DFR0_EL1 on these cores: LLVM's models
//!   give system-register moves a generic 1-cycle `WriteSys`, which is a scheduling
//!   placeholder, not a measurement. These accesses go through the core's in-order
//!   system-register path, and writes to non-renamed control registers are at least
//!   partially serialising, so the MRS, MSR and ID-read rows below are **ESTIMATES**
//!   (order of magnitude; change them here).
//! - ISB: a context synchronisation event refills the pipeline, so it costs at least the
//!   branch-mispredict penalty above (11 to 14 cycles) plus draining outstanding
//!   system-register writes: the figure is an **ESTIMATE**. The kernel's debug switch
//!   issues no ISB of its own (the ERET into the guest, and the exception back, synchronise
//!   the context), so the round trip's ISB count is 0; the row is here for variants that
//!   add one.
//! - Published world-switch costs, for scale: a null hypercall round trip of about
//!   **306 ns** on Ampere Altra (Neoverse N1, VHE) measured with kvm-unit-tests'
//!   `arm/micro-bench` (hvc test, 2024), and about **6,500 cycles** for a KVM/ARM hypercall
//!   on an APM X-Gene (non-VHE, debug state switched lazily) in Dall, Li, Lim, Nieh and
//!   Koloventzos, *ARM Virtualization: Performance and Architectural Implications*,
//!   ISCA 2016. Converting modelled cycles to Altra nanoseconds assumes the Altra's
//!   3.0 GHz clock ([`ALTRA_CLOCK_GHZ`], an ASSUMPTION: Q80-30 parts; others run at
//!   2.6 to 3.3 GHz).

use hypdbg_hyp::access::{AccessRecord, HypReg};
use hypdbg_model::SysReg;
use serde::Serialize;

/// One kind of access and its cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AccessCost {
    /// Stable key (`mrs_dbg`, `msr_dbg`, ...).
    pub key: &'static str,
    /// What it is.
    pub what: &'static str,
    /// Cycles per access.
    pub cycles: f64,
    /// Whether the figure is an estimate (no published measurement).
    pub estimate: bool,
    /// Where the figure comes from.
    pub source: &'static str,
}

/// The per-access costs, in cycles. See the module documentation for the sources.
pub const COSTS: [AccessCost; 7] = [
    AccessCost {
        key: "mrs_dbg",
        what: "MRS of DBG{B,W}{C,V}R<n>_EL1 or MDCCINT_EL1",
        cycles: 5.0,
        estimate: true,
        source: "ESTIMATE: no published latency; in-order system-register read",
    },
    AccessCost {
        key: "msr_dbg",
        what: "MSR of DBG{B,W}{C,V}R<n>_EL1 or MDCCINT_EL1",
        cycles: 10.0,
        estimate: true,
        source: "ESTIMATE: no published latency; partially serialising system-register write",
    },
    AccessCost {
        key: "mrs_id",
        what: "MRS of ID_AA64DFR0_EL1 (eras 1 and 2 read it on every switch)",
        cycles: 5.0,
        estimate: true,
        source: "ESTIMATE: as mrs_dbg",
    },
    AccessCost {
        key: "sysreg_other",
        what: "MRS/MSR of MDSCR_EL1, CONTEXTIDR_EL1 or MDCR_EL2",
        cycles: 8.0,
        estimate: true,
        source: "ESTIMATE: between mrs_dbg and msr_dbg",
    },
    AccessCost {
        key: "store",
        what: "STR of a saved register to the save area (one per MRS saved)",
        cycles: 1.0,
        estimate: false,
        source: "Cortex-A57/A72/Neoverse N1 SWOGs: at least one store per cycle",
    },
    AccessCost {
        key: "load",
        what: "LDR of a register to restore from the save area (one per MSR restored)",
        cycles: 1.0,
        estimate: false,
        source: "SWOGs: loads pipelined at 1/cycle or better (4-cycle L1 latency hidden)",
    },
    AccessCost {
        key: "isb",
        what: "ISB (none in the debug switch itself: the ERET synchronises)",
        cycles: 30.0,
        estimate: true,
        source: "ESTIMATE: >= mispredict penalty (A57 14, N1 11 cycles) + write drain",
    },
];

/// The cost of the access kind `key` (0 for an unknown key).
pub fn cycles(key: &str) -> f64 {
    COSTS
        .iter()
        .find(|c| c.key == key)
        .map_or(0.0, |c| c.cycles)
}

/// A null hypercall round trip on Ampere Altra, kvm-unit-tests arm/micro-bench (2024), ns.
pub const ALTRA_NULL_HYPERCALL_NS: f64 = 306.0;
/// The clock assumed to convert modelled cycles to Altra nanoseconds (ASSUMPTION), GHz.
pub const ALTRA_CLOCK_GHZ: f64 = 3.0;
/// A KVM/ARM hypercall on APM X-Gene, Dall et al., ISCA 2016, cycles.
pub const XGENE_HYPERCALL_CYCLES: f64 = 6500.0;

/// The accesses of one round trip, by the classes [`COSTS`] prices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AccessCounts {
    /// MRS of a breakpoint/watchpoint register.
    pub dbg_reads: u32,
    /// MSR of a breakpoint/watchpoint register.
    pub dbg_writes: u32,
    /// MRS of MDCCINT_EL1.
    pub mdccint_reads: u32,
    /// MSR of MDCCINT_EL1.
    pub mdccint_writes: u32,
    /// MRS of ID_AA64DFR0_EL1.
    pub id_reads: u32,
    /// MDSCR_EL1, CONTEXTIDR_EL1 and MDCR_EL2 moves (none in the debug switch proper).
    pub other: u32,
    /// ISBs (the switch issues none; see the module documentation).
    pub isb: u32,
}

impl AccessCounts {
    /// Count a checking run's records.
    pub fn of(records: &[AccessRecord]) -> Self {
        let mut c = AccessCounts::default();
        for r in records {
            match (r.reg, r.write) {
                (HypReg::Sys(SysReg::Dbg(..)), false) => c.dbg_reads += 1,
                (HypReg::Sys(SysReg::Dbg(..)), true) => c.dbg_writes += 1,
                (HypReg::Sys(SysReg::MdccintEl1), false) => c.mdccint_reads += 1,
                (HypReg::Sys(SysReg::MdccintEl1), true) => c.mdccint_writes += 1,
                (HypReg::IdAa64dfr0El1, _) => c.id_reads += 1,
                _ => c.other += 1,
            }
        }
        c
    }

    /// Debug-state registers moved: breakpoint/watchpoint registers and MDCCINT_EL1.
    pub const fn debug_state_moves(&self) -> u32 {
        self.dbg_reads + self.dbg_writes + self.mdccint_reads + self.mdccint_writes
    }
}

/// Modelled cycles of a round trip: every MRS saved costs the read and a store, every MSR
/// restored a load and the write, plus ID reads, other system registers and ISBs.
pub fn modelled_cycles(c: &AccessCounts) -> f64 {
    let reads = f64::from(c.dbg_reads + c.mdccint_reads);
    let writes = f64::from(c.dbg_writes + c.mdccint_writes);
    reads * (cycles("mrs_dbg") + cycles("store"))
        + writes * (cycles("load") + cycles("msr_dbg"))
        + f64::from(c.id_reads) * cycles("mrs_id")
        + f64::from(c.other) * cycles("sysreg_other")
        + f64::from(c.isb) * cycles("isb")
}

/// What share of a published world switch `cycles` of debug state would be.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Shares {
    /// `cycles / 6500` (X-Gene hypercall, Dall et al. 2016).
    pub of_xgene_hypercall: f64,
    /// `cycles` at the assumed 3.0 GHz, in ns.
    pub ns_at_altra_clock: f64,
    /// `ns_at_altra_clock / 306` (Altra null hypercall, kvm-unit-tests 2024).
    pub of_altra_hypercall: f64,
}

/// The shares of the two published switches.
pub fn shares(cycles: f64) -> Shares {
    let ns = cycles / ALTRA_CLOCK_GHZ;
    Shares {
        of_xgene_hypercall: cycles / XGENE_HYPERCALL_CYCLES,
        ns_at_altra_clock: ns,
        of_altra_hypercall: ns / ALTRA_NULL_HYPERCALL_NS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_complete_and_estimates_are_marked() {
        for key in [
            "mrs_dbg",
            "msr_dbg",
            "mrs_id",
            "sysreg_other",
            "store",
            "load",
            "isb",
        ] {
            assert!(cycles(key) > 0.0, "{key}");
        }
        assert_eq!(cycles("nope"), 0.0);
        for c in COSTS {
            assert_eq!(c.estimate, c.source.starts_with("ESTIMATE"), "{}", c.key);
        }
    }

    #[test]
    fn modelled_cycles_and_shares() {
        // Dirty cortex-a57 (6/4), era 3: 40 reads, 40 writes, MDCCINT 2 + 2, no ID reads.
        let c = AccessCounts {
            dbg_reads: 40,
            dbg_writes: 40,
            mdccint_reads: 2,
            mdccint_writes: 2,
            ..Default::default()
        };
        assert_eq!(c.debug_state_moves(), 84);
        let cyc = modelled_cycles(&c);
        assert_eq!(cyc, 42.0 * 6.0 + 42.0 * 11.0);
        let s = shares(cyc);
        assert!((s.of_xgene_hypercall - cyc / 6500.0).abs() < 1e-12);
        assert!((s.ns_at_altra_clock - cyc / 3.0).abs() < 1e-9);
        assert!((s.of_altra_hypercall - cyc / 3.0 / 306.0).abs() < 1e-12);
        assert_eq!(modelled_cycles(&AccessCounts::default()), 0.0);
    }
}
