//! The exhaustive sweep over the small dimensions: guest MDSCR_EL1 KDE/MDE/SS, PSTATE.D, the
//! OS lock, guest accesses while clean, userspace control flags and when userspace debug
//! starts, stops, pauses stepping or is re-issued unchanged, consecutive runs, host
//! interrupts, migration between two physical CPUs (same profile, or another with equal
//! counts), SMP entries, a VM whose ID_AA64DFR0_EL1.WRPs userspace lowered; and every
//! BRPs/WRPs field value 1..=15 with CTX_CMPs at its minimum and maximum.

use std::fmt::Write as _;

use hypdbg_model::DebugFeatures;
use hypdbg_model::ctrl::{DBG_MDSCR_KDE, DBG_MDSCR_MDE, DBG_MDSCR_SS};
use hypdbg_model::profiles::CpuSpec;
use hypdbg_model::uapi::GuestDebugControl;
use hypdbg_model::words;

use hypdbg_model::guest_abi::HYPDBG_FORWARDED_FID;

use crate::scenario::ops::{ExitKind, FilterAction};
use crate::scenario::{Op, Scenario, Value};

/// What the guest does with its debug registers before the first exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CleanAccess {
    /// Nothing.
    None,
    /// It reads one (a trap while clean).
    Read,
    /// It writes breakpoints, watchpoints and MDCCINT_EL1 (traps while clean).
    Write,
}

/// When userspace debugs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Session {
    /// From before the first run to the end.
    Whole,
    /// Starting at the guest's first stop.
    StartMidway,
    /// From the start, stopped at the second stop.
    StopMidway,
    /// From the start; at the first stop SINGLESTEP is dropped (ENABLE kept), at the second
    /// it is set again.
    StepPauses,
    /// From the start, re-issued unchanged at every stop, as QEMU's gdbstub does on every
    /// resume (a KVM_SET_GUEST_DEBUG that changes nothing must not change the step state).
    StepResent,
    /// From the start; the second stop (an MMIO exit) completed by a KVM_RUN with
    /// `immediate_exit` before the last run, as a VMM does before it saves a vcpu's state.
    ImmediateExit,
}

/// Where the vcpu runs for its last run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Migration {
    /// One physical CPU.
    None,
    /// To a second CPU of the same profile.
    Same,
    /// To a CPU of another profile with the same counts.
    Other,
}

/// One point of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    /// The guest's MDSCR_EL1.
    pub mdscr: u64,
    /// The guest unmasks debug exceptions (PSTATE.D = 0).
    pub d_clear: bool,
    /// The guest sets its OS lock.
    pub os_lock: bool,
    /// Debug register accesses before the first exit.
    pub clean: CleanAccess,
    /// KVM_GUESTDBG_* (0: userspace does not debug).
    pub control: u32,
    /// When userspace debugs.
    pub session: Session,
    /// Migration before the last run.
    pub migration: Migration,
    /// Host interrupts every 3 guest instructions.
    pub irq: bool,
    /// Userspace lowers the VM's ID_AA64DFR0_EL1.WRPs by one before the first run (v6.7+):
    /// the guest is told of one watchpoint fewer than the hardware has (and uses them all).
    pub lower_wrps: bool,
}

/// A physical CPU with the same counts but another ID_AA64DFR0_EL1 value (DebugVer bumped).
pub fn sibling(f: &DebugFeatures) -> DebugFeatures {
    let raw = (f.raw() & !0xf) | if f.debugver() == 0x8 { 0x6 } else { 0x8 };
    DebugFeatures::new(raw).unwrap_or(*f)
}

