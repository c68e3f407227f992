//! The crate's errors. Every message names the value that was refused and the rule it breaks;
//! [`Errno`] gives the errno a kernel or QEMU would use for the same refusal.

use hypdbg_model::ModelError;

use crate::encode::WatchRequest;

/// The errno QEMU's gdbstub / the kernel returns for the equivalent refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Errno {
    /// Invalid argument.
    Einval,
    /// No such entry.
    Enoent,
    /// No buffer space: every slot is in use.
    Enobufs,
    /// Already exists.
    Eexist,
    /// Bad address (guest memory could not be accessed).
    Efault,
}

impl Errno {
    /// The symbolic name (`"EINVAL"`).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Einval => "EINVAL",
            Errno::Enoent => "ENOENT",
            Errno::Enobufs => "ENOBUFS",
            Errno::Eexist => "EEXIST",
            Errno::Efault => "EFAULT",
        }
    }

    /// The Linux errno value (positive; the ioctl convention returns its negation).
    pub const fn code(self) -> i32 {
        match self {
            Errno::Einval => 22,
            Errno::Enoent => 2,
            Errno::Enobufs => 105,
            Errno::Eexist => 17,
            Errno::Efault => 14,
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a hardware breakpoint or watchpoint cannot be encoded, inserted or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwDebugError {
    /// A breakpoint address that is not word aligned.
    #[error(
        "breakpoint address {addr:#x} is not 4-byte aligned: A64 instructions are word aligned and DBGBVR bits [1:0] are RES0 (EINVAL)"
    )]
    MisalignedBreakpoint {
        /// The address given.
        addr: u64,
    },
    /// An address whose bits \[63:48\] are not a sign extension of bit 48.
    #[error(
        "address {addr:#x} is not a canonical virtual address: DBGBVR/DBGWVR bits [63:49] are RESS, a sign extension of bit 48, and the debugger must not mask them (EINVAL)"
    )]
    NonCanonical {
        /// The address given.
        addr: u64,
    },
    /// A watchpoint of length 0.
    #[error(
        "watchpoint at {addr:#x} has length 0: a watchpoint watches at least one byte (EINVAL)"
    )]
    ZeroLength {
        /// The address given.
        addr: u64,
    },
    /// A watchpoint longer than the encoder splits.
    #[error(
        "watchpoint length {len:#x} at {addr:#x} is longer than 2 GiB (0x80000000), the largest range a watchpoint set covers here (EINVAL)"
    )]
    TooLong {
        /// The address given.
        addr: u64,
        /// The length given.
        len: u64,
    },
    /// A watchpoint range that wraps or leaves the canonical half it starts in.
    #[error(
        "watchpoint range {addr:#x}..={last:#x} leaves the canonical VA half it starts in (bits [63:48] of both ends must equal bit 48 of the start) (EINVAL)"
    )]
    RangeNotCanonical {
        /// The address given.
        addr: u64,
        /// The last byte of the range (wrapped if it overflowed).
        last: u64,
    },
    /// A breakpoint inserted twice.
    #[error("a hardware breakpoint at {addr:#x} already exists in slot {slot} (EEXIST)")]
    DuplicateBreakpoint {
        /// The address.
        addr: u64,
        /// The slot that holds it.
        slot: usize,
    },
    /// A watchpoint request inserted twice.
    #[error("watchpoint {request} already exists (EEXIST)")]
    DuplicateWatchpoint {
        /// The request.
        request: WatchRequest,
    },
    /// Every breakpoint slot is in use.
    #[error(
        "no free hardware breakpoint for {addr:#x}: all {capacity} slots (KVM_CAP_GUEST_DEBUG_HW_BPS) are in use (ENOBUFS)"
    )]
    NoBreakpointSlot {
        /// The address.
        addr: u64,
        /// KVM_CAP_GUEST_DEBUG_HW_BPS.
        capacity: usize,
    },
    /// Not enough free watchpoint slots to watch exactly the requested bytes.
    #[error(
        "watchpoint {request} needs {needed} slot(s) to watch exactly its bytes but only {free} of {capacity} (KVM_CAP_GUEST_DEBUG_HW_WPS) are free; nothing was inserted (ENOBUFS)"
    )]
    NoWatchpointSlots {
        /// The request.
        request: WatchRequest,
        /// Slots the exact encoding needs.
        needed: usize,
        /// Free slots.
        free: usize,
        /// KVM_CAP_GUEST_DEBUG_HW_WPS.
        capacity: usize,
    },
    /// Removal of a breakpoint that is not there.
    #[error("no hardware breakpoint at {addr:#x} (ENOENT)")]
    BreakpointNotFound {
        /// The address.
        addr: u64,
    },
    /// Removal of a watchpoint request that is not there.
    #[error(
        "no watchpoint {request}: removal takes the exact (address, length, access) it was inserted with (ENOENT)"
    )]
    WatchpointNotFound {
        /// The request.
        request: WatchRequest,
    },
    /// A capability value outside 0..=16.
    #[error(
        "KVM reports {value} for {cap}: the UAPI arrays hold 0..=16 registers (KVM_ARM_MAX_DBG_REGS) (EINVAL)"
    )]
    BadCapacity {
        /// Which capability.
        cap: &'static str,
        /// The value KVM_CHECK_EXTENSION returned.
        value: i64,
    },
    /// An access direction that does not parse.
    #[error(
        "'{text}' is not an access direction: use read (load, r), write (store, w) or access (rw, a, both, read-write, load-store) (EINVAL)"
    )]
    BadAccess {
        /// The text given.
        text: String,
    },
    /// The architectural model refused a block the decomposition produced (a bug here).
    #[error("the DBGWCR encoder refused a decomposed block: {0} (EINVAL)")]
    Model(#[from] ModelError),
}

