//! The simulator's side of the real-kernel benchmark: for the era that matches a kernel, the
//! register moves of one KVM_RUN round trip in each debug state, counted by running the
//! era's reference flow in the simulator with [`hypdbg_hyp::CheckingAccess`] (every access of
//! the hyp recorded), and the instruction cost model that turns them into a predicted extra
//! cost ([`InstructionModel`], fitted on 6.1 nVHE, judged on every other kernel and mode).
//!
//! The simulated guest does what the real one does ([`hypdbg_real::roundtrip::PROGRAM`]): a
//! prologue that writes MDSCR_EL1 and OSLAR_EL1, then a loop that leaves to userspace on every
//! KVM_RUN (an MMIO store to the doorbell, hypdbg's portable `stop #0`), and a
//! one-instruction loop for single-stepping.

use hypdbg_hyp::access::SwitchStats;
use hypdbg_hyp::flow::{DynFlow, Era, Era2Engine, Era2Reference, Era3Engine, Era3Protected};
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::vm::{AccessMode, VcpuExit};
use hypdbg_hyp::workloads::CODE_BASE;
use hypdbg_hyp::{Vm, VmConfig};
use hypdbg_model::DebugFeatures;
use hypdbg_model::uapi::core_reg;
use hypdbg_real::{DebugState, Mode};
use serde::Serialize;

use super::BenchError;
use super::setup::reference_flow;

/// The simulated guest: prologue, the exit loop, the single-step loop.
pub const SIM_GUEST: &str = "prologue: msr mdscr_el1, x2\n msr oslar_el1, x3\n isb\n\
                             bell: stop #0\n b bell\n step: nop\n spin: b spin";

/// Round trips simulated per state before the counted one (the prologue's trap, a first entry
/// after KVM_SET_GUEST_DEBUG and the single-step state machine settle).
const SETTLE_RUNS: usize = 3;

/// The simulator's flow for a kernel: its era and whether it runs under pKVM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SimFlow {
    /// The era of the kernel's release.
    pub era: Era,
    /// Protected mode: era 3 runs `era3-pkvm` (the hyp's copy of the vcpu).
    pub pkvm: bool,
}

impl SimFlow {
    /// The flow for `release` (`6.1.0-57-arm64`, `7.3.4+deb13-arm64`) booted in `mode`:
    /// v4.5..v4.16 era 1, v4.17..v6.13 era 2, v6.14+ era 3; protected modes of era 3 run
    /// `era3-pkvm` (the simulator has no pKVM form of the older eras: they run their plain
    /// reference). `None` when the release has no MAJOR.MINOR or predates era 1.
    pub fn for_kernel(release: &str, mode: Mode) -> Option<SimFlow> {
        if crate::real::series_number(release)? < (4, 5) {
            return None;
        }
        // The era the diff's flow for this kernel has (one mapping of versions to eras).
        let era = crate::real::flow_for(release, mode).ok()?.era();
        let pkvm = era == Era::Three && matches!(mode, Mode::Protected | Mode::ProtectedNvhe);
        Some(SimFlow { era, pkvm })
    }

    /// The variant's name: `era2`, `era3`, `era3-pkvm`, ...
    pub fn name(self) -> &'static str {
        if self.pkvm {
            "era3-pkvm"
        } else {
            self.era.name()
        }
    }

    fn make(self) -> Box<dyn DynFlow> {
        match (self.era, self.pkvm) {
            (Era::Three, true) => Box::new(Era3Engine(Era3Protected)),
            (Era::Two, _) => Box::new(Era2Engine(Era2Reference)),
            (era, _) => reference_flow(era),
        }
    }
}

/// What one simulated round trip of a state moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SimCount {
    /// The state.
    #[serde(serialize_with = "state_name")]
    pub state: DebugState,
    /// Every register the hyp read or wrote in the round trip, by class.
    pub accesses: SwitchStats,
    /// Breakpoint/watchpoint registers and MDCCINT_EL1 moved (what the model prices).
    pub moves: u32,
}

/// Serialise a [`DebugState`] by its name.
pub fn state_name<S: serde::Serializer>(s: &DebugState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.name())
}

