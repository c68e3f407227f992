//! A KVM-shaped API over the simulator, modelled on kvm-ioctls: `check_extension`,
//! `set_guest_debug`, `run` returning a [`VcpuExit`], `get_one_reg`/`set_one_reg`, and a
//! choice of physical CPU for every vcpu (vcpu_load/put, migration).
//!
//! `run` is `kvm_arch_vcpu_ioctl_run`: vcpu_load on the chosen CPU; loop { setup_debug;
//! `__kvm_vcpu_run` (sysreg switch, `__activate_traps_common`, `__adjust_pc`, debug switch,
//! guest, and back); clear_debug; handle_exit } until something needs userspace; vcpu_put.

use std::collections::BTreeSet;

use hypdbg_model::esr::Esr;
use hypdbg_model::uapi::{
    KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS, KVM_CAP_SET_GUEST_DEBUG,
    KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_VALID_MASK, KvmDebugExitArch, KvmGuestDebug, core_reg,
};
use hypdbg_model::{DebugFeatures, SysReg};
use serde::Serialize;

use crate::access::{AccessRecord, CheckingAccess, PlainAccess, RegAccess, Scope, SwitchStats};
use crate::context::{DebugFlags, KvmVcpu, PendingException};
use crate::events::{Event, ExitReason, FlowState, GuestEvent, LiveState};
use crate::fault::{HypFault, KvmError};
use crate::flow::{AnyAccess, DynFlow, Era, HostMode, SysRegParams, TrapOutcome};
use crate::guest::cpu::take_el1_exception;
use crate::guest::{GuestMemory, GuestRun, Program};
use crate::pcpu::{HostSnapshot, Pcpu};

/// Which register-access implementation the world switch uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AccessMode {
    /// Direct moves, nothing recorded (benchmarks).
    Plain,
    /// Every access and event recorded (validation, traces).
    Checking,
}

/// How to build a VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The physical CPUs (their ID_AA64DFR0_EL1).
    pub pcpus: Vec<DebugFeatures>,
    /// Number of vcpus.
    pub vcpus: usize,
    /// Register access.
    pub mode: AccessMode,
    /// Record every guest instruction (traces).
    pub trace_instructions: bool,
    /// Guest instructions one KVM_RUN may execute before returning (KVM_EXIT_INTR).
    pub budget_per_run: u64,
    /// nVHE or VHE host (VHE: eras 2 and 3 outside protected mode).
    pub host_mode: HostMode,
}

impl VmConfig {
    /// One CPU of `features`, one vcpu, checking mode.
    pub fn new(features: DebugFeatures) -> Self {
        VmConfig {
            pcpus: vec![features],
            vcpus: 1,
            mode: AccessMode::Checking,
            trace_instructions: false,
            budget_per_run: 1_000_000,
            host_mode: HostMode::Nvhe,
        }
    }
}

/// Why KVM_RUN returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "exit", rename_all = "snake_case")]
pub enum VcpuExit {
    /// KVM_EXIT_DEBUG: `run->debug.arch` and `run->flags`.
    Debug {
        /// `struct kvm_debug_exit_arch`.
        arch: KvmDebugExitArch,
        /// `run->flags` (KVM_DEBUG_ARCH_HSR_HIGH_VALID).
        flags: u32,
    },
    /// The guest made a hypercall for userspace (HVC #imm).
    Hvc {
        /// The immediate.
        imm: u16,
    },
    /// The guest ran off its code (fetch from a page with no program).
    ProgramEnd {
        /// The PC.
        pc: u64,
    },
    /// The run's instruction budget ran out (KVM_EXIT_INTR).
    Intr,
    /// The guest took an exception its handler does not handle.
    GuestAbort {
        /// ESR_EL1.
        esr: u64,
        /// ELR_EL1.
        elr: u64,
    },
}

impl std::fmt::Display for VcpuExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VcpuExit::Debug { arch, flags } => {
                let esr = Esr::from_bits(u64::from(arch.hsr) | u64::from(arch.hsr_high) << 32);
                write!(
                    f,
                    "KVM_EXIT_DEBUG hsr={:#x} ({}) far={:#x} flags={flags}",
                    arch.hsr,
                    hypdbg_model::esr::ec_name(esr.ec()),
                    arch.far
                )
            }
            VcpuExit::Hvc { imm } => write!(f, "HVC #{imm:#x}"),
            VcpuExit::ProgramEnd { pc } => write!(f, "program end at {pc:#x}"),
            VcpuExit::Intr => write!(f, "KVM_EXIT_INTR (instruction budget)"),
            VcpuExit::GuestAbort { esr, elr } => {
                write!(f, "guest abort: ESR_EL1={esr:#x} ELR_EL1={elr:#x}")
            }
        }
    }
}

/// A vcpu in the simulator.
#[derive(Clone, Debug)]
pub struct SimVcpu {
    /// The kernel's state.
    pub kvm: KvmVcpu,
    /// The physical CPU the next KVM_RUN loads on.
    pub cpu: usize,
    /// Where it is loaded now.
    pub loaded: Option<usize>,
    /// Exceptions the guest's EL1 handler took, oldest first.
    pub exceptions: Vec<GuestEvent>,
    /// A host interrupt every this many guest instructions.
    pub irq_every: Option<u64>,
    irq_countdown: u64,
    /// After this many in-kernel exits of a KVM_RUN, preempt and migrate to this CPU.
    pub preempt: Option<(u32, usize)>,
    /// Register moves of the last KVM_RUN, by class.
    pub last_run_stats: SwitchStats,
    /// pKVM: the hyp's own copy of the vcpu (`pkvm_hyp_vcpu`), from the first entry on.
    hyp_vcpu: Option<KvmVcpu>,
}