impl HwDebugError {
    /// The errno the kernel or QEMU uses for this refusal.
    pub const fn errno(&self) -> Errno {
        match self {
            HwDebugError::DuplicateBreakpoint { .. } | HwDebugError::DuplicateWatchpoint { .. } => {
                Errno::Eexist
            }
            HwDebugError::NoBreakpointSlot { .. } | HwDebugError::NoWatchpointSlots { .. } => {
                Errno::Enobufs
            }
            HwDebugError::BreakpointNotFound { .. } | HwDebugError::WatchpointNotFound { .. } => {
                Errno::Enoent
            }
            _ => Errno::Einval,
        }
    }
}

pub use hypdbg_model::vcpu::VcpuError;

/// Why a software breakpoint cannot be inserted or removed.
#[derive(Debug, thiserror::Error)]
pub enum SwBpError {
    /// An address that is not word aligned.
    #[error(
        "software breakpoint address {addr:#x} is not 4-byte aligned: BRK replaces one A64 instruction (EINVAL)"
    )]
    Misaligned {
        /// The address.
        addr: u64,
    },
    /// A non-canonical address.
    #[error(
        "software breakpoint address {addr:#x} is not a canonical virtual address (bits [63:48] must equal bit 48) (EINVAL)"
    )]
    NonCanonical {
        /// The address.
        addr: u64,
    },
    /// Inserted twice.
    #[error("a software breakpoint at {addr:#x} already exists (EEXIST)")]
    Duplicate {
        /// The address.
        addr: u64,
    },
    /// Removal of one that is not there.
    #[error("no software breakpoint at {addr:#x} (ENOENT)")]
    NotFound {
        /// The address.
        addr: u64,
    },
    /// The BRK was overwritten (by the guest or another tool): restoring the saved instruction
    /// would destroy the new contents, so it is left alone and the breakpoint is forgotten.
    #[error(
        "software breakpoint at {addr:#x}: guest memory holds {found:#010x}, not our BRK #0 ({brk:#010x}); the saved instruction {saved:#010x} was not written back (EINVAL)",
        brk = hypdbg_model::insn::BRK0
    )]
    Overwritten {
        /// The address.
        addr: u64,
        /// What memory holds now.
        found: u32,
        /// The instruction the breakpoint replaced.
        saved: u32,
    },
    /// Writing BRK did not stick (read back differs): the memory is not writable.
    #[error(
        "software breakpoint at {addr:#x}: wrote BRK #0 but read back {found:#010x}; the memory is not writable (EFAULT)"
    )]
    NotWritable {
        /// The address.
        addr: u64,
        /// What was read back.
        found: u32,
    },
    /// The vcpu's memory access failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
}

