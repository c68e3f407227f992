//! What a KVM_RUN round trip costs in each debug state, measured on the real kernel: the
//! guest loops on an MMIO store to a doorbell outside every memslot, so every KVM_RUN is one
//! round trip (host kernel, EL2 world switch, guest, and back to the agent); the agent times
//! batches of them with CLOCK_MONOTONIC, which under `-icount shift=0` counts instructions.
//!
//! The states are visited in turn, batch by batch, in one VM ([`measure_states`]): each visit
//! first puts the vcpu in its state (the guest writes its own MDSCR_EL1 and OSLAR_EL1 in a
//! prologue run; userspace sets KVM_SET_GUEST_DEBUG), then times a warm-up batch (dropped) and
//! the batches of the plan. Any exit other than the one the state expects fails the request.
//!
//! This module reports raw batches; the statistics live in the caller.

use std::fmt;
use std::time::Duration;

use hypdbg_model::ctrl::{DBG_MDSCR_KDE, DBG_MDSCR_MDE};
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS, KvmGuestDebug,
    core_reg,
};

use crate::agent::Agent;
use crate::error::{ErrorKind, Result};
use crate::vm::{Batch, BenchBatches, BenchExit, KVM_ARM_VCPU_PSCI_0_2, RealVm, VcpuId};

/// Guest-physical base of the guest's RAM (one 64 KiB slot).
pub const RAM: u64 = 0x4000_0000;
/// Size of the RAM slot.
pub const RAM_SIZE: u64 = 0x1_0000;
/// The doorbell: a guest-physical address outside every memslot, so a store to it exits to
/// userspace (KVM_EXIT_MMIO) on every kernel.
pub const DOORBELL: u64 = 0x1000_0000;

/// The guest, at [`RAM`] (x1 = 1, x20 = [`DOORBELL`]; x2 and x3 set per state):
///
/// ```text
/// 0x00 prologue: nop                  // skipped when an MMIO completion advances the PC
/// 0x04           msr mdscr_el1, x2    // the guest's own debug enables (KDE|MDE or 0)
/// 0x08           msr oslar_el1, x3    // the OS lock (1 or 0)
/// 0x0c           isb
/// 0x10 doorbell: str x1, [x20]        // KVM_EXIT_MMIO: one round trip per KVM_RUN
/// 0x14           b doorbell
/// 0x18 step:     nop                  // the single-step loop: one instruction per KVM_RUN
/// 0x1c spin:     b spin
/// ```
pub const PROGRAM: [u32; 8] = [
    0xd503_201f, // nop
    0xd510_0242, // msr mdscr_el1, x2
    0xd510_1083, // msr oslar_el1, x3
    0xd503_3fdf, // isb
    0xf900_0281, // str x1, [x20]
    0x17ff_ffff, // b .-4
    0xd503_201f, // nop
    0x1400_0000, // b .
];
/// The prologue's address (PC for a state change).
pub const PROLOGUE: u64 = RAM;
/// The single-step loop's address.
pub const STEP_LOOP: u64 = RAM + 0x18;
/// The breakpoint userspace programs for [`DebugState::UseHw`]: an address the guest never
/// executes (DBGBCR 0x1e7: enabled, EL1 and EL0, all byte lanes).
pub const USE_HW_BREAKPOINT: (u64, u64) = (0x1e7, RAM + 0x800);
/// The watchpoint userspace programs for [`DebugState::UseHw`]: stores to 8 bytes the guest
/// never touches (DBGWCR 0x1ff7).
pub const USE_HW_WATCHPOINT: (u64, u64) = (0x1ff7, RAM + 0x808);

/// A debug state of the vcpu while it runs round trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DebugState {
    /// Nobody uses the debug registers.
    Clean,
    /// The guest owns its debug registers: it set MDSCR_EL1.KDE|MDE.
    GuestOwned,
    /// Userspace debugs with hardware registers: KVM_GUESTDBG_ENABLE|USE_HW, one breakpoint and
    /// one watchpoint that never fire.
    UseHw,
    /// Userspace single-steps: KVM_GUESTDBG_ENABLE|SINGLESTEP; every KVM_RUN executes one
    /// instruction and exits (a step exit, not the doorbell: the round trip is a step exit's).
    SingleStep,
    /// The guest set the OS lock (OSLAR_EL1 = 1; MDSCR_EL1 = 0).
    OsLock,
}

impl DebugState {
    /// Every state, in report order.
    pub const ALL: [DebugState; 5] = [
        DebugState::Clean,
        DebugState::GuestOwned,
        DebugState::UseHw,
        DebugState::SingleStep,
        DebugState::OsLock,
    ];

