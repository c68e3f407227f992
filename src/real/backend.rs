//! A real kernel as a [`Backend`]: a VM the in-guest agent creates on real arm64 KVM (nested
//! in QEMU), set up as a VMM sets up a hypdbg guest (RAM and runtime slots, the program and
//! the exception runtime, VBAR_EL1, SP_EL1, the doorbell register), driven through the same
//! [`DebugVcpu`] seam as the simulator.
//!
//! What a userspace observer cannot do on a real kernel is refused as not runnable, with the
//! reason: host interrupts and preemption at chosen instructions, migration to another CPU
//! model, more vcpus or physical CPUs than the agent runs.

use std::time::Duration;

use hypdbg_host::{DebugVcpu, RunExit, VcpuError};
use hypdbg_hyp::events::{Event, GuestEvent};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::guest::runtime::{self, LogEntry};
use hypdbg_hyp::guest::{Insn, Program};
use hypdbg_hyp::vm::{MpState, RunOptions, SmcccAction, VcpuExit};
use hypdbg_hyp::workloads::migration_registers;
use hypdbg_model::DebugFeatures;
use hypdbg_model::El;
use hypdbg_model::ctrl::{
    DBG_SPSR_SS, PSR_MODE_EL1H, PSR_MODE_MASK, VCPU_RESET_PSTATE_EL1, spsr_el,
};
use hypdbg_model::esr::{ESR_ELX_EC_WATCHPT_CUR, ESR_ELX_EC_WATCHPT_LOW, Esr};
use hypdbg_model::guest_abi::{
    RAM_BASE, RAM_SIZE, RUNTIME_BASE, RUNTIME_SIZE, is_memory, log_base,
};
use hypdbg_model::profiles::CpuSpec;
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS,
    KVM_CAP_SET_GUEST_DEBUG, KVM_CAP_SET_GUEST_DEBUG2, KvmGuestDebug, VBAR_EL1_ID, core_reg,
    sys_reg_id,
};
use hypdbg_real::exit::{KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_STOPPED};
use hypdbg_real::vm::{KVM_ARM_VCPU_PSCI_0_2, MAX_VCPUS};
use hypdbg_real::{ExitKind, PerfKind, RealVm, SmcccFilter, VcpuId};

use super::watch::{Finding, RealWatch};
use crate::checker::Invariant;
use crate::driver::{ActionError, Backend, BackendVcpu, VmShape};

/// ID_AA64DFR0_EL1's ONE_REG id.
pub const ID_AA64DFR0_EL1_ID: u64 = sys_reg_id(3, 0, 0, 5, 0);
/// ESR_EL1's ONE_REG id.
const ESR_EL1_ID: u64 = sys_reg_id(3, 0, 5, 2, 0);
/// FAR_EL1's ONE_REG id.
const FAR_EL1_ID: u64 = sys_reg_id(3, 0, 6, 0, 0);

/// How to set up the VM of a scenario on a real kernel.
#[derive(Clone, Debug)]
pub struct RealSpec<'a> {
    /// The guest program.
    pub program: &'a Program,
    /// The CPUs (one model: migration across models is not runnable) and vcpus.
    pub shape: VmShape<'a>,
    /// The era of the kernel (the contract the checker holds it to).
    pub era: Era,
    /// The machine's CPUs (`-smp`).
    pub smp: usize,
    /// A KVM_RUN that has not returned after this long is interrupted (exit `intr`).
    pub run_timeout: Duration,
}

/// KVM_CHECK_EXTENSION answers, asked once.
#[derive(Clone, Copy, Debug, Default)]
struct Caps {
    bps: i64,
    wps: i64,
    set_guest_debug: i64,
    set_guest_debug2: i64,
}

/// A real kernel's VM behind the driver.
pub struct RealBackend<'m> {
    vm: RealVm<'m>,
    era: Era,
    features: DebugFeatures,
    caps: Caps,
    ids: Vec<VcpuId>,
    smp: usize,
    cpus: Vec<CpuSpec>,
    base: u64,
    /// Each vcpu's last exit (an MMIO load's data goes into the next run).
    last: Vec<Option<VcpuExit>>,
    /// The SMCCC filter ranges installed (a migration installs them again).
    filters: Vec<(u32, u32, SmcccAction)>,
    /// Where each vcpu's thread is pinned.
    pinned: Vec<usize>,
    run_timeout: Duration,
    /// Each vcpu's KVM_GUESTDBG_* as KVM has it.
    control: Vec<GuestDebugControl>,
    /// Invariants 7 and 8 on every KVM_RUN.
    watch: RealWatch,
    /// The guest's code (to decode the instruction a step executed).
    code: Program,
    /// The host perf breakpoint is armed on vcpu 0's thread.
    perf_armed: bool,
}