/// Put a simulated vcpu in `state` the way [`hypdbg_real::measure_states`] does on the real
/// kernel, and count the accesses of one steady round trip.
fn simulate_state(
    flow: SimFlow,
    features: DebugFeatures,
    state: DebugState,
) -> Result<SimCount, BenchError> {
    let mut config = VmConfig::new(features);
    config.mode = AccessMode::Checking;
    let mut vm = Vm::new(flow.make(), config)?;
    let p = Program::assemble(CODE_BASE, SIM_GUEST)?;
    vm.load_program(&p);
    let label = |l: &str| {
        p.label(l)
            .ok_or(BenchError::Statistic("a label of the simulated guest"))
    };
    vm.set_one_reg(0, core_reg::PC, label("prologue")?)?;
    vm.set_one_reg(0, core_reg::x(2), state.guest_mdscr())?;
    vm.set_one_reg(0, core_reg::x(3), state.guest_oslar())?;
    let first = vm.run(0)?;
    if !matches!(first, VcpuExit::Mmio { .. }) {
        return Err(BenchError::Simulation(format!(
            "state {state}: the prologue ended in {first}, not at the doorbell"
        )));
    }
    if let Some(d) = state.guest_debug() {
        vm.set_guest_debug(0, &d)?;
    }
    if state == DebugState::SingleStep {
        // The next KVM_RUN completes the doorbell's MMIO store (PC += 4), as on the real
        // kernel: point the PC at the `nop` before the loop so the steps land in it.
        vm.set_one_reg(0, core_reg::PC, label("step")?)?;
    }
    for _ in 0..=SETTLE_RUNS {
        let e = vm.run(0)?;
        let expected = match (state, e) {
            (DebugState::SingleStep, VcpuExit::Debug { .. }) => true,
            (_, VcpuExit::Mmio { .. }) => state != DebugState::SingleStep,
            _ => false,
        };
        if !expected {
            return Err(BenchError::Simulation(format!(
                "state {state}: a round trip ended in {e}"
            )));
        }
        let _ = vm.take_events();
    }
    let accesses = vm.vcpu(0)?.last_run_stats;
    Ok(SimCount {
        state,
        accesses,
        moves: accesses.debug_state_moves(),
    })
}

/// The simulator's counts for every state in `states`, for `flow` on a CPU with `brps`
/// breakpoints and `wrps` watchpoints (the real kernel's KVM_CAP_GUEST_DEBUG_HW_BPS/WPS).
pub fn simulate_states(
    flow: SimFlow,
    brps: u8,
    wrps: u8,
    states: &[DebugState],
) -> Result<Vec<SimCount>, BenchError> {
    let features = DebugFeatures::from_counts(brps, wrps, brps.min(2))?;
    states
        .iter()
        .map(|&s| simulate_state(flow, features, s))
        .collect()
}

/// The instruction cost model: a debug state's extra instructions per round trip over the
/// clean state = `per_move` x the extra debug registers the simulator says it moves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InstructionModel {
    /// Instructions per breakpoint/watchpoint/MDCCINT_EL1 register moved.
    pub per_move: f64,
    /// The kernel series it was fitted on.
    pub fitted_series: &'static str,
    /// The mode it was fitted on.
    pub fitted_mode: &'static str,
    /// The state it was fitted on.
    pub fitted_state: &'static str,
    /// The measured extra instructions it was fitted to.
    pub fitted_extra: f64,
    /// The register moves of that state in the simulator.
    pub fitted_moves: u32,
    /// In words.
    pub note: &'static str,
}

/// Guest-owned 6.1.0-57 nVHE, the README's run A of `hypdbg bench --kernel debian:6.1`
/// (run B: 363.0): 363.1 extra instructions per round trip (95% interval 362.9..363.3) for
/// the 84 register moves the simulator counts (6/4: 2 x (6 + 6 + 4 + 4) reads and as many
/// writes, and MDCCINT_EL1 four times): 4.32 instructions per register moved.
pub const MODEL: InstructionModel = InstructionModel {
    per_move: 363.1 / 84.0,
    fitted_series: "6.1",
    fitted_mode: "nvhe",
    fitted_state: "guest_owned",
    fitted_extra: 363.1,
    fitted_moves: 84,
    note: "fitted on the one state whose extra cost is the world switch's register moves alone \
           (guest-owned: the C side only sets DEBUG_DIRTY / the owner), on 6.1 nVHE; judged on \
           every other kernel and mode, never on 6.1 nVHE",
};

/// The model's goal: the predicted extra cost within this share of the measured one.
pub const MODEL_GOAL: f64 = 0.25;

impl InstructionModel {
    /// Fit `per_move` to a measured extra cost and the simulator's moves of that state.
    pub fn fit(extra: f64, moves: u32) -> Option<f64> {
        (moves > 0 && extra.is_finite()).then(|| extra / f64::from(moves))
    }