    /// `clean`, `guest_owned`, `use_hw`, `single_step`, `os_lock`.
    pub const fn name(self) -> &'static str {
        match self {
            DebugState::Clean => "clean",
            DebugState::GuestOwned => "guest_owned",
            DebugState::UseHw => "use_hw",
            DebugState::SingleStep => "single_step",
            DebugState::OsLock => "os_lock",
        }
    }

    /// The state named `s` ([`DebugState::name`]; `-` may stand for `_`).
    pub fn parse(s: &str) -> Option<DebugState> {
        let s = s.replace('-', "_");
        DebugState::ALL.into_iter().find(|d| d.name() == s)
    }

    /// In words.
    pub const fn describe(self) -> &'static str {
        match self {
            DebugState::Clean => "debug clean (MDSCR_EL1 = 0, no guest debug)",
            DebugState::GuestOwned => "guest-owned (the guest set MDSCR_EL1.KDE|MDE)",
            DebugState::UseHw => "userspace ENABLE|USE_HW (1 breakpoint, 1 watchpoint, never hit)",
            DebugState::SingleStep => {
                "userspace ENABLE|SINGLESTEP (each round trip is a step exit)"
            }
            DebugState::OsLock => "the OS lock (the guest wrote OSLAR_EL1 = 1)",
        }
    }

    /// The MDSCR_EL1 the guest writes in the prologue.
    pub const fn guest_mdscr(self) -> u64 {
        match self {
            DebugState::GuestOwned => DBG_MDSCR_KDE | DBG_MDSCR_MDE,
            _ => 0,
        }
    }

    /// The OSLAR_EL1 the guest writes in the prologue.
    pub const fn guest_oslar(self) -> u64 {
        match self {
            DebugState::OsLock => 1,
            _ => 0,
        }
    }

    /// What userspace passes to KVM_SET_GUEST_DEBUG after the prologue (`None`: nothing, the
    /// visit starts with KVM_SET_GUEST_DEBUG(0) anyway).
    pub fn guest_debug(self) -> Option<KvmGuestDebug> {
        let mut d = KvmGuestDebug::default();
        match self {
            DebugState::UseHw => {
                d.control = (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits();
                (d.arch.dbg_bcr[0], d.arch.dbg_bvr[0]) = USE_HW_BREAKPOINT;
                (d.arch.dbg_wcr[0], d.arch.dbg_wvr[0]) = USE_HW_WATCHPOINT;
            }
            DebugState::SingleStep => {
                d.control = (GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP).bits();
            }
            _ => return None,
        }
        Some(d)
    }

    /// The exit every measured KVM_RUN of the state ends in.
    pub const fn exit(self) -> BenchExit {
        match self {
            DebugState::SingleStep => BenchExit::Step,
            _ => BenchExit::Mmio { doorbell: DOORBELL },
        }
    }
}

impl fmt::Display for DebugState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How much to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The states, visited in turn each round (the first visited rotates).
    pub states: Vec<DebugState>,
    /// Rounds: every state is visited once per round.
    pub rounds: u32,
    /// Timed batches per visit (after one warm-up batch, which is dropped).
    pub batches_per_visit: u32,
    /// KVM_RUN round trips per batch (the most, when `batch_target_ns` sizes the batches).
    pub runs: u64,
    /// Size the batches to about this many ns (instructions under icount) from a calibration
    /// of the clean round trip, between [`MIN_RUNS`] and `runs` round trips: short batches
    /// mostly miss the guest-host's timer tick (every 4 ms of guest time at HZ=250).
    pub batch_target_ns: Option<u64>,
    /// The agent's timeout for one visit's batches.
    pub timeout: Duration,
}

/// The fewest round trips per batch when batches are sized by time.
pub const MIN_RUNS: u64 = 10;

impl Plan {
    /// Every state, 31 rounds of 2 batches (62 batches per state) of about 500,000
    /// instructions each (10 to 200 round trips).
    pub fn standard() -> Plan {
        Plan {
            states: DebugState::ALL.to_vec(),
            rounds: 31,
            batches_per_visit: 2,
            runs: 200,
            batch_target_ns: Some(500_000),
            timeout: Duration::from_secs(60),
        }
    }

    /// Round trips per batch for a clean round trip of `round_trip_ns`.
    pub fn runs_for(&self, round_trip_ns: f64) -> u64 {
        match self.batch_target_ns {
            Some(t) if round_trip_ns > 0.0 => ((t as f64 / round_trip_ns).round() as u64)
                .clamp(MIN_RUNS.min(self.runs), self.runs),
            _ => self.runs,
        }
    }

