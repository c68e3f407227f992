//! The few vcpu operations the debugger needs, as a trait ([`DebugVcpu`]), and its
//! implementation for a vcpu of the `hyp` simulator ([`VmVcpu`]).
//!
//! # Mapping to `kvm_ioctls::VcpuFd` on arm64
//!
//! The trait is shaped after rust-vmm's `kvm-ioctls` so that the same host logic can drive a
//! real vcpu (this crate does not depend on `kvm-ioctls`; an implementation would live in the
//! VMM):
//!
//! | [`DebugVcpu`] | `kvm-ioctls` / KVM |
//! |---|---|
//! | `check_extension(cap)` | `Kvm::check_extension_int(Cap)` or `VmFd::check_extension_raw(cap)` (KVM_CHECK_EXTENSION) |
//! | `set_guest_debug(dbg)` | `VcpuFd::set_guest_debug(&kvm_guest_debug)` (KVM_SET_GUEST_DEBUG; `From<KvmGuestDebug>` in `hypdbg_model::uapi` converts on aarch64) |
//! | `run()` | `VcpuFd::run()`: `VcpuExit::Debug(arch)` becomes [`RunExit::Debug`] with `flags` from `VcpuFd::get_kvm_run().flags`; `VcpuExit::Hypercall` becomes [`RunExit::Hypercall`]; anything else [`RunExit::Other`] |
//! | `get_one_reg(id)` / `set_one_reg(id, v)` | `VcpuFd::get_one_reg(id, &mut [u8; 8])` / `set_one_reg(id, &v.to_le_bytes())` (KVM_{GET,SET}_ONE_REG) |
//! | `read_memory` / `write_memory` | the VMM's guest memory (`vm-memory`'s `GuestMemoryMmap::read_slice`/`write_slice`) after walking the guest's stage-1 tables for the virtual address (arm64 has no KVM_TRANSLATE) |
//! | `inject_debug_exception(esr, far)` | KVM has no ioctl to inject a synchronous exception with a chosen ESR: the VMM emulates exception entry with ONE_REG (SPSR_EL1 = PSTATE, ELR_EL1 = PC, ESR_EL1, FAR_EL1, PSTATE = EL1h with DAIF masked, PC = VBAR_EL1 + vector offset), as QEMU's `do_interrupt` does under KVM |

use hypdbg_hyp::{KvmError, VcpuExit, Vm};
use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::{KvmDebugExitArch, KvmGuestDebug};
use serde::Serialize;

use crate::error::VcpuError;

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
    /// The guest made a hypercall to userspace (the simulator's HVC #imm).
    Hypercall {
        /// The immediate.
        imm: u16,
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
            RunExit::Hypercall { imm } => write!(f, "hypercall #{imm:#x}"),
            RunExit::Other { what } => f.write_str(what),
        }
    }
}

/// What the debugger needs from one vcpu. Implemented by [`VmVcpu`] for the simulator; see
/// the module documentation for the mapping onto a real `kvm_ioctls::VcpuFd`.
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

/// A vcpu of a simulated [`Vm`]: the VM and the vcpu's index.
pub struct VmVcpu<'a> {
    vm: &'a mut Vm,
    index: usize,
}

impl<'a> VmVcpu<'a> {
    /// The handle of vcpu `index` of `vm`; an index the VM does not have is an error.
    pub fn new(vm: &'a mut Vm, index: usize) -> Result<Self, VcpuError> {
        vm.vcpu(index)
            .map_err(|e| VcpuError::new("vcpu lookup", e))?;
        Ok(VmVcpu { vm, index })
    }

    /// The vcpu's index.
    pub const fn index(&self) -> usize {
        self.index
    }

    /// The VM (for test set-up: loading programs, choosing physical CPUs).
    pub fn vm(&mut self) -> &mut Vm {
        self.vm
    }

    /// KVM_RUN, returning the simulator's exit itself (for a caller that records it); the
    /// debugger's view of it is `RunExit::from`.
    pub fn run_raw(&mut self) -> Result<VcpuExit, VcpuError> {
        self.vm
            .run(self.index)
            .map_err(|e| VcpuError::new("KVM_RUN", e))
    }
}

impl From<VcpuExit> for RunExit {
    /// `kvm_run.exit_reason` as the debugger sees it.
    fn from(exit: VcpuExit) -> Self {
        match exit {
            VcpuExit::Debug { arch, flags } => RunExit::Debug { arch, flags },
            VcpuExit::Hvc { imm } => RunExit::Hypercall { imm },
            other => RunExit::Other {
                what: other.to_string(),
            },
        }
    }
}

fn one_reg_name(id: u64) -> String {
    use hypdbg_model::uapi::core_reg;
    if let Ok(r) = hypdbg_model::SysReg::from_one_reg_id(id) {
        return r.to_string();
    }
    match id {
        core_reg::PC => "PC".into(),
        core_reg::PSTATE => "PSTATE".into(),
        core_reg::SP => "SP".into(),
        _ => format!("{id:#x}"),
    }
}

impl DebugVcpu for VmVcpu<'_> {
    fn check_extension(&self, cap: u32) -> i64 {
        self.vm.check_extension(cap)
    }

    fn set_guest_debug(&mut self, dbg: &KvmGuestDebug) -> Result<(), VcpuError> {
        self.vm.set_guest_debug(self.index, dbg).map_err(|e| {
            VcpuError::new(format!("KVM_SET_GUEST_DEBUG control={:#x}", dbg.control), e)
        })
    }

    fn run(&mut self) -> Result<RunExit, VcpuError> {
        self.run_raw().map(RunExit::from)
    }

    fn get_one_reg(&mut self, id: u64) -> Result<u64, VcpuError> {
        self.vm
            .get_one_reg(self.index, id)
            .map_err(|e| VcpuError::new(format!("KVM_GET_ONE_REG {}", one_reg_name(id)), e))
    }

    fn set_one_reg(&mut self, id: u64, value: u64) -> Result<(), VcpuError> {
        self.vm.set_one_reg(self.index, id, value).map_err(|e| {
            VcpuError::new(
                format!("KVM_SET_ONE_REG {} = {value:#x}", one_reg_name(id)),
                e,
            )
        })
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), VcpuError> {
        self.vm.memory().read(addr, buf);
        Ok(())
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), VcpuError> {
        self.vm.memory_mut().write(addr, data);
        Ok(())
    }

    fn inject_debug_exception(&mut self, esr: Esr, far: Option<u64>) -> Result<(), VcpuError> {
        self.vm
            .inject_exception(self.index, esr, far)
            .map_err(|e: KvmError| VcpuError::new(format!("inject ESR {:#x}", esr.bits()), e))
    }
}