    /// The predicted extra instructions of a state that moves `delta_moves` more registers
    /// than the clean state.
    pub fn predict(&self, delta_moves: i64) -> f64 {
        self.per_move * delta_moves as f64
    }

    /// Whether a kernel and mode is the one the model was fitted on (and so is not judged).
    pub fn is_fit_kernel(&self, series: &str, mode: Mode) -> bool {
        series == self.fitted_series && mode.name() == self.fitted_mode
    }
}

/// Why the model misses a state on a flow, where the reason is known; `None` otherwise.
pub fn known_miss_reason(flow: SimFlow, state: DebugState) -> Option<&'static str> {
    match (flow.era, flow.pkvm, state) {
        (_, _, DebugState::SingleStep) => Some(
            "each round trip is a step exit, not an MMIO exit: the exit path differs, which \
             the model (register moves only) does not see",
        ),
        (Era::One | Era::Two, _, DebugState::UseHw) => Some(
            "era 2's userspace-debug path costs more than its register moves (the simulator \
             runs kvm_arm_setup_debug/kvm_arm_clear_debug's branch for it on every entry and \
             exit, but the model prices register moves only)",
        ),
        (Era::One | Era::Two, _, DebugState::OsLock) => Some(
            "era 2 emulates the OS lock on every entry and exit (MDSCR_EL1 saved, MDE masked, \
             restored) and moves no debug register: the model predicts 0",
        ),
        (Era::Three, true, _) => Some(
            "pKVM copies the vcpu's debug state into the hyp's copy and back \
             (flush/sync_debug_state) on every entry and exit: memory copies the model does \
             not price",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_of_releases() {
        let f = |r, m| SimFlow::for_kernel(r, m).map(|f| f.name());
        assert_eq!(f("6.1.0-57-arm64", Mode::Nvhe), Some("era2"));
        assert_eq!(f("6.12.117+deb12-arm64", Mode::Protected), Some("era2"));
        assert_eq!(f("6.13.0", Mode::Vhe), Some("era2"));
        assert_eq!(f("6.14.0", Mode::Vhe), Some("era3"));
        assert_eq!(f("6.18.15+deb13-arm64", Mode::Vhe), Some("era3"));
        assert_eq!(
            f("7.3.4+deb13-arm64", Mode::ProtectedNvhe),
            Some("era3-pkvm")
        );
        assert_eq!(f("4.16.0", Mode::Vhe), Some("era1"));
        assert_eq!(f("4.4.0", Mode::Vhe), None);
        assert_eq!(f("latest", Mode::Vhe), None);
    }

    fn moves(flow: SimFlow) -> Vec<(&'static str, u32)> {
        simulate_states(flow, 6, 4, &DebugState::ALL)
            .unwrap()
            .iter()
            .map(|c| (c.state.name(), c.moves))
            .collect()
    }

    #[test]
    fn era2_moves_registers_for_the_guest_and_use_hw_only() {
        let era2 = SimFlow {
            era: Era::Two,
            pkvm: false,
        };
        assert_eq!(
            moves(era2),
            [
                ("clean", 0),
                ("guest_owned", 84),
                ("use_hw", 84),
                ("single_step", 0),
                ("os_lock", 0)
            ]
        );
    }

    #[test]
    fn era3_owns_the_registers_for_every_debug_state() {
        for pkvm in [false, true] {
            let era3 = SimFlow {
                era: Era::Three,
                pkvm,
            };
            assert_eq!(
                moves(era3),
                [
                    ("clean", 0),
                    ("guest_owned", 84),
                    ("use_hw", 84),
                    ("single_step", 84),
                    ("os_lock", 84)
                ],
                "pkvm {pkvm}"
            );
        }
    }

    #[test]
    fn the_model() {
        assert!((MODEL.per_move - 4.3226).abs() < 0.0001);
        assert_eq!(InstructionModel::fit(363.1, 84), Some(MODEL.per_move));
        assert_eq!(InstructionModel::fit(1.0, 0), None);
        assert!((MODEL.predict(84) - 363.1).abs() < 1e-9);
        assert_eq!(MODEL.predict(0), 0.0);
        assert!(MODEL.is_fit_kernel("6.1", Mode::Nvhe));
        assert!(!MODEL.is_fit_kernel("6.1", Mode::Vhe));
        assert!(!MODEL.is_fit_kernel("6.12", Mode::Nvhe));
    }
}