    /// Batches timed per state.
    pub fn batches_per_state(&self) -> usize {
        self.rounds as usize * self.batches_per_visit as usize
    }
}

/// One state's timed batches, in the order taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateBatches {
    /// The state.
    pub state: DebugState,
    /// Round trips per batch.
    pub runs: u64,
    /// The batches (warm-up batches excluded), with the round each was taken in.
    pub batches: Vec<(u32, Batch)>,
}

impl StateBatches {
    /// Instructions (ns under icount) per round trip, one value per batch.
    pub fn per_round_trip(&self) -> Vec<f64> {
        let runs = self.runs.max(1) as f64;
        self.batches
            .iter()
            .map(|(_, b)| b.ns as f64 / runs)
            .collect()
    }
}

/// What [`measure_states`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct StatesMeasurement {
    /// KVM_CAP_GUEST_DEBUG_HW_BPS.
    pub brps: u32,
    /// KVM_CAP_GUEST_DEBUG_HW_WPS.
    pub wrps: u32,
    /// The calibration's clean round trip (ns per round trip), when batches were sized by it.
    pub calibration_ns: Option<f64>,
    /// Round trips per batch.
    pub runs: u64,
    /// One entry per state of the plan, in the plan's order.
    pub states: Vec<StateBatches>,
}

/// Create the VM and its vcpu, load [`PROGRAM`], set x1 and x20.
fn setup(vm: &mut RealVm<'_>) -> Result<VcpuId> {
    vm.map_memory(0, RAM, RAM_SIZE)?;
    vm.write_words(RAM, &PROGRAM)?;
    let v = vm.create_vcpu(0)?;
    vm.vcpu_init(v, KVM_ARM_VCPU_PSCI_0_2)?;
    vm.set_one_regs(v, &[(core_reg::x(1), 1), (core_reg::x(20), DOORBELL)])?;
    Ok(v)
}

/// Put the vcpu in `state`: guest debug off, the prologue run (the guest writes MDSCR_EL1 and
/// OSLAR_EL1, then rings the doorbell), then userspace's guest debug for the state.
fn enter_state(vm: &mut RealVm<'_>, v: VcpuId, state: DebugState) -> Result<()> {
    vm.set_guest_debug(v, &KvmGuestDebug::default())?;
    vm.set_one_regs(
        v,
        &[
            (core_reg::PC, PROLOGUE),
            (core_reg::x(2), state.guest_mdscr()),
            (core_reg::x(3), state.guest_oslar()),
        ],
    )?;
    let exit = vm.run(v)?;
    if !exit.is_mmio_at(DOORBELL) {
        return Err(vm.agent().err(ErrorKind::Rejected(format!(
            "the prologue run of state {state} did not reach the doorbell: {}",
            exit.summary()
        ))));
    }
    if let Some(d) = state.guest_debug() {
        vm.set_guest_debug(v, &d)?;
    }
    if state == DebugState::SingleStep {
        vm.set_one_reg(v, core_reg::PC, STEP_LOOP)?;
    }
    Ok(())
}

/// The clean round trip, for sizing batches: the fastest of three batches of [`MIN_RUNS`]
/// round trips after a warm-up batch.
fn calibrate(vm: &mut RealVm<'_>, v: VcpuId, timeout: Duration) -> Result<f64> {
    enter_state(vm, v, DebugState::Clean)?;
    let req = BenchBatches {
        runs: MIN_RUNS,
        batches: 4,
        exit: DebugState::Clean.exit(),
        count_interrupts: false,
        timeout,
    };
    let b = vm.bench_round_trips(v, &req)?;
    let fastest = b.iter().skip(1).map(|b| b.ns).min().unwrap_or(0);
    Ok(fastest as f64 / MIN_RUNS as f64)
}

