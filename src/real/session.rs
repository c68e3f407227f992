//! One booted real kernel playing scenario files one after the other ([`RealSuite`]): a VM per
//! scenario, the same observers as on the simulator (expectations, the trace), plus what a
//! userspace observer checks on a real kernel (invariants 2, 7, 8).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hypdbg_hyp::flow::Era;
use hypdbg_hyp::variants::Variant;
use hypdbg_real::{BootOptions, Cache, KernelImage, Machine, Mode};

use super::backend::{RealBackend, RealSpec};
use super::{SUITE_SMP, flow_for, runnable};
use crate::checker::{Invariant, RealKernelCheck};
use crate::driver::{ActionError, Engine, Nobody, Observer, VmShape};
use crate::play::trace::Record;
use crate::play::{PlayOptions, Report, finding_violation, play_engine};
use crate::scenario::resolve::Resolver;
use crate::scenario::source::ScenarioFile;

/// How long one KVM_RUN on a real kernel may take before the agent interrupts it (exit
/// `intr`): a guest that loops, or a stopped vcpu.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a scenario did not play on the real kernel.
#[derive(Debug, thiserror::Error)]
pub enum RealPlayError {
    /// The scenario needs what a real kernel does not have.
    #[error("not runnable on {kernel}: {why}")]
    NotRunnable {
        /// The kernel and mode.
        kernel: String,
        /// Why.
        why: String,
    },
    /// The machine failed (QEMU, the agent, an ioctl outside an action).
    #[error("{0}")]
    Machine(String),
}

/// A kernel booted in a mode, ready to play scenarios.
pub struct RealSuite {
    machine: Machine,
    flow: Variant,
    name: String,
    series: String,
    mode: Mode,
}

impl RealSuite {
    /// Boot `kernel` in `mode` with [`SUITE_SMP`] CPUs.
    pub fn boot(
        kernel: &KernelImage,
        mode: Mode,
        cache: Cache,
    ) -> Result<Self, hypdbg_real::Error> {
        let flow = flow_for(&kernel.series, mode).map_err(|why| {
            hypdbg_real::Error::new(
                Some(&kernel.name()),
                hypdbg_real::Stage::Boot,
                hypdbg_real::ErrorKind::Spec(why),
            )
        })?;
        let mut opts = BootOptions::new(cache);
        opts.smp = SUITE_SMP;
        let machine = Machine::boot(kernel, mode, &opts)?;
        Ok(RealSuite {
            machine,
            flow,
            name: format!("{} {mode}", kernel.name()),
            series: kernel.series.clone(),
            mode,
        })
    }

    /// `debian:6.1 (6.1.0-41-arm64) vhe`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's series (`6.1`) and the mode's name (`vhe`).
    pub fn series_and_mode(&self) -> (String, String) {
        (self.series.clone(), self.mode.name().to_string())
    }

    /// The simulator flow of this kernel's version and mode.
    pub fn flow(&self) -> &Variant {
        &self.flow
    }

    /// The kernel's era.
    pub fn era(&self) -> Era {
        self.flow.era()
    }

    /// How long the boot took.
    pub fn boot_time(&self) -> Duration {
        self.machine.boot_time()
    }

    /// The machine.
    pub fn machine(&mut self) -> &mut Machine {
        &mut self.machine
    }

    /// Why `file` cannot run here, if it cannot.
    pub fn runnable(&self, file: &ScenarioFile) -> Result<(), RealPlayError> {
        runnable(&file.scenario, &self.series).map_err(|why| RealPlayError::NotRunnable {
            kernel: self.name.clone(),
            why,
        })
    }

    /// Play `file` in a fresh VM; `sink` gets the trace records. The file's flow and
    /// `expect_violations` are simulator notions: here every invariant must hold.
    pub fn play(
        &mut self,
        file: &ScenarioFile,
        opts: &PlayOptions,
        sink: &mut dyn FnMut(Record),
    ) -> Result<Report, RealPlayError> {
        self.play_observed(file, opts, sink, &mut Nobody)
    }

    /// [`RealSuite::play`] with `extra` observing the same stream (a transcript).
    pub fn play_observed(
        &mut self,
        file: &ScenarioFile,
        opts: &PlayOptions,
        sink: &mut dyn FnMut(Record),
        extra: &mut dyn Observer,
    ) -> Result<Report, RealPlayError> {
        self.runnable(file)?;
        let sc = &file.scenario;
        let spec = RealSpec {
            program: &file.program,
            shape: VmShape::of(sc),
            era: self.flow.era(),
            smp: usize::from(SUITE_SMP),
            run_timeout: RUN_TIMEOUT,
        };
        let name = self.name.clone();
        let machine_err = |e: hypdbg_real::Error| RealPlayError::Machine(e.to_string());
        let vm = self.machine.agent().create_vm().map_err(machine_err)?;
        let mut backend = RealBackend::new(vm, &spec).map_err(|e| match e {
            ActionError::NotRunnable { why, .. } => RealPlayError::NotRunnable {
                kernel: name.clone(),
                why,
            },
            other => RealPlayError::Machine(other.to_string()),
        })?;
        backend
            .arm_host_breakpoint()
            .map_err(|e| RealPlayError::Machine(e.to_string()))?;
        let mut engine = Engine::new(backend, Resolver::new(&file.program, &sc.symbols));
        let started = Instant::now();
        let mut report = play_engine(
            file,
            &mut engine,
            &format!("real kernel {name}"),
            BTreeSet::new(),
            opts,
            sink,
            extra,
        );
        // Invariant 2 after the run; a check that cannot be made fails the run, which
        // keeps what it played.
        match engine.backend_mut().check_host_breakpoint() {
            Ok(Some(f)) => {
                let v = finding_violation(f, report.actions);
                report.broken(v.invariant, &file.file, v);
            }
            Ok(None) => {}
            Err(e) => {
                report.passed = false;
                report.error.get_or_insert(format!(
                    "{}: the host's perf breakpoint could not be checked after the run: {e}",
                    file.file
                ));
            }
        }
        report.elapsed_ms = Some(started.elapsed().as_millis() as u64);
        report.simulator_only = Invariant::ALL
            .iter()
            .filter(|i| i.on_a_real_kernel() == RealKernelCheck::SimulatorOnly)
            .map(|i| i.label())
            .collect();
        Ok(report)
    }
}

impl Report {
    /// Add a violation found after the scenario (the host's breakpoint check).
    fn broken(&mut self, inv: Invariant, file: &str, v: crate::checker::Violation) {
        self.violations_total += 1;
        if self.violations.len() < Report::KEEP {
            self.violations.push(crate::play::ViolationReport {
                action: v.action,
                location: file.to_string(),
                event: 0,
                vcpu: v.vcpu,
                cpu: None,
                invariant: inv.label(),
                message: v.message,
            });
        }
        if !self.invariants.contains(&inv.label()) {
            self.invariants.push(inv.label());
        }
        self.passed = false;
    }
}
