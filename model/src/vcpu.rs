//! The few vcpu operations a debugger needs, as a trait ([`DebugVcpu`]): the seam between the
//! VMM-side logic (`hypdbg-host`) and whatever runs the guest (the `hypdbg-hyp` simulator, or
//! a real kernel through KVM ioctls).
//!
//! # Mapping to `kvm_ioctls::VcpuFd` on arm64
//!
//! The trait is shaped after rust-vmm's `kvm-ioctls` so that the same host logic can drive a
//! real vcpu:
//!
//! | [`DebugVcpu`] | `kvm-ioctls` / KVM |
//! |---|---|
//! | `check_extension(cap)` | `Kvm::check_extension_int(Cap)` or `VmFd::check_extension_raw(cap)` (KVM_CHECK_EXTENSION) |
//! | `set_guest_debug(dbg)` | `VcpuFd::set_guest_debug(&kvm_guest_debug)` (KVM_SET_GUEST_DEBUG; `From<KvmGuestDebug>` in `hypdbg_model::uapi` converts on aarch64) |
//! | `run()` | `VcpuFd::run()`: `VcpuExit::Debug(arch)` becomes [`RunExit::Debug`] with `flags` from `VcpuFd::get_kvm_run().flags`; `VcpuExit::MmioWrite` at a doorbell slot becomes [`RunExit::Stop`], other MMIO [`RunExit::Mmio`]; `VcpuExit::Hypercall` [`RunExit::Hypercall`]; `VcpuExit::SystemEvent` [`RunExit::SystemEvent`]; anything else [`RunExit::Other`] |
//! | `get_one_reg(id)` / `set_one_reg(id, v)` | `VcpuFd::get_one_reg(id, &mut [u8; 8])` / `set_one_reg(id, &v.to_le_bytes())` (KVM_{GET,SET}_ONE_REG) |
//! | `read_memory` / `write_memory` | the VMM's guest memory (`vm-memory`'s `GuestMemoryMmap::read_slice`/`write_slice`) after walking the guest's stage-1 tables for the virtual address (arm64 has no KVM_TRANSLATE) |
//! | `inject_debug_exception(esr, far)` | KVM has no ioctl to inject a synchronous exception with a chosen ESR: the VMM emulates exception entry with ONE_REG (SPSR_EL1 = PSTATE, ELR_EL1 = PC, ESR_EL1, FAR_EL1, PSTATE = EL1h with DAIF masked, PC = VBAR_EL1 + vector offset), as QEMU's `do_interrupt` does under KVM |

use serde::Serialize;

use crate::esr::Esr;
use crate::uapi::{KvmDebugExitArch, KvmGuestDebug};

/// A failed operation on a vcpu (an ioctl error, or the simulator's equivalent).
#[derive(Debug, thiserror::Error)]
#[error("{op} failed: {source}")]
pub struct VcpuError {
    /// The operation, with its argument (`"KVM_SET_ONE_REG DBGBCR3_EL1"`).
    pub op: String,
    /// The underlying error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl VcpuError {
    /// Wrap an error of `op`.
    pub fn new(
        op: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        VcpuError {
            op: op.into(),
            source: Box::new(source),
        }
    }
}

/// Why `run` returned to the debugger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "exit", rename_all = "snake_case")]
pub enum RunExit {
    /// KVM_EXIT_DEBUG: `run->debug.arch` and `run->flags`.
    Debug {
        /// `struct kvm_debug_exit_arch`.
        arch: KvmDebugExitArch,
        /// `run->flags` (bit 0: KVM_DEBUG_ARCH_HSR_HIGH_VALID).
        flags: u32,
    },
    /// The guest's `stop #n`: KVM_EXIT_MMIO at the doorbell slot `n`
    /// ([`crate::guest_abi`]).
    Stop {
        /// The stop number.
        n: u16,
    },
    /// Any other KVM_EXIT_MMIO.
    Mmio {
        /// `run->mmio.phys_addr`.
        phys_addr: u64,
        /// A store's value (`run->mmio.data`, `len` bytes little-endian).
        data: u64,
        /// `run->mmio.len`.
        len: u32,
        /// `run->mmio.is_write`.
        is_write: bool,
    },
    /// KVM_EXIT_HYPERCALL: an HVC forwarded by the SMCCC filter.
    Hypercall {
        /// The SMCCC function id.
        nr: u64,
    },
    /// KVM_EXIT_SYSTEM_EVENT (PSCI SYSTEM_OFF or SYSTEM_RESET).
    SystemEvent {
        /// KVM_SYSTEM_EVENT_*.
        event_type: u32,
    },
    /// Any other exit, described.
    Other {
        /// What happened.
        what: String,
    },
}

impl std::fmt::Display for RunExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunExit::Debug { arch, flags } => write!(
                f,
                "KVM_EXIT_DEBUG hsr={:#x} hsr_high={:#x} far={:#x} flags={flags:#x}",
                arch.hsr, arch.hsr_high, arch.far
            ),
            RunExit::Stop { n } => write!(f, "stop #{n}"),
            RunExit::Mmio {
                phys_addr,
                data,
                len,
                is_write,
            } => {
                if *is_write {
                    write!(
                        f,
                        "KVM_EXIT_MMIO write {phys_addr:#x} len {len} data {data:#x}"
                    )
                } else {
                    write!(f, "KVM_EXIT_MMIO read {phys_addr:#x} len {len}")
                }
            }
            RunExit::Hypercall { nr } => write!(f, "KVM_EXIT_HYPERCALL nr={nr:#x}"),
            RunExit::SystemEvent { event_type } => {
                write!(f, "KVM_EXIT_SYSTEM_EVENT type {event_type}")
            }
            RunExit::Other { what } => f.write_str(what),
        }
    }
}

/// What the debugger needs from one vcpu. Implemented by `hypdbg_hyp::vcpu::VmVcpu` for the simulator;
/// see the module documentation for the mapping onto a real `kvm_ioctls::VcpuFd`.
pub trait DebugVcpu {
    /// KVM_CHECK_EXTENSION (0 when unsupported; a count for the HW_BPS/HW_WPS caps).
    fn check_extension(&self, cap: u32) -> i64;
    /// KVM_SET_GUEST_DEBUG.
    fn set_guest_debug(&mut self, dbg: &KvmGuestDebug) -> Result<(), VcpuError>;
    /// KVM_RUN until the vcpu needs userspace.
    fn run(&mut self) -> Result<RunExit, VcpuError>;
    /// KVM_GET_ONE_REG of a 64-bit register.
    fn get_one_reg(&mut self, id: u64) -> Result<u64, VcpuError>;
    /// KVM_SET_ONE_REG of a 64-bit register.
    fn set_one_reg(&mut self, id: u64, value: u64) -> Result<(), VcpuError>;
    /// Read guest memory at a guest virtual address.
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), VcpuError>;
    /// Write guest memory at a guest virtual address (instruction memory included).
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), VcpuError>;
    /// Make the guest take a synchronous exception at its EL1 with ESR_EL1 = `esr` (and
    /// FAR_EL1 = `far` when given) before it executes anything else, the preferred return
    /// address being the current PC.
    fn inject_debug_exception(&mut self, esr: Esr, far: Option<u64>) -> Result<(), VcpuError>;
}
