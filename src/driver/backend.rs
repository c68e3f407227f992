//! What the scenario driver needs from whatever runs the guest: the [`Backend`] trait. The
//! simulator ([`super::sim::SimBackend`]) is one; a real kernel behind an in-guest agent is
//! another. Everything a debugger does goes through the host crate's [`DebugVcpu`] seam, so
//! `hypdbg_host`'s `Debugger`, `HwDebug` and `RawSession` drive either backend the same way.

use hypdbg_host::DebugVcpu;
use hypdbg_hyp::events::{Event, GuestEvent};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::vm::{MpState, RunOptions, SmcccAction, VcpuExit};
use hypdbg_model::DebugFeatures;
use hypdbg_model::profiles::CpuSpec;

use super::outcome::ActionError;
use crate::checker::Finding;

/// One vcpu of a backend: the host crate's seam, plus the exit as the backend reports it
/// (for expectations and counts; the debugger sees its [`hypdbg_host::RunExit`] view).
pub trait BackendVcpu: DebugVcpu {
    /// KVM_RUN with the inputs `opts` puts in `struct kvm_run`, handing `sink` the events
    /// recorded on the way as they come (so a long run holds only what one world switch
    /// recorded).
    fn run_exit(
        &mut self,
        opts: &RunOptions,
        sink: &mut dyn FnMut(&Event),
    ) -> Result<VcpuExit, ActionError>;
}

/// A VM the driver plays actions on.
pub trait Backend {
    /// A handle on one vcpu.
    type Vcpu<'a>: BackendVcpu
    where
        Self: 'a;

    /// Vcpu `v` (an index the VM does not have is [`ActionError::NoVcpu`]).
    fn vcpu(&mut self, v: usize) -> Result<Self::Vcpu<'_>, ActionError>;

    /// The era whose contract the checker holds the run to.
    fn era(&self) -> Era;

    /// The ID_AA64DFR0_EL1 the guest sees.
    fn guest_features(&self) -> DebugFeatures;

    /// The number of vcpus.
    fn nr_vcpus(&self) -> usize;

    /// The number of physical CPUs.
    fn nr_pcpus(&self) -> usize;

    /// Vcpu `v` runs on physical CPU `cpu` from its next KVM_RUN.
    fn migrate(&mut self, v: usize, cpu: usize) -> Result<(), ActionError>;

    /// A host interrupt every `every` guest instructions of vcpu `v` (`None`: none).
    fn set_irq(&mut self, v: usize, every: Option<u64>) -> Result<(), ActionError>;

    /// During its next KVM_RUN, vcpu `v` is preempted after `after` in-kernel exits and moves
    /// to physical CPU `cpu`.
    fn preempt(&mut self, v: usize, after: u32, cpu: usize) -> Result<(), ActionError>;

    /// One KVM_RUN of each of `vcpus`, all entering their guests before any exits; `sink`
    /// gets the events as they come.
    fn run_concurrently(
        &mut self,
        vcpus: &[usize],
        sink: &mut dyn FnMut(&Event),
    ) -> Result<Vec<VcpuExit>, ActionError>;

    /// Live-migrate the VM: a fresh one (on `cpus`, default the same) receives the guest
    /// memory and every vcpu's registers through ONE_REG. Returns the registers carried per
    /// vcpu.
    fn migrate_vm(&mut self, cpus: Option<&[CpuSpec]>) -> Result<usize, ActionError>;

    /// KVM_ARM_VM_SMCCC_FILTER: what KVM does with the HVCs of `[base, base + nr)`.
    fn set_smccc_filter(
        &mut self,
        base: u32,
        nr: u32,
        action: SmcccAction,
    ) -> Result<(), ActionError>;

    /// KVM_SET_MP_STATE.
    fn set_mp_state(&mut self, v: usize, state: MpState) -> Result<(), ActionError>;

    /// Write guest memory.
    fn write_memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), ActionError>;

    /// Read guest memory.
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ActionError>;

    /// Every exception vcpu `v`'s guest took since the start (the simulator records them;
    /// a real guest's runtime logs them in guest memory).
    fn exceptions(&mut self, v: usize) -> Result<Vec<GuestEvent>, ActionError>;

    /// How many exceptions vcpu `v`'s guest took since the start.
    fn exception_count(&mut self, v: usize) -> Result<usize, ActionError>;

    /// Hand `f` every event recorded since the last call, in order (the events of a KVM_RUN
    /// went to its sink already).
    fn drain_events(&mut self, f: &mut dyn FnMut(&Event));

    /// KVM_GET_ONE_REG of several registers of vcpu `v`.
    fn get_one_regs(&mut self, v: usize, ids: &[u64]) -> Result<Vec<u64>, ActionError> {
        let mut vcpu = self.vcpu(v)?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            out.push(vcpu.get_one_reg(id)?);
        }
        Ok(out)
    }

    /// The broken invariants the backend saw itself since the last call (a real kernel's
    /// userspace observer; the simulator's are found in its events).
    fn take_findings(&mut self) -> Vec<Finding> {
        Vec::new()
    }
}

/// The VM a scenario describes, as every backend builds it: the physical CPUs, the vcpus and
/// the CPU each vcpu starts on.
#[derive(Clone, Copy, Debug)]
pub struct VmShape<'a> {
    /// The physical CPUs.
    pub cpus: &'a [hypdbg_model::profiles::CpuSpec],
    /// Number of vcpus.
    pub vcpus: usize,
    /// The physical CPU each vcpu starts on, as the scenario lists them.
    pub vcpu_cpus: &'a [usize],
}

impl<'a> VmShape<'a> {
    /// The shape of `sc`'s VM.
    pub fn of(sc: &'a crate::scenario::ops::Scenario) -> Self {
        VmShape {
            cpus: &sc.cpus,
            vcpus: sc.vcpus,
            vcpu_cpus: &sc.vcpu_cpus,
        }
    }

    /// The physical CPU vcpu `i` starts on: the scenario's choice, else CPU `i` modulo the
    /// CPUs.
    pub fn start_cpu(&self, i: usize) -> usize {
        self.vcpu_cpus
            .get(i)
            .copied()
            .unwrap_or(i % self.cpus.len().max(1))
    }
}