/// Measure every state of `plan` in one VM, interleaved: round after round, each state is
/// entered (guest debug off, the prologue run, then the state's guest debug) and timed for a
/// warm-up batch (dropped) and `plan.batches_per_visit` batches; the state visited first
/// rotates from round to round. The VM is destroyed at the end. A run that ends in any other
/// exit than the state's is an error.
pub fn measure_states(agent: &mut Agent, plan: &Plan) -> Result<StatesMeasurement> {
    if plan.states.is_empty() || plan.rounds == 0 || plan.batches_per_visit == 0 || plan.runs == 0 {
        return Err(agent.err(ErrorKind::Rejected(
            "a measurement plan needs states, rounds, batches and runs".into(),
        )));
    }
    let brps = agent.check_extension(KVM_CAP_GUEST_DEBUG_HW_BPS)?.max(0) as u32;
    let wrps = agent.check_extension(KVM_CAP_GUEST_DEBUG_HW_WPS)?.max(0) as u32;
    let mut vm = agent.create_vm()?;
    let v = setup(&mut vm)?;
    let calibration_ns = match plan.batch_target_ns {
        Some(_) => Some(calibrate(&mut vm, v, plan.timeout)?),
        None => None,
    };
    let runs = plan.runs_for(calibration_ns.unwrap_or(0.0));
    let mut out: Vec<StateBatches> = plan
        .states
        .iter()
        .map(|&state| StateBatches {
            state,
            runs,
            batches: Vec::with_capacity(plan.batches_per_state()),
        })
        .collect();
    let n = out.len();
    for round in 0..plan.rounds {
        for k in 0..n {
            let i = (k + round as usize) % n;
            let Some(slot) = out.get_mut(i) else {
                continue;
            };
            enter_state(&mut vm, v, slot.state)?;
            let req = BenchBatches {
                runs,
                batches: plan.batches_per_visit + 1,
                exit: slot.state.exit(),
                count_interrupts: true,
                timeout: plan.timeout,
            };
            let batches = vm.bench_round_trips(v, &req)?;
            slot.batches
                .extend(batches.into_iter().skip(1).map(|b| (round, b)));
        }
    }
    vm.destroy()?;
    Ok(StatesMeasurement {
        brps,
        wrps,
        calibration_ns,
        runs,
        states: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_named_and_set_up_as_documented() {
        let names: Vec<&str> = DebugState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            ["clean", "guest_owned", "use_hw", "single_step", "os_lock"]
        );
        for s in DebugState::ALL {
            assert_eq!(DebugState::parse(s.name()), Some(s));
        }
        assert_eq!(
            DebugState::parse("single-step"),
            Some(DebugState::SingleStep)
        );
        assert_eq!(DebugState::parse("dirty"), None);
        assert_eq!(DebugState::GuestOwned.guest_mdscr(), (1 << 13) | (1 << 15));
        assert_eq!(DebugState::OsLock.guest_oslar(), 1);
        assert_eq!(DebugState::OsLock.guest_mdscr(), 0);
        assert!(DebugState::Clean.guest_debug().is_none());
        assert!(DebugState::GuestOwned.guest_debug().is_none());
        let hw = DebugState::UseHw.guest_debug().unwrap();
        assert_eq!(hw.control, 0x2_0001);
        assert_eq!((hw.arch.dbg_bcr[0], hw.arch.dbg_wcr[0]), (0x1e7, 0x1ff7));
        assert_eq!(DebugState::SingleStep.guest_debug().unwrap().control, 0x3);
        assert_eq!(DebugState::SingleStep.exit(), BenchExit::Step);
        assert_eq!(
            DebugState::Clean.exit(),
            BenchExit::Mmio { doorbell: DOORBELL }
        );
    }

    #[test]
    fn the_program_is_what_the_comment_says() {
        // The same words as the simulator's assembler (and aarch64-linux-gnu-as) produce.
        let p = hypdbg_hyp::guest::Program::assemble(
            RAM,
            "prologue: nop\n msr mdscr_el1, x2\n msr oslar_el1, x3\n isb\n\
             doorbell: str x1, [x20]\n b doorbell\n step: nop\n spin: b spin",
        )
        .unwrap();
        assert_eq!(p.words, PROGRAM);
        assert_eq!(p.label("step"), Some(STEP_LOOP));
        assert_eq!(p.label("prologue"), Some(PROLOGUE));
    }

    #[test]
    fn the_standard_plan() {
        let mut p = Plan::standard();
        assert_eq!(p.states.len(), 5);
        assert_eq!(p.batches_per_state(), 62);
        assert_eq!(p.runs_for(5_000.0), 100);
        assert_eq!(p.runs_for(20_000.0), 25);
        assert_eq!(p.runs_for(100_000.0), MIN_RUNS);
        assert_eq!(p.runs_for(100.0), 200);
        assert_eq!(p.runs_for(0.0), 200);
        p.batch_target_ns = None;
        assert_eq!(p.runs_for(5_000.0), 200);
        let s = StateBatches {
            state: DebugState::Clean,
            runs: 100,
            batches: vec![(
                0,
                Batch {
                    ns: 535_300,
                    interrupts: Some(0),
                },
            )],
        };
        assert_eq!(s.per_round_trip(), vec![5353.0]);
    }
}