impl SimVcpu {
    /// The vcpu the hyp runs: the pKVM copy while there is one.
    fn running(&mut self) -> &mut KvmVcpu {
        match self.hyp_vcpu {
            Some(ref mut h) => h,
            None => &mut self.kvm,
        }
    }
}

/// What handle_exit decided.
enum Handled {
    Resume,
    User(VcpuExit),
}

/// A VM: physical CPUs, vcpus, guest memory, a flow.
pub struct Vm {
    flow: Box<dyn DynFlow>,
    pcpus: Vec<Pcpu>,
    vcpus: Vec<SimVcpu>,
    mem: GuestMemory,
    guest_features: DebugFeatures,
    config: VmConfig,
    events: Vec<Event>,
    dead: Option<HypFault>,
    /// `kvm_vm_has_ran_once`: ID registers are frozen from the first KVM_RUN.
    ran_once: bool,
}

impl Vm {
    /// Create a VM running `flow`. All physical CPUs must implement the same numbers of
    /// breakpoints and watchpoints (the guest sees one ID_AA64DFR0_EL1).
    pub fn new(flow: Box<dyn DynFlow>, config: VmConfig) -> Result<Vm, KvmError> {
        let Some(first) = config.pcpus.first().copied() else {
            return Err(KvmError::Inval(
                "a VM needs at least one physical CPU".into(),
            ));
        };
        if config.vcpus == 0 {
            return Err(KvmError::Inval("a VM needs at least one vcpu".into()));
        }
        if config.host_mode == HostMode::Vhe && (flow.era() == Era::One || flow.protected_mode()) {
            return Err(KvmError::Inval(
                "a VHE host runs eras 2 and 3 (v4.17+) outside protected mode".into(),
            ));
        }
        for (i, f) in config.pcpus.iter().enumerate() {
            if !f.same_counts(&first) {
                return Err(KvmError::Inval(format!(
                    "physical CPU {i} has {}/{} breakpoints/watchpoints, CPU 0 has {}/{}: a guest sees one ID_AA64DFR0_EL1",
                    f.num_brps(),
                    f.num_wrps(),
                    first.num_brps(),
                    first.num_wrps()
                )));
            }
        }
        let mut pcpus: Vec<Pcpu> = config
            .pcpus
            .iter()
            .enumerate()
            .map(|(i, f)| Pcpu::new(i, *f))
            .collect();
        for p in &mut pcpus {
            let raw = p.features().raw();
            flow.init_host_data(&mut p.host_data, raw);
        }
        let id_aa64dfr0 = hypdbg_model::dfr0::sanitise_id_aa64dfr0_el1(first.raw());
        let vcpus = (0..config.vcpus)
            .map(|i| SimVcpu {
                kvm: KvmVcpu {
                    id_aa64dfr0_el1: id_aa64dfr0,
                    ..KvmVcpu::new(i)
                },
                cpu: i % pcpus.len(),
                loaded: None,
                exceptions: Vec::new(),
                irq_every: None,
                irq_countdown: 0,
                preempt: None,
                last_run_stats: SwitchStats::default(),
                hyp_vcpu: None,
            })
            .collect();
        let events = if config.mode == AccessMode::Checking {
            Vec::with_capacity(128)
        } else {
            Vec::new()
        };
        Ok(Vm {
            flow,
            pcpus,
            vcpus,
            mem: GuestMemory::new(),
            guest_features: first,
            config,
            events,
            dead: None,
            ran_once: false,
        })
    }

    /// The flow's era.
    pub fn era(&self) -> Era {
        self.flow.era()
    }

    /// KVM_CHECK_EXTENSION.
    pub fn check_extension(&self, cap: u32) -> i64 {
        match cap {
            KVM_CAP_SET_GUEST_DEBUG => 1,
            KVM_CAP_GUEST_DEBUG_HW_BPS => self.guest_features.num_brps() as i64,
            KVM_CAP_GUEST_DEBUG_HW_WPS => self.guest_features.num_wrps() as i64,
            // KVM_CAP_SET_GUEST_DEBUG2 came with v5.12: era 1 (v4.5..v4.16) does not know it.
            KVM_CAP_SET_GUEST_DEBUG2 if self.era() == Era::One => 0,
            KVM_CAP_SET_GUEST_DEBUG2 => i64::from(KVM_GUESTDBG_VALID_MASK),
            _ => 0,
        }
    }

    /// The ID_AA64DFR0_EL1 the guest sees.
    pub fn guest_features(&self) -> &DebugFeatures {
        &self.guest_features
    }

