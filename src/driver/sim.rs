//! The simulator as a [`Backend`]: a `hypdbg_hyp` [`Vm`] running one variant's flow in
//! checking mode, with the guest program loaded.

use hypdbg_hyp::events::{Event, GuestEvent};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::Variant;
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_hyp::vm::{AccessMode, MpState, RunOptions, SmcccAction, VcpuExit, Vm, VmConfig};
use hypdbg_hyp::workloads;
use hypdbg_model::DebugFeatures;
use hypdbg_model::profiles::CpuSpec;

use super::backend::{Backend, BackendVcpu, VmShape};
use super::outcome::{ActionError, SetupError};

/// Guest instructions per KVM_RUN unless the scenario says.
pub const DEFAULT_BUDGET: u64 = 20_000;

/// How to build the simulated VM of a scenario.
#[derive(Clone, Debug)]
pub struct SimSpec<'a> {
    /// The flow.
    pub variant: &'a Variant,
    /// The CPUs and vcpus.
    pub shape: VmShape<'a>,
    /// Guest instructions per KVM_RUN.
    pub budget: u64,
    /// Record every guest instruction (traces).
    pub trace: bool,
}

/// The simulator behind the driver.
pub struct SimBackend {
    vm: Vm,
    variant: Variant,
    config: VmConfig,
    /// Exceptions the guest took on VMs it migrated away from, per vcpu.
    earlier_exceptions: Vec<Vec<GuestEvent>>,
    /// Events of the VM a `migrate_vm` left, until the action's events are drained.
    earlier_events: Vec<Event>,
}

impl SimBackend {
    /// The VM of `spec` with `program` loaded.
    pub fn new(spec: &SimSpec<'_>, program: &Program) -> Result<Self, SetupError> {
        let config = VmConfig {
            pcpus: spec.shape.cpus.iter().map(|c| *c.features()).collect(),
            vcpus: spec.shape.vcpus.max(1),
            mode: AccessMode::Checking,
            trace_instructions: spec.trace,
            budget_per_run: spec.budget,
            host_mode: spec.variant.host,
        };
        let vm_err = |what: String| move |source| SetupError::Vm { what, source };
        let mut vm =
            Vm::new((spec.variant.make)(), config.clone()).map_err(vm_err(String::new()))?;
        for (i, &cpu) in spec.shape.vcpu_cpus.iter().enumerate() {
            vm.set_vcpu_cpu(i, cpu)
                .map_err(vm_err(format!("vcpu_cpus[{i}]: ")))?;
        }
        vm.load_program(program);
        Ok(SimBackend {
            vm,
            variant: spec.variant.clone(),
            earlier_exceptions: vec![Vec::new(); config.vcpus],
            config,
            earlier_events: Vec::new(),
        })
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    fn check_vcpu(&self, v: usize) -> Result<usize, ActionError> {
        if v < self.config.vcpus {
            Ok(v)
        } else {
            Err(ActionError::NoVcpu(v))
        }
    }
}

impl BackendVcpu for VmVcpu<'_> {
    fn run_exit(
        &mut self,
        opts: &RunOptions,
        sink: &mut dyn FnMut(&Event),
    ) -> Result<VcpuExit, ActionError> {
        let v = self.index();
        Ok(self
            .vm()
            .run_with(v, opts, Some(&mut |e: Event| sink(&e)))?)
    }
}

impl Backend for SimBackend {
    type Vcpu<'a> = VmVcpu<'a>;

