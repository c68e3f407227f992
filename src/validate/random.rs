//! Random operation sequences over the sweep's state space (proptest), shrunk to a minimal
//! counterexample: the guest's set-up is random, then a random sequence of runs, userspace
//! debug changes, migrations and host-interrupt changes.

use hypdbg_hyp::variants::Variant;
use hypdbg_model::ctrl::{DBG_MDSCR_KDE, DBG_MDSCR_MDE, DBG_MDSCR_SS};
use hypdbg_model::profiles::CpuSpec;
use std::cell::Cell;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use super::run::{assemble, run_checked};
use super::sweep::{CleanAccess, Params, controls, first_run, forward_filter, sibling};
use crate::checker::Violation;
use crate::scenario::{Op, Scenario, Value};

/// One random userspace step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// KVM_RUN to the next stop.
    Run,
    /// KVM_SET_GUEST_DEBUG with this control (breakpoint/watchpoint values as the sweep's).
    Debug(u32),
    /// Move to physical CPU 0 or 1.
    Migrate(usize),
    /// Host interrupts every 1..=4 instructions, or none.
    Irq(Option<u64>),
    /// KVM_RUN with `immediate_exit` (completes a pending MMIO access, runs nothing).
    ImmediateExit,
}

/// A random case: the guest's set-up and the steps.
#[derive(Clone, Debug)]
pub struct Case {
    /// The guest's set-up (userspace fields unused).
    pub guest: Params,
    /// What userspace does.
    pub steps: Vec<Step>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Run),
        2 => proptest::sample::select(controls().to_vec()).prop_map(Step::Debug),
        1 => (0usize..2).prop_map(Step::Migrate),
        1 => proptest::option::of(1u64..=4).prop_map(Step::Irq),
        1 => Just(Step::ImmediateExit),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let mdscr = proptest::sample::select(vec![
        0,
        DBG_MDSCR_MDE,
        DBG_MDSCR_KDE,
        DBG_MDSCR_KDE | DBG_MDSCR_MDE,
        DBG_MDSCR_KDE | DBG_MDSCR_SS,
    ]);
    let clean = proptest::sample::select(vec![
        CleanAccess::None,
        CleanAccess::Read,
        CleanAccess::Write,
    ]);
    (
        mdscr,
        any::<bool>(),
        any::<bool>(),
        clean,
        proptest::collection::vec(step(), 1..12),
    )
        .prop_map(|(mdscr, d_clear, os_lock, clean, steps)| Case {
            guest: Params::guest_only(mdscr, d_clear, os_lock, clean),
            steps,
        })
}

impl Case {
    /// The case as a scenario on CPU `cpu` (second CPU: another profile, same counts).
    pub fn scenario(&self, cpu: &CpuSpec) -> Scenario {
        let mut sc = self.guest.scenario("random", cpu);
        let runs = self.steps.iter().filter(|s| **s == Step::Run).count();
        // The sweep's program has a forwarded HVC, stop #1 and stop #2; add one marker per
        // further run.
        for imm in 3..runs.max(3) {
            sc.code += &format!("nop\nstop #{imm}\n");
        }
        let set = |control: u32| Op::SetGuestDebug {
            vcpu: 0,
            control,
            bcr: vec![(0, Value::Num(0x1e7))],
            bvr: vec![(0, Value::Label("ubp".into()))],
            wcr: vec![(0, Value::Num(0x1ff7))],
            wvr: vec![(0, Value::Num(0x8_0000))],
            expect: None,
        };
        let mut ops = vec![forward_filter()];
        let mut imm = 0u16;
        for s in &self.steps {
            ops.push(match s {
                Step::Run if imm == 0 => {
                    imm += 1;
                    first_run()
                }
                Step::Run => {
                    imm += 1;
                    Op::RunUntilStop {
                        vcpu: 0,
                        stop: imm - 1,
                        expect: None,
                    }
                }
                Step::Debug(c) => set(*c),
                Step::Migrate(cpu) => Op::Migrate {
                    vcpu: 0,
                    cpu: *cpu,
                    expect: None,
                },
                Step::Irq(every) => Op::Irq {
                    vcpu: 0,
                    every: *every,
                    expect: None,
                },
                Step::ImmediateExit => Op::KvmRun {
                    vcpu: 0,
                    immediate_exit: true,
                    mmio_data: None,
                    expect: None,
                },
            });
        }
        let mut words = vec![format!("guest set-up: {}", self.guest.describe())];
        words.extend(self.steps.iter().map(|s| match s {
            Step::Run => "run".to_string(),
            Step::Debug(c) => format!("set {}", super::sweep::control_words(*c)),
            Step::Migrate(c) => format!("migrate to CPU {c}"),
            Step::Irq(e) => format!("interrupts every {e:?}"),
            Step::ImmediateExit => "KVM_RUN with immediate_exit".to_string(),
        }));
        sc.description = format!("random sequence: {}", words.join(", "));
        sc.cpus = vec![cpu.clone(), CpuSpec::from_features(sibling(cpu.features()))];
        sc.ops = ops;
        sc
    }
}

/// What a random search did.
#[derive(Clone, Debug, Default)]
pub struct Search {
    /// The minimal failing scenario and its first violation, if one was found.
    pub found: Option<(Scenario, Violation)>,
    /// Scenario runs made (cases and shrinking steps).
    pub runs: u64,
    /// The deadline passed before the search finished.
    pub timed_out: bool,
}

/// Search `cases` random sequences on `cpu` for `variant`; on a violation, shrink and return
/// the minimal scenario with its first violation. Past `deadline` no case runs any more.
pub fn search(
    variant: &Variant,
    cpu: &CpuSpec,
    cases: u32,
    seed: u64,
    deadline: Option<Instant>,
) -> Search {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let runs = Cell::new(0u64);
    let timed_out = Cell::new(false);
    let check = |c: &Case| -> Result<Option<Violation>, String> {
        if deadline.is_some_and(|d| Instant::now() > d) {
            timed_out.set(true);
            return Ok(None);
        }
        runs.set(runs.get() + 1);
        let sc = c.scenario(cpu);
        let program = assemble(&sc).map_err(|e| e.to_string())?;
        let out = run_checked(&sc, &program, variant).map_err(|e| e.to_string())?;
        Ok(out.violations.into_iter().next())
    };
    let result = runner.run(&case(), |c| match check(&c) {
        Ok(None) => Ok(()),
        Ok(Some(v)) => Err(TestCaseError::fail(v.message)),
        Err(e) => Err(TestCaseError::fail(e)),
    });
    let found = match result {
        Err(TestError::Fail(_, minimal)) => {
            let sc = minimal.scenario(cpu);
            match check(&minimal) {
                Ok(Some(v)) => Some((sc, v)),
                _ => None,
            }
        }
        _ => None,
    };
    Search {
        found,
        runs: runs.get(),
        timed_out: timed_out.get(),
    }
}