    /// Load a program into guest memory and point every vcpu's PC at its first instruction.
    pub fn load_program(&mut self, p: &Program) {
        self.mem.load_code(p.base, &p.words);
        for v in &mut self.vcpus {
            v.kvm.arch.ctxt.regs.pc = p.base;
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// Guest memory, for a debugger's writes (software breakpoints).
    pub fn memory_mut(&mut self) -> &mut GuestMemory {
        &mut self.mem
    }

    /// A vcpu.
    pub fn vcpu(&self, i: usize) -> Result<&SimVcpu, KvmError> {
        self.vcpus.get(i).ok_or_else(|| {
            KvmError::Inval(format!("no vcpu {i} (the VM has {})", self.vcpus.len()))
        })
    }

    /// A vcpu, mutable (test set-up: registers, IRQ and preemption schedules).
    pub fn vcpu_mut(&mut self, i: usize) -> Result<&mut SimVcpu, KvmError> {
        let n = self.vcpus.len();
        self.vcpus
            .get_mut(i)
            .ok_or_else(|| KvmError::Inval(format!("no vcpu {i} (the VM has {n})")))
    }

    /// A physical CPU.
    pub fn pcpu(&self, i: usize) -> Option<&Pcpu> {
        self.pcpus.get(i)
    }

    /// Number of physical CPUs.
    pub fn nr_pcpus(&self) -> usize {
        self.pcpus.len()
    }

    /// Choose the physical CPU vcpu `i` runs on from its next KVM_RUN (migration).
    pub fn set_vcpu_cpu(&mut self, i: usize, cpu: usize) -> Result<(), KvmError> {
        if cpu >= self.pcpus.len() {
            return Err(KvmError::Inval(format!(
                "no physical CPU {cpu} (the VM has {})",
                self.pcpus.len()
            )));
        }
        self.vcpu_mut(i)?.cpu = cpu;
        Ok(())
    }

    /// The events recorded so far (checking mode).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Take the recorded events.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The hyp panic that killed the VM, if any.
    pub fn dead(&self) -> Option<&HypFault> {
        self.dead.as_ref()
    }

    fn checking(&self) -> bool {
        self.config.mode == AccessMode::Checking
    }

    fn record(&mut self, e: Event) {
        if self.checking() {
            self.events.push(e);
        }
    }

    fn flow_state(flow: &dyn DynFlow, v: &KvmVcpu) -> FlowState {
        let _ = flow;
        FlowState {
            guest_debug: v.guest_debug,
            debug_flags: v.arch.debug_flags,
            debug_owner: v.arch.debug_owner,
            debug_ptr: v.arch.debug_ptr,
            mdcr_el2: v.arch.mdcr_el2,
            guest_mdscr_el1: v.mdscr_el1(),
            os_lock: v.os_lock_enabled(),
            pstate: v.cpsr(),
        }
    }

    /// KVM_SET_GUEST_DEBUG.
    pub fn set_guest_debug(&mut self, i: usize, dbg: &KvmGuestDebug) -> Result<(), KvmError> {
        self.vcpu(i)?;
        let r = self.flow.set_guest_debug(&mut self.vcpus[i].kvm, dbg);
        self.record(Event::SetGuestDebug {
            vcpu: i,
            control: dbg.control,
            arch: Box::new(dbg.arch),
            ok: r.is_ok(),
        });
        r
    }

    /// KVM_GET_ONE_REG: the debug registers (all 16 of each bank), MDSCR_EL1,
    /// MDCCINT_EL1, OSLSR_EL1, and the core registers PC, PSTATE, SP, X0..X30.
    pub fn get_one_reg(&mut self, i: usize, id: u64) -> Result<u64, KvmError> {
        self.vcpu(i)?;
        if let Some(v) = self.core_reg(i, id) {
            return Ok(v);
        }
        let reg = self.debug_one_reg(id)?;
        let v = &mut self.vcpus[i].kvm;
        let value = match reg {
            SysReg::IdAa64dfr0El1 => v.id_aa64dfr0_el1,
            SysReg::Dbg(..) => self
                .flow
                .get_dbg_reg(v, reg)
                .ok_or_else(|| KvmError::NoEnt(format!("{reg}")))?,
            other => v
                .arch
                .ctxt
                .sys_regs
                .get(other)
                .ok_or_else(|| KvmError::NoEnt(format!("{other}")))?,
        };
        self.record(Event::GetOneReg {
            vcpu: i,
            reg,
            value,
        });
        Ok(value)
    }

    /// KVM_SET_ONE_REG (OSLSR_EL1: only OSLK may change, as `set_oslsr_el1`).
    pub fn set_one_reg(&mut self, i: usize, id: u64, value: u64) -> Result<(), KvmError> {
        self.vcpu(i)?;
        if self.set_core_reg(i, id, value) {
            return Ok(());
        }
        let reg = self.debug_one_reg(id)?;
        let v = &mut self.vcpus[i].kvm;
        match reg {
            SysReg::Dbg(..) => {
                if !self.flow.set_dbg_reg(v, reg, value) {
                    return Err(KvmError::NoEnt(format!("{reg}")));
                }
            }
            SysReg::IdAa64dfr0El1 => {
                self.set_id_aa64dfr0_el1(value)?;
            }
            SysReg::OslsrEl1 => {
                let cur = v.arch.ctxt.sys_regs.oslsr_el1;
                if (cur ^ value) & !hypdbg_model::ctrl::OSLSR_EL1_OSLK != 0 {
                    return Err(KvmError::Inval(format!(
                        "OSLSR_EL1 = {value:#x}: only OSLK (bit 1) may differ from {cur:#x}"
                    )));
                }
                v.arch.ctxt.sys_regs.oslsr_el1 = value;
            }
            other => {
                v.arch.ctxt.sys_regs.set(other, value);
            }
        }
        self.record(Event::SetOneReg {
            vcpu: i,
            reg,
            value,
        });
        Ok(())
    }

    /// KVM_GET_REG_LIST, the part this model exposes: the core registers it knows, then
    /// every DBG{B,W}{C,V}R0..15_EL1 (64, whatever the implemented count: `walk_sys_regs`
    /// lists each descriptor without a visibility hook), MDSCR_EL1, MDCCINT_EL1, OSLSR_EL1,
    /// DBGVCR32_EL2 (the trap_raz_wi registers keep no state and are not listed).
    pub fn get_reg_list(&self, i: usize) -> Result<Vec<u64>, KvmError> {
        self.vcpu(i)?;
        let mut ids = vec![core_reg::PC, core_reg::PSTATE, core_reg::SP];
        ids.extend((0..31u8).map(core_reg::x));
        for n in 0..16u8 {
            for bank in hypdbg_model::DbgBank::ALL {
                ids.push(SysReg::Dbg(bank, n).one_reg_id());
            }
        }
        ids.extend(
            [
                SysReg::MdscrEl1,
                SysReg::MdccintEl1,
                SysReg::OslsrEl1,
                SysReg::Dbgvcr32El2,
                SysReg::IdAa64dfr0El1,
            ]
            .map(SysReg::one_reg_id),
        );
        Ok(ids)
    }

    /// `set_id_aa64dfr0_el1` (v6.7+): userspace may lower WRPs (and DebugVer, PMUVer,
    /// DoubleLock) of the VM's ID_AA64DFR0_EL1 before the first run; BRPs and CTX_CMPs are
    /// locked. The guest's view changes; KVM_CAP_GUEST_DEBUG_HW_WPS and the world switch keep
    /// the hardware's count.
    fn set_id_aa64dfr0_el1(&mut self, value: u64) -> Result<(), KvmError> {
        let cur = self.vcpus[0].kvm.id_aa64dfr0_el1;
        if value == cur {
            return Ok(());
        }
        if self.ran_once {
            return Err(KvmError::Busy(
                "ID_AA64DFR0_EL1 cannot change once the VM has run".into(),
            ));
        }
        if !hypdbg_model::dfr0::id_aa64dfr0_write_is_safe(cur, value) {
            return Err(KvmError::TooBig(format!(
                "ID_AA64DFR0_EL1 = {value:#x}: only DoubleLock, WRPs, PMUVer and DebugVer of {cur:#x} may change, and only downwards"
            )));
        }
        for v in &mut self.vcpus {
            v.kvm.id_aa64dfr0_el1 = value;
        }
        Ok(())
    }

    fn debug_one_reg(&self, id: u64) -> Result<SysReg, KvmError> {
        let reg = SysReg::from_one_reg_id(id).map_err(|e| KvmError::NoEnt(e.to_string()))?;
        match reg {
            // The DBG{B,W}{C,V}R<n>_EL1 descriptors of sys_regs.c have no visibility hook: all
            // 16 slots of each bank are ONE_REG registers whatever the implemented count.
            SysReg::Dbg(..) => Ok(reg),
            SysReg::MdscrEl1
            | SysReg::MdccintEl1
            | SysReg::OslsrEl1
            | SysReg::Dbgvcr32El2
            | SysReg::IdAa64dfr0El1 => Ok(reg),
            other => Err(KvmError::NoEnt(format!(
                "{other} is not accessible through ONE_REG here"
            ))),
        }
    }

    fn core_reg(&self, i: usize, id: u64) -> Option<u64> {
        let r = &self.vcpus[i].kvm.arch.ctxt.regs;
        match id {
            core_reg::PC => Some(r.pc),
            core_reg::PSTATE => Some(r.pstate),
            core_reg::SP => Some(r.sp),
            _ => (0..31u8)
                .find(|&n| core_reg::x(n) == id)
                .map(|n| r.regs[usize::from(n)]),
        }
    }

    fn set_core_reg(&mut self, i: usize, id: u64, value: u64) -> bool {
        let r = &mut self.vcpus[i].kvm.arch.ctxt.regs;
        match id {
            core_reg::PC => r.pc = value,
            core_reg::PSTATE => r.pstate = value,
            core_reg::SP => r.sp = value,
            _ => match (0..31u8).find(|&n| core_reg::x(n) == id) {
                Some(n) => r.regs[usize::from(n)] = value,
                None => return false,
            },
        }
        true
    }

    /// Make the guest take an exception at its EL1 on the next entry (how a VMM reinjects a
    /// debug exception that is not its own: ESR_EL1 with the same-EL class, FAR_EL1 for
    /// watchpoints).
    pub fn inject_exception(
        &mut self,
        i: usize,
        esr: Esr,
        far: Option<u64>,
    ) -> Result<(), KvmError> {
        self.vcpu_mut(i)?.kvm.arch.pending_exception = Some(PendingException { esr, far });
        self.record(Event::Inject { vcpu: i, esr, far });
        Ok(())
    }

    fn vhe(&self) -> bool {
        self.config.host_mode == HostMode::Vhe
    }

    /// The host's registers of `cpu` for a Load/Put event (VHE, checking mode).
    fn load_put_snapshot(&self, cpu: usize) -> Option<Box<HostSnapshot>> {
        (self.vhe() && self.checking()).then(|| Box::new(self.pcpus[cpu].host_snapshot()))
    }

    fn vcpu_load(&mut self, i: usize, cpu: usize) {
        let mdcr = self.pcpus[cpu].mdcr_el2_boot;
        let host = self.load_put_snapshot(cpu);
        let vhe = self.vhe();
        let Vm {
            flow, pcpus, vcpus, ..
        } = self;
        let v = &mut vcpus[i];
        v.loaded = Some(cpu);
        flow.vcpu_load(&mut v.kvm, mdcr);
        if vhe {
            vhe_load(flow.as_ref(), &mut v.kvm, &mut pcpus[cpu]);
        }
        let state = Self::flow_state(self.flow.as_ref(), &self.vcpus[i].kvm);
        self.record(Event::Load {
            vcpu: i,
            pcpu: cpu,
            state,
            host,
        });
    }

    fn vcpu_put(&mut self, i: usize) {
        let vhe = self.vhe();
        let Vm {
            flow, pcpus, vcpus, ..
        } = self;
        let v = &mut vcpus[i];
        let cpu = v.loaded.take().unwrap_or(v.cpu);
        flow.vcpu_put(&mut v.kvm);
        if vhe {
            vhe_put(flow.as_ref(), &mut v.kvm, &mut pcpus[cpu]);
        }
        let state = Self::flow_state(self.flow.as_ref(), &self.vcpus[i].kvm);
        let host = self.load_put_snapshot(cpu);
        self.record(Event::Put {
            vcpu: i,
            pcpu: cpu,
            state,
            host,
        });
    }

    /// KVM_RUN.
    pub fn run(&mut self, i: usize) -> Result<VcpuExit, KvmError> {
        self.vcpu(i)?;
        if let Some(f) = &self.dead {
            return Err(KvmError::Hyp(f.clone()));
        }
        let cpu = self.vcpus[i].cpu;
        self.ran_once = true;
        self.vcpus[i].last_run_stats = SwitchStats::default();
        self.vcpu_load(i, cpu);
        let mut budget = self.config.budget_per_run;
        let mut exits = 0u32;
        let result = loop {
            if let Err(f) = self.enter(i) {
                break Err(f);
            }
            match self.exit_and_handle(i, &mut budget) {
                Err(f) => break Err(f),
                Ok(Handled::User(e)) => break Ok(e),
                Ok(Handled::Resume) => {
                    exits += 1;
                    if let Some((after, to)) = self.vcpus[i].preempt
                        && exits == after
                        && to < self.pcpus.len()
                    {
                        self.vcpus[i].preempt = None;
                        self.vcpu_put(i);
                        self.vcpus[i].cpu = to;
                        self.vcpu_load(i, to);
                    }
                }
            }
        };
        match result {
            Ok(e) => {
                self.vcpu_put(i);
                self.record(Event::UserExit {
                    vcpu: i,
                    exit: e.to_string(),
                });
                Ok(e)
            }
            Err(f) => Err(KvmError::Hyp(f)),
        }
    }

    /// One KVM_RUN of each vcpu in `vcpus` (on distinct physical CPUs), with the first world
    /// switch of each interleaved: every vcpu enters its guest before any of them exits, as
    /// on an SMP host. Later iterations of each run proceed one vcpu at a time.
    pub fn run_concurrently(&mut self, vcpus: &[usize]) -> Result<Vec<VcpuExit>, KvmError> {
        let mut cpus = BTreeSet::new();
        for &i in vcpus {
            self.vcpu(i)?;
            if !cpus.insert(self.vcpus[i].cpu) {
                return Err(KvmError::Busy(format!(
                    "two vcpus cannot run on physical CPU {} at once",
                    self.vcpus[i].cpu
                )));
            }
        }
        if let Some(f) = &self.dead {
            return Err(KvmError::Hyp(f.clone()));
        }
        self.ran_once = true;
        for &i in vcpus {
            let cpu = self.vcpus[i].cpu;
            self.vcpus[i].last_run_stats = SwitchStats::default();
            self.vcpu_load(i, cpu);
            self.enter(i).map_err(KvmError::Hyp)?;
        }
        let mut out = Vec::new();
        for &i in vcpus {
            let mut budget = self.config.budget_per_run;
            let exit = loop {
                match self
                    .exit_and_handle(i, &mut budget)
                    .map_err(KvmError::Hyp)?
                {
                    Handled::User(e) => break e,
                    Handled::Resume => self.enter(i).map_err(KvmError::Hyp)?,
                }
            };
            self.vcpu_put(i);
            self.record(Event::UserExit {
                vcpu: i,
                exit: exit.to_string(),
            });
            out.push(exit);
        }
        Ok(out)
    }

    fn new_access<'a>(
        mode: AccessMode,
        regs: &'a mut crate::access::PhysRegs,
        log: &'a mut Vec<AccessRecord>,
    ) -> AnyAccess<'a> {
        match mode {
            AccessMode::Plain => AnyAccess::Plain(PlainAccess::new(regs)),
            AccessMode::Checking => AnyAccess::Checking(CheckingAccess::new(regs, log)),
        }
    }

