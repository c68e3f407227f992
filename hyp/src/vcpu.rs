//! A vcpu of the simulator as a debugger drives it: [`VmVcpu`] implements the model crate's
//! [`DebugVcpu`] (the `kvm-ioctls`-shaped seam) over a [`Vm`], so the VMM-side logic of
//! `hypdbg-host` runs against the simulator exactly as it would against a real `VcpuFd`.

use hypdbg_model::esr::Esr;
use hypdbg_model::guest_abi::Doorbell;
use hypdbg_model::uapi::KvmGuestDebug;
use hypdbg_model::vcpu::{DebugVcpu, RunExit, VcpuError};

use crate::{KvmError, VcpuExit, Vm};

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
        match (exit, exit.doorbell()) {
            (VcpuExit::Debug { arch, flags }, _) => RunExit::Debug { arch, flags },
            (_, Some(Doorbell::Stop(n))) => RunExit::Stop { n },
            (
                VcpuExit::Mmio {
                    phys_addr,
                    len,
                    is_write,
                    ..
                },
                None,
            ) => RunExit::Mmio {
                phys_addr,
                data: exit.mmio_value().unwrap_or(0),
                len,
                is_write,
            },
            (VcpuExit::Hypercall { nr, .. }, _) => RunExit::Hypercall { nr },
            (VcpuExit::SystemEvent { event_type }, _) => RunExit::SystemEvent { event_type },
            (other, _) => RunExit::Other {
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
        self.vm
            .read_guest(addr, buf)
            .map_err(|e| VcpuError::new(format!("read of guest memory at {addr:#x}"), e))
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), VcpuError> {
        self.vm
            .write_guest(addr, data)
            .map_err(|e| VcpuError::new(format!("write of guest memory at {addr:#x}"), e))
    }

    fn inject_debug_exception(&mut self, esr: Esr, far: Option<u64>) -> Result<(), VcpuError> {
        self.vm
            .inject_exception(self.index, esr, far)
            .map_err(|e: KvmError| VcpuError::new(format!("inject ESR {:#x}", esr.bits()), e))
    }
}
