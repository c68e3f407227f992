//! A backend vcpu as the host crate's debugger sees it ([`Tap`]): every exit counted and the
//! last one remembered, so a debugger stop can be reported with its syndrome.

use hypdbg_host::{DebugVcpu, RunExit, VcpuError};
use hypdbg_hyp::events::Event;
use hypdbg_hyp::vm::{RunOptions, VcpuExit};
use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::KvmGuestDebug;

use super::backend::BackendVcpu;
use super::outcome::{ActionError, ExitCounts};

/// A vcpu of the engine's backend as the host crate's debugger sees it, remembering the last
/// raw exit (so that a debugger stop can be reported with its syndrome) and counting exits.
pub struct Tap<'e, V: BackendVcpu> {
    vcpu: V,
    /// The last exit.
    pub last: Option<VcpuExit>,
    counts: &'e mut ExitCounts,
    sink: &'e mut dyn FnMut(&Event),
}

impl<'e, V: BackendVcpu> Tap<'e, V> {
    /// Wrap `vcpu`, counting its exits into `counts` and handing the events of its runs to
    /// `sink`.
    pub fn new(vcpu: V, counts: &'e mut ExitCounts, sink: &'e mut dyn FnMut(&Event)) -> Self {
        Tap {
            vcpu,
            last: None,
            counts,
            sink,
        }
    }

    /// KVM_RUN, the raw exit counted and remembered.
    pub fn run_exit(&mut self) -> Result<VcpuExit, ActionError> {
        self.run_exit_with(&RunOptions::default())
    }

    /// KVM_RUN with `immediate_exit` or MMIO data, the raw exit counted and remembered.
    pub fn run_exit_with(&mut self, opts: &RunOptions) -> Result<VcpuExit, ActionError> {
        let exit = self.vcpu.run_exit(opts, self.sink)?;
        self.counts.record(&exit);
        self.last = Some(exit);
        Ok(exit)
    }
}

impl<V: BackendVcpu> DebugVcpu for Tap<'_, V> {
    fn check_extension(&self, cap: u32) -> i64 {
        self.vcpu.check_extension(cap)
    }

    fn set_guest_debug(&mut self, dbg: &KvmGuestDebug) -> Result<(), VcpuError> {
        self.vcpu.set_guest_debug(dbg)
    }

    fn run(&mut self) -> Result<RunExit, VcpuError> {
        self.run_exit()
            .map(Into::into)
            .map_err(|e| VcpuError::new("KVM_RUN", e))
    }

    fn get_one_reg(&mut self, id: u64) -> Result<u64, VcpuError> {
        self.vcpu.get_one_reg(id)
    }

    fn set_one_reg(&mut self, id: u64, value: u64) -> Result<(), VcpuError> {
        self.vcpu.set_one_reg(id, value)
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), VcpuError> {
        self.vcpu.read_memory(addr, buf)
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), VcpuError> {
        self.vcpu.write_memory(addr, data)
    }

    fn inject_debug_exception(&mut self, esr: Esr, far: Option<u64>) -> Result<(), VcpuError> {
        self.vcpu.inject_debug_exception(esr, far)
    }
}
