//! What an action did ([`Outcome`], [`ExitInfo`], [`ExitCounts`]) and why one failed
//! ([`ActionError`], [`SetupError`]).

use hypdbg_host::exit::exit_syndrome;
use hypdbg_host::{DebugError, DebugStop, HwDebugError, SnapshotError, Stop, VcpuError};
use hypdbg_hyp::KvmError;
use hypdbg_hyp::guest::program::ProgramError;
use hypdbg_hyp::vm::VcpuExit;
use hypdbg_model::esr::{
    ESR_ELX_EC_BREAKPT_CUR, ESR_ELX_EC_BREAKPT_LOW, ESR_ELX_EC_BRK64, ESR_ELX_EC_SOFTSTP_CUR,
    ESR_ELX_EC_SOFTSTP_LOW, ESR_ELX_EC_WATCHPT_CUR, ESR_ELX_EC_WATCHPT_LOW, Esr, ec_name,
};

use crate::scenario::ops::ExitKind;

/// KVM_RUN returns one `run` action may make while it waits for its HVC.
pub const MAX_RUN_ITERATIONS: u32 = 100_000;

/// KVM_EXIT_INTRs (full instruction budgets) a `run` with `until_hvc` may pass: a guest that
/// loops without reaching its HVC fails fast.
pub const MAX_BUDGETS: u32 = 64;

/// KVM_RUNs one `run_until_hvc` may make before the scenario is declared stuck.
pub const MAX_RUNS: u32 = 512;

/// Why a scenario's VM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The guest program does not assemble.
    #[error("guest code: {0}")]
    Code(#[from] ProgramError),
    /// A label that the program does not define.
    #[error("action {op}: unknown label '{label}'")]
    Label {
        /// The action's number.
        op: usize,
        /// The label.
        label: String,
    },
    /// KVM refused to create the VM or place a vcpu.
    #[error("vm: {what}{source}")]
    Vm {
        /// What was being set up (`"vcpu_cpus[1]: "`), or empty.
        what: String,
        /// KVM's answer.
        #[source]
        source: KvmError,
    },
}

/// Why an action failed. The messages are the ones a scenario's `expect.error` matches.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The scenario cannot run at all (a label the program lacks, ...).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// KVM refused (the simulator's ioctl error).
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// A vcpu operation failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The debugger refused or failed.
    #[error(transparent)]
    Debug(#[from] DebugError),
    /// The hardware pool refused a breakpoint or watchpoint.
    #[error(transparent)]
    HwDebug(#[from] HwDebugError),
    /// A snapshot could not be taken or restored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A vcpu index the VM does not have.
    #[error("no vcpu {0}")]
    NoVcpu(usize),
    /// A debugger action on a vcpu no debugger is attached to (the driver attaches one
    /// first; this is a driver defect).
    #[error("no debugger on vcpu {0}")]
    NoDebugger(usize),
    /// A physical CPU index the VM does not have.
    #[error("no physical CPU {0}")]
    NoCpu(usize),
    /// A `set_guest_debug` register index outside `struct kvm_guest_debug_arch`.
    #[error("register index {0} is above 15")]
    BankIndex(usize),
    /// A `restore` of a snapshot never taken.
    #[error("no snapshot named '{0}'")]
    NoSnapshot(String),
    /// A register name ONE_REG does not reach.
    #[error("{0}")]
    Register(String),
    /// The HVC an action waits for never came.
    #[error("no hvc #{imm} after {count} {what}: the guest makes no progress")]
    NoProgress {
        /// The HVC immediate.
        imm: u16,
        /// How many runs or stops were made.
        count: u32,
        /// `KVM_RUNs` or `stops`.
        what: &'static str,
    },
    /// The guest loops, using up whole instruction budgets, without reaching its HVC.
    #[error(
        "no hvc #{imm} after {MAX_BUDGETS} KVM_RUNs that each used up the instruction budget (KVM_EXIT_INTR): the guest loops without reaching it"
    )]
    OutOfBudget {
        /// The HVC immediate.
        imm: u16,
    },
    /// `run_until_hvc` met an exit that is neither an HVC nor a debug exit.
    #[error("expected hvc #{imm}, got {exit}")]
    UnexpectedExit {
        /// The HVC immediate.
        imm: u16,
        /// The exit, in words.
        exit: String,
    },
    /// An action handed to the wrong family of actions (a driver defect).
    #[error("`{0}` reached the wrong family of actions (a driver defect)")]
    Misrouted(&'static str),
    /// A repeated action with a count of 0 (the file checks refuse it).
    #[error("{0} count 0")]
    ZeroCount(&'static str),
}

/// How a running action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// What kind of exit (or debugger stop).
    pub kind: ExitKind,
    /// ESR_EL2 of a debug exit.
    pub esr: Option<Esr>,
    /// FAR of a debug exit.
    pub far: Option<u64>,
    /// The HVC immediate.
    pub imm: Option<u16>,
    /// The debugger stop, when the debugger decided.
    pub stop: Option<DebugStop>,
}