    fn vcpu(&mut self, v: usize) -> Result<VmVcpu<'_>, ActionError> {
        let v = self.check_vcpu(v)?;
        Ok(VmVcpu::new(&mut self.vm, v)?)
    }

    fn era(&self) -> Era {
        self.vm.era()
    }

    fn guest_features(&self) -> DebugFeatures {
        *self.vm.guest_features()
    }

    fn nr_vcpus(&self) -> usize {
        self.config.vcpus
    }

    fn nr_pcpus(&self) -> usize {
        self.vm.nr_pcpus()
    }

    fn migrate(&mut self, v: usize, cpu: usize) -> Result<(), ActionError> {
        let v = self.check_vcpu(v)?;
        Ok(self.vm.set_vcpu_cpu(v, cpu)?)
    }

    fn set_irq(&mut self, v: usize, every: Option<u64>) -> Result<(), ActionError> {
        let v = self.check_vcpu(v)?;
        if every == Some(0) {
            return Err(ActionError::ZeroIrqPeriod);
        }
        self.vm.vcpu_mut(v)?.irq_every = every;
        Ok(())
    }

    fn preempt(&mut self, v: usize, after: u32, cpu: usize) -> Result<(), ActionError> {
        let v = self.check_vcpu(v)?;
        if cpu >= self.vm.nr_pcpus() {
            return Err(ActionError::NoCpu(cpu));
        }
        self.vm.vcpu_mut(v)?.preempt = Some((after, cpu));
        Ok(())
    }

    fn run_concurrently(
        &mut self,
        vcpus: &[usize],
        sink: &mut dyn FnMut(&Event),
    ) -> Result<Vec<VcpuExit>, ActionError> {
        Ok(self
            .vm
            .run_concurrently_streamed(vcpus, Some(&mut |e: Event| sink(&e)))?)
    }

    fn set_smccc_filter(
        &mut self,
        base: u32,
        nr: u32,
        action: SmcccAction,
    ) -> Result<(), ActionError> {
        Ok(self.vm.set_smccc_filter(base, nr, action)?)
    }

    fn set_mp_state(&mut self, v: usize, state: MpState) -> Result<(), ActionError> {
        let v = self.check_vcpu(v)?;
        Ok(self.vm.set_mp_state(v, state)?)
    }

    fn migrate_vm(&mut self, cpus: Option<&[CpuSpec]>) -> Result<usize, ActionError> {
        for v in 0..self.config.vcpus {
            self.vm.complete_pending_io(v)?;
        }
        let mut config = self.config.clone();
        if let Some(list) = cpus {
            config.pcpus = list.iter().map(|c| *c.features()).collect();
        }
        let mut dst = Vm::new((self.variant.make)(), config.clone())?;
        dst.set_smccc_filter_all(self.vm.smccc_filter())?;
        *dst.memory_mut() = self.vm.memory().clone();
        let ids = workloads::migration_registers(self.vm.guest_features());
        for v in 0..config.vcpus {
            for &id in &ids {
                let val = self.vm.get_one_reg(v, id)?;
                dst.set_one_reg(v, id, val)?;
            }
            let src = self.vm.vcpu(v)?;
            let (irq, cpu) = (src.irq_every, src.cpu);
            self.earlier_exceptions[v].extend(src.exceptions.iter().cloned());
            dst.vcpu_mut(v)?.irq_every = irq;
            if cpu < dst.nr_pcpus() {
                dst.set_vcpu_cpu(v, cpu)?;
            }
        }
        self.earlier_events.extend(self.vm.take_events());
        self.vm = dst;
        self.config = config;
        Ok(ids.len())
    }

    fn write_memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), ActionError> {
        Ok(self.vm.write_guest(addr, bytes)?)
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ActionError> {
        Ok(self.vm.read_guest(addr, buf)?)
    }

    fn exceptions(&mut self, v: usize) -> Result<Vec<GuestEvent>, ActionError> {
        let mut all = self.earlier_exceptions.get(v).cloned().unwrap_or_default();
        if let Ok(c) = self.vm.vcpu(v) {
            all.extend(c.exceptions.iter().cloned());
        }
        Ok(all)
    }

    fn exception_count(&mut self, v: usize) -> Result<usize, ActionError> {
        Ok(self.earlier_exceptions.get(v).map_or(0, Vec::len)
            + self.vm.vcpu(v).map_or(0, |c| c.exceptions.len()))
    }

    fn drain_events(&mut self, f: &mut dyn FnMut(&Event)) {
        for e in self.earlier_events.drain(..) {
            f(&e);
        }
        for e in self.vm.take_events() {
            f(&e);
        }
    }
}