impl SwBpError {
    /// The errno QEMU would return.
    pub fn errno(&self) -> Errno {
        match self {
            SwBpError::Duplicate { .. } => Errno::Eexist,
            SwBpError::NotFound { .. } => Errno::Enoent,
            SwBpError::NotWritable { .. } | SwBpError::Vcpu(_) => Errno::Efault,
            _ => Errno::Einval,
        }
    }
}

/// Why a debug-state snapshot cannot be taken, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The target implements fewer breakpoints or watchpoints than the snapshot uses.
    #[error(
        "the snapshot uses {reg} = {value:#x} but the target vcpu implements only {available} {what}s (KVM_CAP_GUEST_DEBUG_HW_{cap}): restoring would drop it, nothing was restored",
        cap = if *what == "breakpoint" { "BPS" } else { "WPS" }
    )]
    TooFewRegisters {
        /// The first register that does not fit.
        reg: hypdbg_model::SysReg,
        /// Its value.
        value: u64,
        /// "breakpoint" or "watchpoint".
        what: &'static str,
        /// What the target implements.
        available: usize,
    },
    /// A malformed snapshot (banks of different lengths, more than 16 entries).
    #[error("malformed debug snapshot: {why}")]
    Malformed {
        /// What is wrong.
        why: String,
    },
    /// A capability out of range.
    #[error(transparent)]
    Capacity(#[from] HwDebugError),
    /// JSON that does not parse.
    #[error("debug snapshot JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A ONE_REG access failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
}

/// Why a debugger operation on a vcpu failed.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    /// The kernel cannot debug guests.
    #[error("KVM_CAP_SET_GUEST_DEBUG is not supported: this kernel cannot debug guests (EINVAL)")]
    NoGuestDebug,
    /// A hardware breakpoint/watchpoint operation failed.
    #[error(transparent)]
    Hw(#[from] HwDebugError),
    /// A software breakpoint operation failed.
    #[error(transparent)]
    Sw(#[from] SwBpError),
    /// A vcpu operation failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The guest kept exiting for its own events without ever stopping for the debugger.
    #[error(
        "gave up after {count} debug exits that were all the guest's own (reinjected or stepped over) without a stop for the debugger"
    )]
    TooManyExits {
        /// How many.
        count: usize,
    },
    /// A single step over an event ended with an exit that is not a debug exit.
    #[error("single-stepping: {exit}")]
    StepInterrupted {
        /// The exit, in words.
        exit: String,
    },
    /// A single step over an event kept raising other debug exits.
    #[error("single-stepping made no progress")]
    StepNoProgress,
    /// Stepping over a guest event the guest had masked did not get past it.
    #[error(
        "could not step over the guest's masked {what} at {pc:#x}: it fired again with every breakpoint at the PC and every watchpoint disabled"
    )]
    StuckStepOver {
        /// The PC.
        pc: u64,
        /// The event.
        what: &'static str,
    },
}

/// Misuse of [`crate::SharedHwDebug`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmpError {
    /// A vcpu index the pool was not built for.
    #[error("vcpu {vcpu} does not exist: the shared pool serves vcpus 0..{vcpus}")]
    NoSuchVcpu {
        /// The index given.
        vcpu: usize,
        /// How many vcpus the pool serves.
        vcpus: usize,
    },
    /// `enter` twice without leaving.
    #[error(
        "vcpu {vcpu} is already in the guest with generation {generation}: leave before entering again"
    )]
    AlreadyEntered {
        /// The vcpu.
        vcpu: usize,
        /// The generation it holds.
        generation: u64,
    },
}