    fn fault(
        &mut self,
        i: usize,
        cpu: usize,
        f: HypFault,
        accesses: Vec<AccessRecord>,
    ) -> HypFault {
        self.record(Event::HypPanic {
            vcpu: i,
            pcpu: cpu,
            fault: f.to_string(),
            accesses,
        });
        self.dead = Some(f.clone());
        f
    }

    /// Host side before the entry, then the hyp's entry half of `__kvm_vcpu_run`.
    fn enter(&mut self, i: usize) -> Result<(), HypFault> {
        let cpu = self.vcpus[i].loaded.unwrap_or(self.vcpus[i].cpu);
        let mdcr_boot = self.pcpus[cpu].mdcr_el2_boot;
        self.flow.setup_debug(&mut self.vcpus[i].kvm, mdcr_boot);
        if self.vhe() {
            // kvm_arm_setup_debug (era 2): `if (has_vhe() && orig_mdcr_el2 != mdcr_el2)`.
            write_mdcr_if_changed(&self.vcpus[i].kvm, &mut self.pcpus[cpu]);
        }
        if self.checking() {
            let host = self.pcpus[cpu].host_snapshot();
            let state = Self::flow_state(self.flow.as_ref(), &self.vcpus[i].kvm);
            self.events.push(Event::BeforeEntry {
                vcpu: i,
                pcpu: cpu,
                host: Box::new(host),
                state,
            });
        }
        let mode = self.config.mode;
        let mut log = Vec::with_capacity(if self.config.mode == AccessMode::Checking {
            80
        } else {
            0
        });
        let vhe = self.vhe();
        let Vm {
            flow, pcpus, vcpus, ..
        } = self;
        let pcpu = &mut pcpus[cpu];
        let v = &mut vcpus[i];
        if flow.protected_mode() {
            // __pkvm_init_vcpu made the hyp's vcpu once; every entry flushes into it.
            let hyp = v.hyp_vcpu.get_or_insert_with(|| KvmVcpu {
                id_aa64dfr0_el1: v.kvm.id_aa64dfr0_el1,
                ..KvmVcpu::new(v.kvm.vcpu_id)
            });
            flush_hyp_vcpu(flow.as_ref(), hyp, &v.kvm);
        }
        let r = {
            let mut a = Self::new_access(mode, &mut pcpu.regs, &mut log);
            hyp_enter(flow.as_ref(), &mut a, v.running(), &mut pcpu.host_data, vhe)
        };
        v.last_run_stats.add(&SwitchStats::of(&log));
        if let Err(f) = r {
            return Err(self.fault(i, cpu, f, log));
        }
        if self.checking() {
            let live = Box::new(LiveState {
                regs: HostSnapshot::of(&self.pcpus[cpu].regs),
            });
            self.events.push(Event::Entered {
                vcpu: i,
                pcpu: cpu,
                live,
                accesses: log,
            });
        }
        Ok(())
    }