fn mdscr_words(m: u64) -> String {
    let names = words::mdscr_names(m);
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

/// KVM_GUESTDBG_* in words: `KVM_GUESTDBG_ENABLE|KVM_GUESTDBG_USE_HW`, or `none`.
pub fn control_words(c: u32) -> String {
    let names = words::guest_debug_names(c);
    if names.is_empty() {
        "none".into()
    } else {
        names
            .iter()
            .map(|n| format!("KVM_GUESTDBG_{n}"))
            .collect::<Vec<_>>()
            .join("|")
    }
}

impl Params {
    /// A guest set-up with nobody debugging it, on one CPU, without interrupts.
    pub const fn guest_only(mdscr: u64, d_clear: bool, os_lock: bool, clean: CleanAccess) -> Self {
        Params {
            mdscr,
            d_clear,
            os_lock,
            clean,
            control: 0,
            session: Session::Whole,
            migration: Migration::None,
            irq: false,
            lower_wrps: false,
        }
    }

    /// The scenario in words, as a counterexample reads.
    pub fn describe(&self) -> String {
        let mut s = format!("guest writes MDSCR_EL1 = {}", mdscr_words(self.mdscr));
        s += if self.d_clear {
            ", PSTATE.D clear"
        } else {
            ", PSTATE.D masked"
        };
        if self.os_lock {
            s += ", OS lock set";
        }
        match self.clean {
            CleanAccess::None => {}
            CleanAccess::Read => s += ", reads a debug register while clean",
            CleanAccess::Write => s += ", writes its breakpoints/watchpoints while clean",
        }
        if self.control != 0 {
            let when = match self.session {
                Session::Whole => "from the start",
                Session::StartMidway => "from the second run",
                Session::StopMidway => "for the first two runs only",
                Session::StepPauses => "from the start, without SINGLESTEP for the second run",
                Session::StepResent => "from the start, re-issued unchanged before each run",
                Session::ImmediateExit => {
                    "from the start, the second stop completed with KVM_RUN immediate_exit"
                }
            };
            let _ = write!(s, "; userspace {} {when}", control_words(self.control));
        }
        if self.irq {
            s += "; host interrupts every 3 instructions";
        }
        if self.lower_wrps {
            s += "; userspace lowers ID_AA64DFR0_EL1.WRPs by one before the first run";
        }
        match self.migration {
            Migration::None => {}
            Migration::Same => s += "; migrated to another CPU before the last run",
            Migration::Other => {
                s += "; migrated to a CPU of another profile (same counts) before the last run"
            }
        }
        s
    }

    /// How big the scenario is (smaller counterexamples first).
    pub fn size(&self) -> u32 {
        let mut n = self.mdscr.count_ones();
        n += u32::from(self.d_clear) + u32::from(self.os_lock) + 2 * u32::from(self.irq);
        n += match self.clean {
            CleanAccess::None => 0,
            CleanAccess::Read => 1,
            CleanAccess::Write => 2,
        };
        n += self.control.count_ones() + u32::from(self.lower_wrps);
        n += match (self.control, self.session) {
            (0, _) | (_, Session::Whole) => 0,
            _ => 1,
        };
        n += match self.migration {
            Migration::None => 0,
            Migration::Same => 1,
            Migration::Other => 2,
        };
        n
    }

    /// The guest program and userspace actions on CPUs of `cpu`.
    pub fn scenario(&self, name: &str, cpu: &CpuSpec) -> Scenario {
        let f = cpu.features();
        let (bt, wt) = (f.num_brps() - 1, f.num_wrps() - 1);
        let c = self.program(bt, wt);
        let mut ops = self.ops(bt, wt);
        if self.lower_wrps {
            let view = hypdbg_model::dfr0::sanitise_id_aa64dfr0_el1(f.raw());
            ops.insert(
                0,
                Op::SetOneReg {
                    vcpu: 0,
                    reg: "ID_AA64DFR0_EL1".into(),
                    value: Value::Num(view - (1 << 20)),
                    expect: None,
                },
            );
        }
        let mut cpus = vec![cpu.clone()];
        match self.migration {
            Migration::None => {}
            Migration::Same => cpus.push(cpu.clone()),
            Migration::Other => cpus.push(CpuSpec::from_features(sibling(f))),
        }
        if self.migration != Migration::None {
            ops.push(Op::Migrate {
                vcpu: 0,
                cpu: 1,
                expect: None,
            });
        }
        ops.push(Op::RunUntilStop {
            vcpu: 0,
            stop: 2,
            expect: None,
        });
        Scenario {
            description: self.describe(),
            ops,
            ..Scenario::new(name, cpus, c)
        }
    }

    /// The guest: its debug set-up, then three runs, to a forwarded HVC, `stop #1` and
    /// `stop #2`, that read its registers back (`bt`, `wt`: the highest breakpoint and
    /// watchpoint index).
    fn program(&self, bt: usize, wt: usize) -> String {
        let mut c = String::new();
        match self.clean {
            CleanAccess::None => {}
            CleanAccess::Read => {
                let _ = writeln!(c, "mrs x10, dbgbcr{bt}_el1");
                // MDRAR_EL1 (TDRA) and DBGPRCR_EL1 (TDOSA) trap in every era and read as zero
                // (trap_raz_wi), whatever the target register held.
                let _ = writeln!(
                    c,
                    "mov x17, #0x5a5a\nmrs x17, mdrar_el1\nmov x18, #0xa5a5\nmrs x18, dbgprcr_el1"
                );
            }
            CleanAccess::Write => {
                let _ = writeln!(
                    c,
                    "mov x0, #0x1e3\nmsr dbgbcr0_el1, x0\nadr x1, gbp\nmsr dbgbvr0_el1, x1"
                );
                let _ = writeln!(
                    c,
                    "mov x0, #0x1e5\nmsr dbgbcr{bt}_el1, x0\nmov x1, #0x70000000\nmsr dbgbvr{bt}_el1, x1"
                );
                let _ = writeln!(
                    c,
                    "mov x0, #0x1ff5\nmsr dbgwcr0_el1, x0\nmov x1, #0x71000000\nmsr dbgwvr0_el1, x1"
                );
                let _ = writeln!(
                    c,
                    "msr dbgwcr{wt}_el1, x0\nmovk x1, #0x40\nmsr dbgwvr{wt}_el1, x1"
                );
                let _ = writeln!(c, "mov x0, #0x40000000\nmsr mdccint_el1, x0");
            }
        }
        let _ = writeln!(c, "mov x0, #{:#x}\nmsr mdscr_el1, x0", self.mdscr);
        if self.os_lock {
            let _ = writeln!(
                c,
                "mov x0, #1\nmsr oslar_el1, x0\nmrs x11, oslsr_el1\nmsr oslsr_el1, xzr"
            );
        }
        if self.d_clear {
            c += "msr daifclr, #8\n";
        }
        // The first exit to userspace is an HVC the SMCCC filter forwards (KVM completed
        // it: a step is pending at the exit); the others are `stop`s (MMIO stores KVM
        // completes on the next entry).
        let _ = writeln!(
            c,
            "mov x5, #0x80000\nmovz x0, #{:#x}, lsl #16\nhvc #0",
            HYPDBG_FORWARDED_FID >> 16
        );
        for (i, imm) in [(1, 1), (2, 2)] {
            if i == 1 {
                c += "gbp: nop\nubp: nop\n";
            } else {
                c += "nop\nnop\n";
            }
            let _ = writeln!(
                c,
                "str x0, [x5]\nmrs x12, dbgbcr0_el1\nmrs x13, dbgbvr{bt}_el1\nmrs x14, dbgwcr{wt}_el1\nmrs x15, mdscr_el1\nmrs x16, mdccint_el1\nstop #{imm}"
            );
        }
        c
    }

    /// What userspace does around the three runs (the last run is the caller's, after any
    /// migration).
    fn ops(&self, bt: usize, wt: usize) -> Vec<Op> {
        let set = |control: u32| Op::SetGuestDebug {
            vcpu: 0,
            control,
            bcr: vec![(0, Value::Num(0x1e7)), (bt, Value::Num(0x1e7))],
            bvr: vec![
                (0, Value::Label("ubp".into())),
                (bt, Value::Num(0x7200_0000)),
            ],
            wcr: vec![(0, Value::Num(0x1ff7)), (wt, Value::Num(0x1ff7))],
            wvr: vec![(0, Value::Num(0x8_0000)), (wt, Value::Num(0x7300_0000))],
            expect: None,
        };
        let run = |stop| Op::RunUntilStop {
            vcpu: 0,
            stop,
            expect: None,
        };
        let mut ops = vec![forward_filter()];
        if self.irq {
            ops.push(Op::Irq {
                vcpu: 0,
                every: Some(3),
                expect: None,
            });
        }
        let debug = self.control != 0;
        if debug && self.session != Session::StartMidway {
            ops.push(set(self.control));
        }
        ops.push(first_run());
        if debug && self.session == Session::StartMidway {
            ops.push(set(self.control));
        }
        if debug && self.session == Session::StepPauses {
            ops.push(set(self.control & !GuestDebugControl::SINGLESTEP.bits()));
        }
        if debug && self.session == Session::StepResent {
            ops.push(set(self.control));
        }
        ops.push(run(1));
        if debug && self.session == Session::StopMidway {
            ops.push(set(0));
        }
        if debug && matches!(self.session, Session::StepPauses | Session::StepResent) {
            ops.push(set(self.control));
        }
        if debug && self.session == Session::ImmediateExit {
            ops.push(Op::KvmRun {
                vcpu: 0,
                immediate_exit: true,
                mmio_data: None,
                expect: None,
            });
        }
        ops
    }
}

/// The SMCCC filter every sweep and random scenario installs: the guest's first exit to
/// userspace is an HVC it forwards.
pub fn forward_filter() -> Op {
    Op::SmcccFilter {
        base: Value::Num(HYPDBG_FORWARDED_FID),
        nr: 1,
        action: FilterAction::Forward,
        expect: None,
    }
}

/// The first run of a sweep or random scenario: to the forwarded HVC.
pub fn first_run() -> Op {
    Op::RunUntilExit {
        vcpu: 0,
        exit: ExitKind::Hypercall,
        expect: None,
    }
}

/// The guest MDSCR_EL1 values swept.
pub const MDSCR_VALUES: [u64; 5] = [
    0,
    DBG_MDSCR_MDE,
    DBG_MDSCR_KDE,
    DBG_MDSCR_KDE | DBG_MDSCR_MDE,
    DBG_MDSCR_KDE | DBG_MDSCR_SS,
];

/// The userspace control values swept.
pub fn controls() -> [u32; 6] {
    use GuestDebugControl as G;
    [
        0,
        G::ENABLE.bits(),
        (G::ENABLE | G::USE_HW).bits(),
        (G::ENABLE | G::SINGLESTEP).bits(),
        (G::ENABLE | G::USE_SW_BP).bits(),
        (G::ENABLE | G::USE_HW | G::SINGLESTEP).bits(),
    ]
}

/// The sweep for one profile: every MDSCR x control x session, with the other dimensions
/// rotating through their values; every OS lock x MDSCR x PSTATE.D x clean-access point
/// without userspace; sorted smallest first.
pub fn points() -> Vec<Params> {
    let mut v = Vec::new();
    let cleans = [CleanAccess::None, CleanAccess::Read, CleanAccess::Write];
    let migrations = [Migration::None, Migration::Same, Migration::Other];
    let mut k = 0usize;
    for &mdscr in &MDSCR_VALUES {
        for &control in &controls() {
            let sessions: &[Session] = if control == 0 {
                &[Session::Whole]
            } else if control & GuestDebugControl::SINGLESTEP.bits() != 0 {
                &[
                    Session::Whole,
                    Session::StartMidway,
                    Session::StopMidway,
                    Session::StepPauses,
                    Session::StepResent,
                    Session::ImmediateExit,
                ]
            } else {
                &[Session::Whole, Session::StartMidway, Session::StopMidway]
            };
            for &session in sessions {
                for variant in 0..2 {
                    k += 1;
                    v.push(Params {
                        mdscr,
                        d_clear: (k + variant).is_multiple_of(2),
                        os_lock: k % 7 == 3,
                        clean: cleans[(k + variant) % 3],
                        control,
                        session,
                        migration: migrations[(k / 2 + variant) % 3],
                        irq: control & GuestDebugControl::SINGLESTEP.bits() != 0
                            && (k + variant) % 2 == 1,
                        lower_wrps: false,
                    });
                }
            }
        }
    }
    for &mdscr in &MDSCR_VALUES {
        for os_lock in [false, true] {
            for d_clear in [false, true] {
                for &clean in &cleans {
                    v.push(Params::guest_only(mdscr, d_clear, os_lock, clean));
                }
            }
        }
    }
    // A guest told of one watchpoint fewer than the hardware has, using every one of them,
    // and userspace using the hardware: the switch must still move the hardware's count.
    for p in count_points() {
        v.push(Params {
            lower_wrps: true,
            ..p
        });
    }
    v.sort_by_key(|p| p.size());
    v.dedup();
    v
}

/// The count sweep: a guest using its registers, and userspace using the hardware, on a CPU
/// of `f` (every BRPs/WRPs field value is swept by the caller).
pub fn count_points() -> [Params; 2] {
    let base = Params {
        mdscr: DBG_MDSCR_KDE | DBG_MDSCR_MDE,
        d_clear: false,
        os_lock: false,
        clean: CleanAccess::Write,
        control: 0,
        session: Session::Whole,
        migration: Migration::None,
        irq: false,
        lower_wrps: false,
    };
    let user = Params {
        mdscr: 0,
        clean: CleanAccess::None,
        control: (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits(),
        ..base
    };
    [base, user]
}

/// Two vcpus on two physical CPUs of `cpu` entering their guests at the same time, both
/// using their debug registers: per-CPU host state must stay per CPU.
pub fn smp_scenario(cpu: &CpuSpec) -> Scenario {
    let code =
        "mov x0, #0xa000\nmsr mdscr_el1, x0\nstop #0\nnop\nstop #1\nnop\nstop #2\n".to_string();
    let run = || Op::RunConcurrently {
        vcpus: vec![0, 1],
        expect: None,
    };
    Scenario {
        description: "two vcpus with MDSCR_EL1 = KDE|MDE on two physical CPUs enter their guests at the same time".into(),
        vcpus: 2,
        ops: vec![run(), run(), run()],
        ..Scenario::new("smp", vec![cpu.clone(), cpu.clone()], code)
    }
}
