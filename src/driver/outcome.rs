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

use hypdbg_model::guest_abi::Doorbell;

use crate::scenario::ops::{ExitKind, SystemEvent};

/// KVM_RUN returns one `run` action may make while it waits for its stop.
pub const MAX_RUN_ITERATIONS: u32 = 100_000;

/// KVM_EXIT_INTRs (full instruction budgets) a `run` with `until_stop` may pass: a guest
/// that loops without reaching its stop fails fast.
pub const MAX_BUDGETS: u32 = 64;

/// KVM_RUNs one `run_until_stop` may make before the scenario is declared stuck.
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
    /// The stop an action waits for never came.
    #[error("no {target} after {count} {what}: the guest makes no progress")]
    NoProgress {
        /// What the action waits for (`stop #2`).
        target: String,
        /// How many runs or stops were made.
        count: u32,
        /// `KVM_RUNs` or `stops`.
        what: &'static str,
    },
    /// The guest loops, using up whole instruction budgets, without reaching its stop.
    #[error(
        "no {target} after {MAX_BUDGETS} KVM_RUNs that each used up the instruction budget (KVM_EXIT_INTR): the guest loops without reaching it"
    )]
    OutOfBudget {
        /// What the action waits for.
        target: String,
    },
    /// `run_until_stop` or `run_until_exit` met an exit it does not pass.
    #[error("expected {target}, got {exit}")]
    UnexpectedExit {
        /// What the action waits for.
        target: String,
        /// The exit, in words.
        exit: String,
    },
    /// A running action on a vcpu whose guest already ran off its code.
    #[error(
        "vcpu {vcpu} ran off the end of its code (a program_end exit): there is nothing left \
         to run (end the code with a `stop` that an action waits for)"
    )]
    RanOffCode {
        /// The vcpu.
        vcpu: usize,
    },
    /// An action handed to the wrong family of actions (a driver defect).
    #[error("`{0}` reached the wrong family of actions (a driver defect)")]
    Misrouted(&'static str),
    /// The backend cannot do this (a real kernel: an action only the simulator models).
    #[error("not runnable on {backend}: {why}")]
    NotRunnable {
        /// The backend.
        backend: String,
        /// Why.
        why: String,
    },
    /// The real kernel's backend failed (QEMU, the agent, an ioctl).
    #[error("{0}")]
    Backend(String),
    /// The wall-clock limit passed.
    #[error("stopped by the wall-clock limit (--timeout)")]
    Deadline,
    /// A host-interrupt period of 0 (the guest would never run an instruction).
    #[error("irq every 0: a host interrupt comes after 1 or more guest instructions")]
    ZeroIrqPeriod,
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
    /// FAR of a debug exit (a watchpoint's: the only exit KVM writes it for).
    pub far: Option<u64>,
    /// `run->debug.arch.far` as any debug exit left it: for all but watchpoints, whatever
    /// the kvm_run exit union held from an earlier exit (an MMIO store's `data`).
    pub union_far: Option<u64>,
    /// The stop number of a `stop` exit.
    pub stop_n: Option<u16>,
    /// An MMIO exit: address, store, length, a store's value.
    pub mmio: Option<MmioInfo>,
    /// The function id of a hypercall exit, or the type of a system event.
    pub code: Option<u64>,
    /// The debugger stop, when the debugger decided.
    pub stop: Option<DebugStop>,
}