    /// Run the guest, the hyp's exit half, the host's clear_debug and handle_exit.
    fn exit_and_handle(&mut self, i: usize, budget: &mut u64) -> Result<Handled, HypFault> {
        let cpu = self.vcpus[i].loaded.unwrap_or(self.vcpus[i].cpu);
        let mode = self.config.mode;
        let checking = self.checking();
        let vhe = self.vhe();
        let trace = self.config.trace_instructions;
        let mut guest_log = Vec::new();
        let mut log = Vec::with_capacity(if self.config.mode == AccessMode::Checking {
            80
        } else {
            0
        });
        let reason;
        let instructions;
        let r = {
            let Vm {
                flow,
                pcpus,
                vcpus,
                mem,
                ..
            } = self;
            let pcpu = &mut pcpus[cpu];
            let v = &mut vcpus[i];
            let irq_in = v.irq_every.map(|n| {
                if v.irq_countdown == 0 {
                    n
                } else {
                    v.irq_countdown
                }
            });
            let before = *budget;
            let SimVcpu {
                kvm,
                hyp_vcpu,
                exceptions,
                ..
            } = v;
            let running = match hyp_vcpu {
                Some(h) => h,
                None => kvm,
            };
            let mut g = GuestRun {
                vcpu: running,
                regs: &mut pcpu.regs,
                mem,
                events: checking.then_some((&mut guest_log, trace)),
                exceptions,
                irq_in,
                budget,
                completed: 0,
            };
            reason = g.run();
            instructions = g.completed;
            if let Some(n) = v.irq_every {
                let ran = before - *budget;
                let left = irq_in.unwrap_or(n).saturating_sub(ran);
                v.irq_countdown = if reason == ExitReason::Irq || left == 0 {
                    n
                } else {
                    left
                };
            }
            let r = {
                let mut a = Self::new_access(mode, &mut pcpu.regs, &mut log);
                hyp_exit(flow.as_ref(), &mut a, v.running(), &mut pcpu.host_data, vhe)
            };
            if let Some(hyp) = &v.hyp_vcpu {
                sync_hyp_vcpu(flow.as_ref(), &mut v.kvm, hyp);
            }
            v.last_run_stats.add(&SwitchStats::of(&log));
            r
        };
        for what in guest_log {
            self.events.push(Event::Guest { vcpu: i, what });
        }
        if let Err(f) = r {
            return Err(self.fault(i, cpu, f, log));
        }
        if checking {
            let host = self.pcpus[cpu].host_snapshot();
            let state = Self::flow_state(self.flow.as_ref(), &self.vcpus[i].kvm);
            self.events.push(Event::Exited {
                vcpu: i,
                pcpu: cpu,
                reason,
                instructions,
                host: Box::new(host),
                accesses: log,
                state,
            });
        }
        self.flow.clear_debug(&mut self.vcpus[i].kvm);
        Ok(self.handle_exit(i, cpu, reason))
    }