/// The kind of a debug exit by its exception class.
fn debug_kind(ec: u8) -> ExitKind {
    match ec {
        ESR_ELX_EC_BREAKPT_LOW | ESR_ELX_EC_BREAKPT_CUR => ExitKind::Breakpoint,
        ESR_ELX_EC_SOFTSTP_LOW | ESR_ELX_EC_SOFTSTP_CUR => ExitKind::Step,
        ESR_ELX_EC_WATCHPT_LOW | ESR_ELX_EC_WATCHPT_CUR => ExitKind::Watchpoint,
        ESR_ELX_EC_BRK64 => ExitKind::Brk,
        _ => ExitKind::Debug,
    }
}

impl ExitInfo {
    fn of_kind(kind: ExitKind) -> Self {
        ExitInfo {
            kind,
            esr: None,
            far: None,
            imm: None,
            stop: None,
        }
    }

    /// A raw KVM_RUN exit.
    pub fn of_exit(e: &VcpuExit) -> Self {
        match *e {
            VcpuExit::Debug { arch, flags } => {
                let esr = exit_syndrome(&arch, flags);
                // run->debug.arch.far is meaningful for a watchpoint only (issue 15 row 10).
                let far =
                    (esr.ec() == hypdbg_model::esr::ESR_ELX_EC_WATCHPT_LOW).then_some(arch.far);
                ExitInfo {
                    esr: Some(esr),
                    far,
                    ..Self::of_kind(debug_kind(esr.ec()))
                }
            }
            VcpuExit::Hvc { imm } => ExitInfo {
                imm: Some(imm),
                ..Self::of_kind(ExitKind::Hvc)
            },
            VcpuExit::ProgramEnd { .. } => Self::of_kind(ExitKind::ProgramEnd),
            VcpuExit::Intr => Self::of_kind(ExitKind::Intr),
            VcpuExit::GuestAbort { .. } => Self::of_kind(ExitKind::GuestAbort),
        }
    }

    /// A debugger's stop, with the raw exit that produced it.
    pub fn of_stop(stop: &Stop, raw: Option<&VcpuExit>) -> Self {
        let mut x = raw.map_or(Self::of_kind(ExitKind::Debug), ExitInfo::of_exit);
        if let Stop::Debug(d) = stop {
            x.stop = Some(*d);
            x.kind = match d {
                DebugStop::Step { .. } => ExitKind::Step,
                DebugStop::SwBreakpoint { .. } => ExitKind::Brk,
                DebugStop::HwBreakpoint { .. } => ExitKind::Breakpoint,
                DebugStop::Watchpoint { far, .. } => {
                    x.far = Some(*far);
                    ExitKind::Watchpoint
                }
                _ => ExitKind::Debug,
            };
        }
        x
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ExitKind::Hvc => write!(f, "hvc #{}", self.imm.unwrap_or(0)),
            k if k.is_debug() => {
                write!(f, "{k}")?;
                if let Some(e) = self.esr {
                    write!(f, " (EC {:#x} {})", e.ec(), ec_name(e.ec()))?;
                }
                if k == ExitKind::Watchpoint
                    && let Some(a) = self.far
                {
                    write!(f, " far={a:#x}")?;
                }
                Ok(())
            }
            k => write!(f, "{k}"),
        }
    }
}

/// What one action did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// One line, in words.
    pub text: String,
    /// How a running action ended.
    pub exit: Option<ExitInfo>,
    /// Debug stops passed on the way.
    pub stops: u64,
    /// The value a `get_one_reg` read.
    pub value: Option<u64>,
}

impl Outcome {
    /// An action that only says what it did.
    pub fn text(text: String) -> Self {
        Outcome {
            text,
            ..Outcome::default()
        }
    }
}

/// KVM_RUN returns, by kind, over a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExitCounts {
    /// Every KVM_RUN that returned.
    pub total: u64,
    /// KVM_EXIT_DEBUG.
    pub debug: u64,
    /// HVCs for userspace.
    pub hvc: u64,
    /// KVM_EXIT_INTR.
    pub intr: u64,
    /// Program ends.
    pub program_end: u64,
    /// Unhandled guest exceptions.
    pub guest_abort: u64,
}

impl ExitCounts {
    /// Count one exit.
    pub fn record(&mut self, e: &VcpuExit) {
        self.total += 1;
        match e {
            VcpuExit::Debug { .. } => self.debug += 1,
            VcpuExit::Hvc { .. } => self.hvc += 1,
            VcpuExit::Intr => self.intr += 1,
            VcpuExit::ProgramEnd { .. } => self.program_end += 1,
            VcpuExit::GuestAbort { .. } => self.guest_abort += 1,
        }
    }
}