/// An MMIO exit as the run reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInfo {
    /// `run->mmio.phys_addr`.
    pub addr: u64,
    /// `run->mmio.is_write`.
    pub write: bool,
    /// `run->mmio.len`.
    pub len: u32,
    /// A store's value.
    pub data: u64,
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
            union_far: None,
            stop_n: None,
            mmio: None,
            code: None,
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
                    union_far: Some(arch.far),
                    ..Self::of_kind(debug_kind(esr.ec()))
                }
            }
            VcpuExit::Mmio {
                phys_addr,
                len,
                is_write,
                ..
            } => {
                let mmio = Some(MmioInfo {
                    addr: phys_addr,
                    write: is_write,
                    len,
                    data: e.mmio_value().unwrap_or(0),
                });
                match e.doorbell() {
                    Some(Doorbell::Stop(n)) => ExitInfo {
                        stop_n: Some(n),
                        mmio,
                        ..Self::of_kind(ExitKind::Stop)
                    },
                    Some(Doorbell::GuestAbort) => ExitInfo {
                        esr: e.mmio_value().map(Esr::from_bits),
                        mmio,
                        ..Self::of_kind(ExitKind::GuestAbort)
                    },
                    Some(Doorbell::ProgramEnd) => Self::of_kind(ExitKind::ProgramEnd),
                    None => ExitInfo {
                        mmio,
                        ..Self::of_kind(ExitKind::Mmio)
                    },
                }
            }
            VcpuExit::Hypercall { nr, .. } => ExitInfo {
                code: Some(nr),
                ..Self::of_kind(ExitKind::Hypercall)
            },
            VcpuExit::SystemEvent { event_type } => ExitInfo {
                code: Some(u64::from(event_type)),
                ..Self::of_kind(ExitKind::SystemEvent)
            },
            VcpuExit::ProgramEnd { .. } => Self::of_kind(ExitKind::ProgramEnd),
            VcpuExit::Intr => Self::of_kind(ExitKind::Intr),
        }
    }

    /// ESR.ISV of a debug exit (bit 24).
    pub fn isv(&self) -> Option<bool> {
        self.esr
            .filter(|_| self.kind.is_debug())
            .map(|e| e.bits() & (1 << 24) != 0)
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
            ExitKind::Stop => write!(f, "stop #{}", self.stop_n.unwrap_or(0)),
            ExitKind::Mmio => match self.mmio {
                Some(m) if m.write => write!(
                    f,
                    "mmio write {:#x} len {} data {:#x}",
                    m.addr, m.len, m.data
                ),
                Some(m) => write!(f, "mmio read {:#x} len {}", m.addr, m.len),
                None => write!(f, "mmio"),
            },
            ExitKind::Hypercall => write!(f, "hypercall {:#x}", self.code.unwrap_or(0)),
            ExitKind::SystemEvent => match self.code.and_then(|c| SystemEvent::of_type(c as u32)) {
                Some(ev) => write!(f, "system_event {}", ev.name()),
                None => write!(f, "system_event type {}", self.code.unwrap_or(0)),
            },
            ExitKind::GuestAbort => match self.esr {
                Some(e) => write!(
                    f,
                    "guest_abort (ESR_EL1 EC {:#x} {})",
                    e.ec(),
                    ec_name(e.ec())
                ),
                None => write!(f, "guest_abort"),
            },
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
    /// `stop #n` (KVM_EXIT_MMIO at the doorbell).
    pub stop: u64,
    /// Other KVM_EXIT_MMIO.
    pub mmio: u64,
    /// KVM_EXIT_HYPERCALL and KVM_EXIT_SYSTEM_EVENT.
    pub hypercall: u64,
    /// KVM_EXIT_INTR.
    pub intr: u64,
    /// Program ends.
    pub program_end: u64,
    /// Exceptions the guest's runtime does not handle.
    pub guest_abort: u64,
}

impl ExitCounts {
    /// Count one exit.
    pub fn record(&mut self, e: &VcpuExit) {
        self.total += 1;
        match (e, e.doorbell()) {
            (VcpuExit::Debug { .. }, _) => self.debug += 1,
            (_, Some(Doorbell::Stop(_))) => self.stop += 1,
            (_, Some(Doorbell::GuestAbort)) => self.guest_abort += 1,
            (VcpuExit::ProgramEnd { .. }, _) | (_, Some(Doorbell::ProgramEnd)) => {
                self.program_end += 1
            }
            (VcpuExit::Mmio { .. }, None) => self.mmio += 1,
            (VcpuExit::Hypercall { .. } | VcpuExit::SystemEvent { .. }, _) => self.hypercall += 1,
            (VcpuExit::Intr, _) => self.intr += 1,
        }
    }
}