/// A failed request to the real kernel, as an action error.
pub fn backend_err(e: hypdbg_real::Error) -> ActionError {
    ActionError::Backend(e.to_string())
}

fn not_runnable(why: impl Into<String>) -> ActionError {
    ActionError::NotRunnable {
        backend: "a real kernel".into(),
        why: why.into(),
    }
}

/// The runs of 4 KiB pages of `image` that are not all zero, as (offset, bytes): a fresh
/// memory slot reads as zeros, so a migrated VM needs only these (and the agent's retired
/// memory then holds only the pages a guest used).
fn nonzero_page_runs(image: &[u8]) -> Vec<(usize, &[u8])> {
    const PAGE: usize = 4096;
    let mut runs = Vec::new();
    let mut start: Option<usize> = None;
    for (i, page) in image.chunks(PAGE).enumerate() {
        let used = page.iter().any(|&b| b != 0);
        match (used, start) {
            (true, None) => start = Some(i * PAGE),
            (false, Some(s)) => {
                runs.push((s, &image[s..i * PAGE]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, &image[s..]));
    }
    runs
}

impl<'m> RealBackend<'m> {
    /// A fresh VM on the agent's kernel with `spec`'s program loaded and its vcpus set up.
    pub fn new(mut vm: RealVm<'m>, spec: &RealSpec<'_>) -> Result<Self, ActionError> {
        if spec.shape.vcpus == 0 || spec.shape.vcpus > usize::from(MAX_VCPUS) {
            return Err(not_runnable(format!(
                "{} vcpus: the agent runs 1 to {MAX_VCPUS}",
                spec.shape.vcpus
            )));
        }
        let caps = Caps {
            bps: i64::from(
                vm.check_extension(KVM_CAP_GUEST_DEBUG_HW_BPS)
                    .map_err(backend_err)?,
            ),
            wps: i64::from(
                vm.check_extension(KVM_CAP_GUEST_DEBUG_HW_WPS)
                    .map_err(backend_err)?,
            ),
            set_guest_debug: i64::from(
                vm.check_extension(KVM_CAP_SET_GUEST_DEBUG)
                    .map_err(backend_err)?,
            ),
            set_guest_debug2: i64::from(
                vm.check_extension(KVM_CAP_SET_GUEST_DEBUG2)
                    .map_err(backend_err)?,
            ),
        };
        let Some(first) = spec.shape.cpus.first() else {
            return Err(not_runnable("a scenario names at least one CPU"));
        };
        let mut b = RealBackend {
            vm,
            era: spec.era,
            features: *first.features(),
            caps,
            ids: Vec::new(),
            smp: spec.smp,
            cpus: spec.shape.cpus.to_vec(),
            base: spec.program.base,
            last: vec![None; spec.shape.vcpus],
            filters: Vec::new(),
            pinned: (0..spec.shape.vcpus)
                .map(|i| spec.shape.start_cpu(i))
                .collect(),
            run_timeout: spec.run_timeout,
            control: vec![GuestDebugControl::empty(); spec.shape.vcpus],
            watch: RealWatch::new(spec.shape.vcpus, spec.program.base),
            code: spec.program.clone(),
            perf_armed: false,
        };
        if let Some(&cpu) = b.pinned.iter().find(|&&c| c >= spec.smp) {
            return Err(not_runnable(format!(
                "a vcpu starts on physical CPU {cpu}: the machine has {}",
                spec.smp
            )));
        }
        b.map_slots()?;
        b.write_memory(
            spec.program.base,
            &words_bytes(&spec.program.loaded_words()),
        )?;
        b.load_runtime(spec.shape.vcpus)?;
        b.create_vcpus(spec.shape.vcpus)?;
        let raw =
            b.vm.get_one_reg(b.ids[0], ID_AA64DFR0_EL1_ID)
                .map_err(backend_err)?;
        b.features = DebugFeatures::new(raw).map_err(|e| {
            ActionError::Backend(format!("the guest's ID_AA64DFR0_EL1 {raw:#x}: {e}"))
        })?;
        Ok(b)
    }

    /// The ID_AA64DFR0_EL1 the guest sees on this kernel.
    pub fn features(&self) -> &DebugFeatures {
        &self.features
    }

    /// The agent's VM (perf checks, the end of a run).
    pub fn vm(&mut self) -> &mut RealVm<'m> {
        &mut self.vm
    }

    /// Invariant 2 on a real host: arm a hardware watchpoint of the host (perf_event_open,
    /// PERF_TYPE_BREAKPOINT) on the agent's own variable, for vcpu 0's thread.
    pub fn arm_host_breakpoint(&mut self) -> Result<(), ActionError> {
        let id = self.id(0)?;
        self.vm
            .perf_arm(id, PerfKind::ReadWrite)
            .map_err(backend_err)?;
        self.perf_armed = true;
        Ok(())
    }

    /// Whether the host's breakpoint still fires after the guest ran on that thread (a
    /// finding when it does not).
    pub fn check_host_breakpoint(&mut self) -> Result<Option<Finding>, ActionError> {
        if !self.perf_armed {
            return Ok(None);
        }
        let id = self.id(0)?;
        let c = self.vm.perf_check(id).map_err(backend_err)?;
        Ok((!c.fired).then(|| Finding {
            invariant: Invariant::HostRestored,
            vcpu: 0,
            message: format!(
                "the host's hardware watchpoint (perf, on the vcpu thread) did not fire after the guest ran (count {} -> {} on CPU {}): the host's debug registers were not restored",
                c.before, c.after, c.cpu
            ),
        }))
    }

    /// The instruction the guest has at `pc`, as loaded (program or runtime).
    fn insn_at(code: &Program, pc: u64) -> Option<Insn> {
        let word = |p: &Program| {
            let i = pc.checked_sub(p.base)? / 4;
            p.words.get(usize::try_from(i).ok()?).copied()
        };
        let w = word(code).or_else(|| runtime::program().ok().and_then(word))?;
        Insn::decode(w)
    }

    /// The vcpu id of index `v`.
    pub fn id(&self, v: usize) -> Result<VcpuId, ActionError> {
        self.ids.get(v).copied().ok_or(ActionError::NoVcpu(v))
    }

    fn map_slots(&mut self) -> Result<(), ActionError> {
        self.vm
            .map_memory(0, RAM_BASE, RAM_SIZE)
            .and_then(|()| self.vm.map_memory(1, RUNTIME_BASE, RUNTIME_SIZE))
            .map_err(backend_err)
    }

    /// The runtime's code and each vcpu's log header.
    fn load_runtime(&mut self, vcpus: usize) -> Result<(), ActionError> {
        let rt = runtime::program().map_err(|e| {
            ActionError::Backend(format!("the guest runtime does not assemble: {e}"))
        })?;
        self.vm
            .write_words(rt.base, &rt.words)
            .map_err(backend_err)?;
        for i in 0..vcpus {
            self.vm
                .write_memory(log_base(i), &runtime::log_reset(i))
                .map_err(backend_err)?;
        }
        Ok(())
    }

    /// KVM_CREATE_VCPU, KVM_ARM_VCPU_INIT (PSCI 0.2), the runtime's reset registers and
    /// VBAR_EL1, and each vcpu thread pinned to its physical CPU.
    fn create_vcpus(&mut self, vcpus: usize) -> Result<(), ActionError> {
        self.ids.clear();
        for i in 0..vcpus {
            let id = self.vm.create_vcpu(i as u8).map_err(backend_err)?;
            self.vm
                .vcpu_init(id, KVM_ARM_VCPU_PSCI_0_2)
                .map_err(backend_err)?;
            let mut regs = runtime::reset_registers(self.base, i).to_vec();
            regs.push((VBAR_EL1_ID, RUNTIME_BASE));
            self.vm.set_one_regs(id, &regs).map_err(backend_err)?;
            if self.smp > 1 {
                self.vm
                    .migrate(id, self.pinned[i] as u32)
                    .map_err(backend_err)?;
            }
            self.ids.push(id);
        }
        Ok(())
    }

    /// Vcpu `v`'s exception log, decoded: one read of the header and the first entries, a
    /// second when the log holds more.
    fn log(&mut self, v: usize) -> Result<(Vec<LogEntry>, u64), ActionError> {
        const FIRST: u64 = 64;
        self.id(v)?;
        let mut bytes = self
            .vm
            .read_memory(log_base(v), runtime::log_bytes(FIRST))
            .map_err(backend_err)?;
        let (n, _) = runtime::log_header(v, &bytes);
        if n > FIRST {
            bytes = self
                .vm
                .read_memory(log_base(v), runtime::log_bytes(n))
                .map_err(backend_err)?;
        }
        Ok(runtime::parse_log(v, &bytes))
    }

    /// A real exit as the simulator's [`VcpuExit`]; what the simulator cannot produce is an
    /// error naming it.
    fn convert(e: &hypdbg_real::VcpuExit) -> Result<VcpuExit, ActionError> {
        Ok(match &e.kind {
            ExitKind::Debug(arch) => VcpuExit::Debug {
                arch: *arch,
                flags: u32::from(e.run_flags),
            },
            ExitKind::Mmio {
                phys_addr,
                data,
                len,
                is_write,
            } => VcpuExit::Mmio {
                phys_addr: *phys_addr,
                data: *data,
                len: *len,
                is_write: *is_write,
            },
            ExitKind::Hypercall { nr, flags, .. } => VcpuExit::Hypercall {
                nr: *nr,
                flags: *flags,
            },
            ExitKind::SystemEvent { event_type, .. } => VcpuExit::SystemEvent {
                event_type: *event_type,
            },
            ExitKind::Interrupted { .. } => VcpuExit::Intr,
            _ => {
                return Err(ActionError::Backend(format!(
                    "KVM_RUN: {} (an exit hypdbg does not expect from its guests)",
                    e.summary()
                )));
            }
        })
    }

    /// KVM_RUN of vcpu `v` with `opts`: an MMIO load the last exit asked for reads
    /// `opts.mmio_data`.
    fn run_vcpu(&mut self, v: usize, opts: &RunOptions) -> Result<VcpuExit, ActionError> {
        let id = self.id(v)?;
        let mmio_data = match self.last.get(v).copied().flatten() {
            Some(VcpuExit::Mmio {
                is_write: false,
                len,
                ..
            }) => Some(opts.mmio_data[..(len as usize).min(8)].to_vec()),
            _ => None,
        };
        let ro = hypdbg_real::RunOptions {
            immediate_exit: opts.immediate_exit,
            timeout: self.run_timeout,
            mmio_data,
            read_gprs: false,
        };
        let e = self.vm.run_with(id, &ro).map_err(backend_err)?;
        let exit = Self::convert(&e)?;
        self.last[v] = Some(exit);
        let code = &self.code;
        self.watch.on_run(
            v,
            self.control[v],
            opts.immediate_exit,
            &exit,
            e.pc,
            &mut |pc| Self::insn_at(code, pc),
        );
        Ok(exit)
    }

    /// Complete an MMIO access vcpu `v`'s last exit left pending (KVM_RUN with
    /// immediate_exit), as a VMM does before it saves the vcpu's state.
    fn complete_pending_io(&mut self, v: usize) -> Result<(), ActionError> {
        if matches!(self.last.get(v), Some(Some(VcpuExit::Mmio { .. }))) {
            let opts = RunOptions {
                immediate_exit: true,
                ..RunOptions::default()
            };
            self.run_vcpu(v, &opts)?;
        }
        Ok(())
    }
}

fn words_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Guest memory a VMM reaches: only where a memory slot backs it.
fn check_memory(addr: u64, len: usize) -> Result<(), ActionError> {
    if is_memory(addr, len as u64) {
        Ok(())
    } else {
        Err(ActionError::Backend(format!(
            "guest memory [{addr:#x}, +{len:#x}) is outside every memory slot"
        )))
    }
}

/// One vcpu of a [`RealBackend`].
pub struct RealVcpu<'a, 'm> {
    b: &'a mut RealBackend<'m>,
    v: usize,
}

fn vcpu_err(op: impl Into<String>) -> impl FnOnce(hypdbg_real::Error) -> VcpuError {
    move |e| VcpuError::new(op, e)
}

impl DebugVcpu for RealVcpu<'_, '_> {
    fn check_extension(&self, cap: u32) -> i64 {
        let c = self.b.caps;
        match cap {
            KVM_CAP_GUEST_DEBUG_HW_BPS => c.bps,
            KVM_CAP_GUEST_DEBUG_HW_WPS => c.wps,
            KVM_CAP_SET_GUEST_DEBUG => c.set_guest_debug,
            KVM_CAP_SET_GUEST_DEBUG2 => c.set_guest_debug2,
            _ => 0,
        }
    }

    fn set_guest_debug(&mut self, dbg: &KvmGuestDebug) -> Result<(), VcpuError> {
        let id = self.b.ids[self.v];
        self.b
            .vm
            .set_guest_debug(id, dbg)
            .map_err(vcpu_err(format!(
                "KVM_SET_GUEST_DEBUG control={:#x}",
                dbg.control
            )))?;
        let c = GuestDebugControl::from_bits_truncate(dbg.control);
        self.b.watch.guest_debug_set(self.v, c);
        self.b.control[self.v] = if c.contains(GuestDebugControl::ENABLE) {
            c
        } else {
            GuestDebugControl::empty()
        };
        Ok(())
    }

    fn run(&mut self) -> Result<RunExit, VcpuError> {
        self.b
            .run_vcpu(self.v, &RunOptions::default())
            .map(RunExit::from)
            .map_err(|e| VcpuError::new("KVM_RUN", e))
    }

    fn get_one_reg(&mut self, id: u64) -> Result<u64, VcpuError> {
        let v = self.b.ids[self.v];
        self.b
            .vm
            .get_one_reg(v, id)
            .map_err(vcpu_err(format!("KVM_GET_ONE_REG {id:#x}")))
    }

    fn set_one_reg(&mut self, id: u64, value: u64) -> Result<(), VcpuError> {
        let v = self.b.ids[self.v];
        self.b
            .vm
            .set_one_reg(v, id, value)
            .map_err(vcpu_err(format!("KVM_SET_ONE_REG {id:#x} = {value:#x}")))?;
        if id == core_reg::PC {
            self.b.watch.set_pc(self.v, value);
        }
        Ok(())
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), VcpuError> {
        check_memory(addr, buf.len()).map_err(|e| VcpuError::new("guest memory read", e))?;
        let d = self
            .b
            .vm
            .read_memory(addr, buf.len())
            .map_err(vcpu_err(format!("read of guest memory at {addr:#x}")))?;
        buf.copy_from_slice(&d[..buf.len()]);
        Ok(())
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), VcpuError> {
        check_memory(addr, data.len()).map_err(|e| VcpuError::new("guest memory write", e))?;
        self.b
            .vm
            .write_memory(addr, data)
            .map_err(vcpu_err(format!("write of guest memory at {addr:#x}")))
    }

    /// KVM cannot inject a synchronous exception with a chosen syndrome: the VMM takes the
    /// exception for the guest through ONE_REG (AArch64.TakeException to EL1), as QEMU does.
    fn inject_debug_exception(&mut self, esr: Esr, far: Option<u64>) -> Result<(), VcpuError> {
        let id = self.b.ids[self.v];
        let vm = &mut self.b.vm;
        let op = format!("inject ESR {:#x}", esr.bits());
        let regs = vm
            .get_one_regs(id, &[core_reg::PSTATE, core_reg::PC])
            .map_err(vcpu_err(op.clone()))?;
        let (pstate, pc) = (regs[0], regs[1]);
        let vector = if spsr_el(pstate) == El::El0 {
            0x400
        } else {
            0x200
        };
        let mut set = vec![
            (core_reg::SPSR_EL1, pstate),
            (core_reg::ELR_EL1, pc),
            (ESR_EL1_ID, esr.bits()),
            (
                core_reg::PSTATE,
                (pstate & !(PSR_MODE_MASK | DBG_SPSR_SS)) | PSR_MODE_EL1H | VCPU_RESET_PSTATE_EL1,
            ),
            (core_reg::PC, RUNTIME_BASE + vector),
        ];
        if let Some(f) = far {
            set.push((FAR_EL1_ID, f));
        }
        vm.set_one_regs(id, &set).map_err(vcpu_err(op))?;
        self.b.watch.set_pc(self.v, RUNTIME_BASE + vector);
        Ok(())
    }
}

impl BackendVcpu for RealVcpu<'_, '_> {
    fn run_exit(
        &mut self,
        opts: &RunOptions,
        _sink: &mut dyn FnMut(&Event),
    ) -> Result<VcpuExit, ActionError> {
        self.b.run_vcpu(self.v, opts)
    }
}

impl<'m> Backend for RealBackend<'m> {
    type Vcpu<'a>
        = RealVcpu<'a, 'm>
    where
        Self: 'a;

    fn vcpu(&mut self, v: usize) -> Result<RealVcpu<'_, 'm>, ActionError> {
        self.id(v)?;
        Ok(RealVcpu { b: self, v })
    }

    fn era(&self) -> Era {
        self.era
    }

    fn guest_features(&self) -> DebugFeatures {
        self.features
    }

    fn nr_vcpus(&self) -> usize {
        self.ids.len()
    }

    fn nr_pcpus(&self) -> usize {
        self.smp
    }

    fn migrate(&mut self, v: usize, cpu: usize) -> Result<(), ActionError> {
        let id = self.id(v)?;
        if cpu >= self.smp {
            return Err(ActionError::NoCpu(cpu));
        }
        self.vm.migrate(id, cpu as u32).map_err(backend_err)?;
        self.pinned[v] = cpu;
        Ok(())
    }

    fn set_irq(&mut self, _v: usize, every: Option<u64>) -> Result<(), ActionError> {
        match every {
            None => Ok(()),
            Some(n) => Err(not_runnable(format!(
                "a host interrupt every {n} guest instructions is a simulator device: a real kernel's interrupts are not placed by the scenario"
            ))),
        }
    }

    fn preempt(&mut self, _v: usize, after: u32, _cpu: usize) -> Result<(), ActionError> {
        Err(not_runnable(format!(
            "a preemption after {after} in-kernel exits is a simulator device: a real kernel schedules on its own"
        )))
    }

    fn run_concurrently(
        &mut self,
        vcpus: &[usize],
        _sink: &mut dyn FnMut(&Event),
    ) -> Result<Vec<VcpuExit>, ActionError> {
        let [a, b] = vcpus else {
            return Err(not_runnable(format!(
                "run_concurrently of {} vcpus: the agent runs two at once",
                vcpus.len()
            )));
        };
        let ids = [self.id(*a)?, self.id(*b)?];
        let opts = hypdbg_real::RunOptions {
            timeout: self.run_timeout,
            ..hypdbg_real::RunOptions::default()
        };
        let exits = self.vm.run_both(ids, &opts).map_err(backend_err)?;
        let mut out = Vec::with_capacity(2);
        for (v, e) in [*a, *b].into_iter().zip(exits.iter()) {
            let x = Self::convert(e)?;
            self.last[v] = Some(x);
            out.push(x);
        }
        Ok(out)
    }

    fn migrate_vm(&mut self, cpus: Option<&[CpuSpec]>) -> Result<usize, ActionError> {
        if let Some(list) = cpus {
            let here = self.cpus.first().map(|c| *c.features());
            if let Some(c) = list.iter().find(|c| Some(*c.features()) != here) {
                return Err(not_runnable(format!(
                    "migration to {c}, another CPU model: QEMU emulates one model per machine"
                )));
            }
        }
        let n = self.ids.len();
        for v in 0..n {
            self.complete_pending_io(v)?;
        }
        // The host's breakpoint is armed on a vcpu thread that goes with the source VM.
        let perf = self.perf_armed;
        if let Some(f) = self.check_host_breakpoint()? {
            self.watch.push(f);
        }
        self.perf_armed = false;
        let ids = migration_registers(&self.features);
        let mut regs = Vec::with_capacity(n);
        for v in 0..n {
            regs.push(
                self.vm
                    .get_one_regs(self.ids[v], &ids)
                    .map_err(backend_err)?,
            );
        }
        let ram = self
            .vm
            .read_memory(RAM_BASE, RAM_SIZE as usize)
            .map_err(backend_err)?;
        let rt = self
            .vm
            .read_memory(RUNTIME_BASE, RUNTIME_SIZE as usize)
            .map_err(backend_err)?;
        self.vm.recreate().map_err(backend_err)?;
        self.map_slots()?;
        for (base, image) in [(RAM_BASE, &ram), (RUNTIME_BASE, &rt)] {
            for (offset, run) in nonzero_page_runs(image) {
                self.vm
                    .write_memory(base + offset as u64, run)
                    .map_err(backend_err)?;
            }
        }
        for &(base, nr, action) in &self.filters.clone() {
            self.install_filter(base, nr, action)?;
        }
        self.create_vcpus(n)?;
        for (v, values) in regs.iter().enumerate() {
            let pairs: Vec<(u64, u64)> = ids.iter().copied().zip(values.iter().copied()).collect();
            self.vm
                .set_one_regs(self.ids[v], &pairs)
                .map_err(backend_err)?;
        }
        self.last = vec![None; n];
        self.control = vec![GuestDebugControl::empty(); n];
        if perf {
            self.arm_host_breakpoint()?;
        }
        Ok(ids.len())
    }

    fn set_smccc_filter(
        &mut self,
        base: u32,
        nr: u32,
        action: SmcccAction,
    ) -> Result<(), ActionError> {
        self.install_filter(base, nr, action)?;
        self.filters.push((base, nr, action));
        Ok(())
    }

    fn set_mp_state(&mut self, v: usize, state: MpState) -> Result<(), ActionError> {
        let id = self.id(v)?;
        let s = match state {
            MpState::Runnable => KVM_MP_STATE_RUNNABLE,
            MpState::Stopped => KVM_MP_STATE_STOPPED,
        };
        self.vm.set_mp_state(id, s).map_err(backend_err)
    }

    fn write_memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), ActionError> {
        check_memory(addr, bytes.len())?;
        self.vm.write_memory(addr, bytes).map_err(backend_err)
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ActionError> {
        check_memory(addr, buf.len())?;
        let d = self.vm.read_memory(addr, buf.len()).map_err(backend_err)?;
        buf.copy_from_slice(&d[..buf.len()]);
        Ok(())
    }

    fn exceptions(&mut self, v: usize) -> Result<Vec<GuestEvent>, ActionError> {
        let (entries, lost) = self.log(v)?;
        if lost > 0 {
            return Err(ActionError::Backend(format!(
                "vcpu {v}'s exception log is full: {lost} later exception(s) were not logged"
            )));
        }
        Ok(entries.iter().map(log_event).collect())
    }

    fn exception_count(&mut self, v: usize) -> Result<usize, ActionError> {
        let (entries, lost) = self.log(v)?;
        Ok(entries.len() + lost as usize)
    }

    fn drain_events(&mut self, _f: &mut dyn FnMut(&Event)) {}

    fn get_one_regs(&mut self, v: usize, ids: &[u64]) -> Result<Vec<u64>, ActionError> {
        let id = self.id(v)?;
        self.vm.get_one_regs(id, ids).map_err(backend_err)
    }

    fn take_findings(&mut self) -> Vec<Finding> {
        self.watch.take()
    }
}

impl RealBackend<'_> {
    fn install_filter(
        &mut self,
        base: u32,
        nr: u32,
        action: SmcccAction,
    ) -> Result<(), ActionError> {
        let a = match action {
            SmcccAction::Handle => hypdbg_real::SmcccAction::Handle,
            SmcccAction::Deny => hypdbg_real::SmcccAction::Deny,
            SmcccAction::ForwardToUser => hypdbg_real::SmcccAction::ForwardToUser,
        };
        match self.vm.set_smccc_filter(base, nr, a).map_err(backend_err)? {
            SmcccFilter::Installed => Ok(()),
            SmcccFilter::Unsupported { errno } => Err(not_runnable(format!(
                "the SMCCC filter (KVM_ARM_VM_SMCCC_FILTER, v6.4+) is not in this kernel (KVM_HAS_DEVICE_ATTR: {})",
                hypdbg_real::error::errno_name(errno)
            ))),
        }
    }
}

/// A runtime log entry as the record the simulator keeps of an exception.
fn log_event(e: &LogEntry) -> GuestEvent {
    let esr = Esr::from_bits(e.esr);
    GuestEvent::Exception {
        esr,
        elr: e.elr,
        far: matches!(esr.ec(), ESR_ELX_EC_WATCHPT_CUR | ESR_ELX_EC_WATCHPT_LOW).then_some(e.far),
        from: spsr_el(e.spsr),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_used_pages_of_a_migrated_image_are_written() {
        let mut image = vec![0u8; 5 * 4096];
        image[10] = 1; // page 0
        image[2 * 4096 + 5] = 2; // pages 2 and 3
        image[3 * 4096] = 3;
        let runs = super::nonzero_page_runs(&image);
        let got: Vec<(usize, usize)> = runs.iter().map(|(o, r)| (*o, r.len())).collect();
        assert_eq!(got, [(0, 4096), (2 * 4096, 2 * 4096)]);
        assert!(super::nonzero_page_runs(&[0u8; 8192]).is_empty());
    }
}