    /// `handle_exit`: emulate traps, report debug exits, or return to userspace.
    fn handle_exit(&mut self, i: usize, cpu: usize, reason: ExitReason) -> Handled {
        match reason {
            ExitReason::SysRegTrap { esr } => {
                self.handle_sys_reg(i, cpu, esr);
                Handled::Resume
            }
            ExitReason::Debug { esr, far } => {
                let (arch, flags) = self
                    .flow
                    .handle_guest_debug(&mut self.vcpus[i].kvm, esr, far);
                Handled::User(VcpuExit::Debug { arch, flags })
            }
            ExitReason::Hvc { imm } => Handled::User(VcpuExit::Hvc { imm }),
            ExitReason::Irq => Handled::Resume,
            ExitReason::ProgramEnd { pc } => Handled::User(VcpuExit::ProgramEnd { pc }),
            ExitReason::Budget => Handled::User(VcpuExit::Intr),
            ExitReason::GuestAbort { esr, elr } => Handled::User(VcpuExit::GuestAbort {
                esr: esr.bits(),
                elr,
            }),
        }
    }

    /// `kvm_handle_sys_reg`: emulate, then `kvm_incr_pc`, or inject UNDEF.
    fn handle_sys_reg(&mut self, i: usize, cpu: usize, esr: Esr) {
        let mdcr_boot = self.pcpus[cpu].mdcr_el2_boot;
        let Some(iss) = esr.sysreg() else { return };
        let v = &mut self.vcpus[i].kvm;
        let rt = usize::from(iss.rt);
        let regval = if rt < 31 {
            v.arch.ctxt.regs.regs[rt]
        } else {
            0
        };
        let reg = iss.sysreg();
        let (outcome, value) = match reg {
            Some(reg) => {
                let mut p = SysRegParams {
                    reg,
                    is_write: !iss.is_read,
                    regval,
                };
                let o = self
                    .flow
                    .emulate_sys_reg(v, &self.guest_features, mdcr_boot, &mut p);
                (o, p.regval)
            }
            None => (TrapOutcome::Undef, 0),
        };
        if self.config.host_mode == HostMode::Vhe {
            // kvm_arm_setup_mdcr_el2 (era 3, ownership promotion): `if (has_vhe())
            // write_sysreg(vcpu->arch.mdcr_el2, mdcr_el2)`.
            write_mdcr_if_changed(v, &mut self.pcpus[cpu]);
        }
        match outcome {
            TrapOutcome::Handled => {
                if iss.is_read && rt < 31 {
                    v.arch.ctxt.regs.regs[rt] = value;
                }
                v.set_flag(DebugFlags::INCREMENT_PC, true);
            }
            TrapOutcome::Undef => {
                v.arch.pending_exception = Some(PendingException {
                    esr: Esr::unknown(),
                    far: None,
                });
            }
        }
        if self.checking() {
            let undef = outcome == TrapOutcome::Undef;
            self.events.push(Event::Trap {
                vcpu: i,
                reg,
                is_write: !iss.is_read,
                value,
                undef,
            });
            if let (Some(reg), false) = (reg, undef) {
                let what = if iss.is_read {
                    GuestEvent::SysRegRead {
                        reg,
                        value,
                        trapped: true,
                    }
                } else {
                    GuestEvent::SysRegWrite {
                        reg,
                        value,
                        trapped: true,
                    }
                };
                self.events.push(Event::Guest { vcpu: i, what });
            }
        }
    }
}

/// pKVM `flush_hyp_vcpu` (nvhe/hyp-main.c, v6.14+): the hyp's own vcpu, which lives as long
/// as the VM, receives the context, MDCR_EL2 and the flags on every entry, and through
/// `flush_debug_state` the debug owner and the owned block. Nothing else: whatever else the
/// hyp vcpu holds (its `external_mdscr_el1` before v7.3) is what its last exit left there.
fn flush_hyp_vcpu(flow: &dyn DynFlow, hyp: &mut KvmVcpu, host: &KvmVcpu) {
    flow.flush_debug_state(hyp, host);
    hyp.arch.ctxt = host.arch.ctxt;
    hyp.arch.mdcr_el2 = host.arch.mdcr_el2;
    hyp.arch.debug_flags = host.arch.debug_flags;
    hyp.arch.pending_exception = host.arch.pending_exception;
}

/// pKVM `sync_hyp_vcpu`: bring the hyp copy's context, flags and (`sync_debug_state`) the
/// owned block back to the host's vcpu.
fn sync_hyp_vcpu(flow: &dyn DynFlow, host: &mut KvmVcpu, hyp: &KvmVcpu) {
    host.arch.ctxt = hyp.arch.ctxt;
    host.arch.debug_flags = hyp.arch.debug_flags;
    host.arch.pending_exception = hyp.arch.pending_exception;
    flow.sync_debug_state(host, hyp);
}

/// The VHE half of `kvm_arch_vcpu_load` after `kvm_vcpu_load_debug`: `kvm_vcpu_load_vhe`
/// loads the guest's EL1 registers (CONTEXTIDR_EL1; the host at EL2 uses CONTEXTIDR_EL2) and
/// `__activate_traps_common` keeps the host's MDCR_EL2 and writes the vcpu's (era 3 keeps it
/// in `kvm_vcpu_load_debug`, era 2 in `__activate_traps_common`: the same slot the flow names).
fn vhe_load(flow: &dyn DynFlow, v: &mut KvmVcpu, pcpu: &mut Pcpu) {
    let mut log = Vec::new();
    let Pcpu {
        regs, host_data, ..
    } = pcpu;
    host_data.host_ctxt.sys_regs.contextidr_el1 = regs.file.contextidr_el1;
    regs.file.contextidr_el1 = v.arch.ctxt.sys_regs.contextidr_el1;
    let mut a = AnyAccess::Checking(CheckingAccess::new(regs, &mut log));
    flow.activate_traps(&mut a, v, host_data);
}

/// The VHE half of `kvm_arch_vcpu_put`: `__deactivate_traps_common` gives the host its
/// MDCR_EL2 back and `kvm_vcpu_put_vhe` saves the guest's EL1 registers.
fn vhe_put(flow: &dyn DynFlow, v: &mut KvmVcpu, pcpu: &mut Pcpu) {
    let mut log = Vec::new();
    let Pcpu {
        regs, host_data, ..
    } = pcpu;
    {
        let mut a = AnyAccess::Checking(CheckingAccess::new(regs, &mut log));
        flow.deactivate_traps(&mut a, v, host_data);
    }
    v.arch.ctxt.sys_regs.contextidr_el1 = regs.file.contextidr_el1;
    regs.file.contextidr_el1 = host_data.host_ctxt.sys_regs.contextidr_el1;
}

/// VHE: the host runs at EL2 with the vcpu's MDCR_EL2 loaded, so a function that recomputes
/// it writes the register at once.
fn write_mdcr_if_changed(v: &KvmVcpu, pcpu: &mut Pcpu) {
    if pcpu.regs.mdcr_el2 != v.arch.mdcr_el2 {
        pcpu.regs.mdcr_el2 = v.arch.mdcr_el2;
    }
}

/// The entry half of `__kvm_vcpu_run`.
fn hyp_enter(
    flow: &dyn DynFlow,
    a: &mut AnyAccess<'_>,
    v: &mut KvmVcpu,
    host: &mut crate::context::KvmHostData,
    vhe: bool,
) -> Result<(), HypFault> {
    // __sysreg_save_state_nvhe(host_ctxt); VHE: sysreg_save_host_state_vhe, the common
    // state (MDSCR_EL1) only, and no __activate_traps_common (done at vcpu_load).
    with_regs(a, |r| -> Result<(), HypFault> {
        r.scope(Scope::SysregSwitch);
        host.host_ctxt.sys_regs.mdscr_el1 = r.read_sys(SysReg::MdscrEl1)?;
        if !vhe {
            host.host_ctxt.sys_regs.contextidr_el1 = r.read_sys(SysReg::ContextidrEl1)?;
        }
        Ok(())
    })?;
    if !vhe {
        flow.activate_traps(a, v, host);
    }
    // __adjust_pc: a pending exception, or skip an emulated instruction.
    if let Some(e) = v.arch.pending_exception.take() {
        let pc = v.arch.ctxt.regs.pc;
        take_el1_exception(v, e.esr, e.far, pc);
        v.set_flag(DebugFlags::INCREMENT_PC, false);
    } else if v.flag(DebugFlags::INCREMENT_PC) {
        flow.skip_instr(v);
        v.set_flag(DebugFlags::INCREMENT_PC, false);
    }
    // __sysreg_restore_state_nvhe(guest_ctxt): MDSCR_EL1 from ctxt_mdscr_el1().
    let mdscr = *flow.guest_mdscr(v);
    let ctxid = v.arch.ctxt.sys_regs.contextidr_el1;
    with_regs(a, |r| -> Result<(), HypFault> {
        r.scope(Scope::SysregSwitch);
        r.write_sys(SysReg::MdscrEl1, mdscr)?;
        if vhe {
            return Ok(());
        }
        r.write_sys(SysReg::ContextidrEl1, ctxid)
    })?;
    flow.switch_to_guest(a, v, host)
}

/// The exit half of `__kvm_vcpu_run`.
fn hyp_exit(
    flow: &dyn DynFlow,
    a: &mut AnyAccess<'_>,
    v: &mut KvmVcpu,
    host: &mut crate::context::KvmHostData,
    vhe: bool,
) -> Result<(), HypFault> {
    // __sysreg_save_state_nvhe(guest_ctxt); VHE: sysreg_save_guest_state_vhe (MDSCR_EL1).
    let (mdscr, ctxid) = with_regs(a, |r| -> Result<(u64, Option<u64>), HypFault> {
        r.scope(Scope::SysregSwitch);
        let m = r.read_sys(SysReg::MdscrEl1)?;
        let c = if vhe {
            None
        } else {
            Some(r.read_sys(SysReg::ContextidrEl1)?)
        };
        Ok((m, c))
    })?;
    *flow.guest_mdscr(v) = mdscr;
    if let Some(c) = ctxid {
        v.arch.ctxt.sys_regs.contextidr_el1 = c;
        flow.deactivate_traps(a, v, host);
    }
    // __sysreg_restore_state_nvhe(host_ctxt)
    let (hm, hc) = (
        host.host_ctxt.sys_regs.mdscr_el1,
        host.host_ctxt.sys_regs.contextidr_el1,
    );
    with_regs(a, |r| -> Result<(), HypFault> {
        r.scope(Scope::SysregSwitch);
        r.write_sys(SysReg::MdscrEl1, hm)?;
        if vhe {
            return Ok(());
        }
        r.write_sys(SysReg::ContextidrEl1, hc)
    })?;
    flow.switch_to_host(a, v, host)
}

fn with_regs<T>(a: &mut AnyAccess<'_>, f: impl FnOnce(&mut dyn RegAccessDyn) -> T) -> T {
    match a {
        AnyAccess::Plain(p) => f(p),
        AnyAccess::Checking(c) => f(c),
    }
}

/// `RegAccess` minus its generic-free requirement, for the sysreg switch.
trait RegAccessDyn {
    fn scope(&mut self, s: Scope);
    fn read_sys(&mut self, reg: SysReg) -> Result<u64, HypFault>;
    fn write_sys(&mut self, reg: SysReg, v: u64) -> Result<(), HypFault>;
}

impl<A: RegAccess> RegAccessDyn for A {
    fn scope(&mut self, s: Scope) {
        RegAccess::scope(self, s);
    }
    fn read_sys(&mut self, reg: SysReg) -> Result<u64, HypFault> {
        RegAccess::read_sys(self, reg)
    }
    fn write_sys(&mut self, reg: SysReg, v: u64) -> Result<(), HypFault> {
        RegAccess::write_sys(self, reg, v)
    }
}
