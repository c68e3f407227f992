//! A KVM-shaped API over the simulator, modelled on kvm-ioctls: `check_extension`,
//! `set_guest_debug`, `run` returning a [`VcpuExit`], `get_one_reg`/`set_one_reg`, and a
//! choice of physical CPU for every vcpu (vcpu_load/put, migration).
//!
//! `run` is `kvm_arch_vcpu_ioctl_run`: vcpu_load on the chosen CPU; loop { setup_debug;
//! `__kvm_vcpu_run` (sysreg switch, `__activate_traps_common`, `__adjust_pc`, debug switch,
//! guest, and back); clear_debug; handle_exit } until something needs userspace; vcpu_put.

use std::collections::BTreeSet;

use hypdbg_model::esr::Esr;
use hypdbg_model::guest_abi::{
    CODE_BASE, Doorbell, MAX_VCPUS, RAM_BASE, RAM_SIZE, RUNTIME_BASE, RUNTIME_SIZE, doorbell,
    is_memory, log_base, stop_address,
};
use hypdbg_model::uapi::{
    KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS, KVM_CAP_SET_GUEST_DEBUG,
    KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_VALID_MASK, KvmDebugExitArch, KvmGuestDebug,
    VBAR_EL1_ID, core_reg,
};
use hypdbg_model::{DebugFeatures, SysReg};
use serde::Serialize;

use crate::access::{AccessRecord, CheckingAccess, PlainAccess, RegAccess, Scope, SwitchStats};
use crate::context::{DebugFlags, KvmVcpu, PendingException};
use crate::events::{Event, ExitReason, FlowState, GuestEvent, LiveState, Mmio};
use crate::fault::{HypFault, KvmError};
use crate::flow::{AnyAccess, DynFlow, Era, HostMode, SysRegParams, TrapOutcome};
use crate::guest::cpu::{exception_event, take_el1_exception};
use crate::guest::{GUEST_VBAR, GuestMemory, GuestRun, Program, runtime};
use crate::pcpu::{HostSnapshot, Pcpu};
use crate::smccc::{HvcOutcome, SmcccFilter, kvm_smccc_call_handler};

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
pub enum VcpuExit {
    /// KVM_EXIT_DEBUG: `run->debug.arch` and `run->flags`.
    Debug {
        /// `struct kvm_debug_exit_arch`.
        arch: KvmDebugExitArch,
        /// `run->flags` (KVM_DEBUG_ARCH_HSR_HIGH_VALID).
        flags: u32,
    },
    /// KVM_EXIT_MMIO: a data access outside every memory slot (hypdbg's `stop #n` is one, at
    /// the doorbell). The PC has not moved; the next KVM_RUN completes the access.
    Mmio {
        /// `run->mmio.phys_addr`.
        phys_addr: u64,
        /// `run->mmio.data`: a store's bytes.
        data: [u8; 8],
        /// `run->mmio.len`.
        len: u32,
        /// `run->mmio.is_write`.
        is_write: bool,
    },
    /// KVM_EXIT_HYPERCALL: an HVC the SMCCC filter forwards to userspace (v6.4+). The PC is
    /// past the HVC.
    Hypercall {
        /// `run->hypercall.nr`: the SMCCC function id.
        nr: u64,
        /// `run->hypercall.flags` (KVM_HYPERCALL_EXIT_SMC, _16BIT).
        flags: u64,
    },
    /// KVM_EXIT_SYSTEM_EVENT: PSCI SYSTEM_OFF or SYSTEM_RESET; every vcpu is stopped until
    /// KVM_SET_MP_STATE makes it runnable.
    SystemEvent {
        /// KVM_SYSTEM_EVENT_SHUTDOWN (1) or KVM_SYSTEM_EVENT_RESET (2).
        event_type: u32,
    },
    /// The guest fetched from a page where nothing was loaded (the simulator's stop for a
    /// branch into nowhere; a real guest would execute whatever the memory holds).
    ProgramEnd {
        /// The PC.
        pc: u64,
    },
    /// KVM_RUN returned -EINTR: the run's instruction budget ran out, `immediate_exit`, or
    /// a stopped vcpu (a real KVM_RUN would sleep until a signal).
    Intr,
}

/// KVM_SYSTEM_EVENT_SHUTDOWN.
pub const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// KVM_SYSTEM_EVENT_RESET.
pub const KVM_SYSTEM_EVENT_RESET: u32 = 2;

impl VcpuExit {
    /// The exit `stop #n` makes: KVM_EXIT_MMIO, a store of XZR to the doorbell slot `n`.
    pub fn stop(n: u16) -> VcpuExit {
        VcpuExit::Mmio {
            phys_addr: stop_address(n),
            data: [0; 8],
            len: 8,
            is_write: true,
        }
    }

    /// The doorbell slot of an MMIO exit (`stop #n`, the runtime's abort, program end).
    pub fn doorbell(&self) -> Option<Doorbell> {
        match self {
            VcpuExit::Mmio {
                phys_addr,
                is_write: true,
                ..
            } => doorbell(*phys_addr),
            _ => None,
        }
    }

    /// The value of an MMIO exit's store (`len` bytes, little-endian).
    pub fn mmio_value(&self) -> Option<u64> {
        match self {
            VcpuExit::Mmio { data, len, .. } => {
                let mut b = [0u8; 8];
                let n = (*len as usize).min(8);
                b[..n].copy_from_slice(&data[..n]);
                Some(u64::from_le_bytes(b))
            }
            _ => None,
        }
    }
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
            VcpuExit::Mmio {
                phys_addr,
                len,
                is_write,
                ..
            } => match (self.doorbell(), self.mmio_value()) {
                (Some(Doorbell::Stop(n)), _) => write!(f, "stop #{n} (KVM_EXIT_MMIO)"),
                (Some(Doorbell::GuestAbort), Some(esr)) => write!(
                    f,
                    "guest abort (KVM_EXIT_MMIO): ESR_EL1={esr:#x} ({})",
                    hypdbg_model::esr::ec_name(Esr::from_bits(esr).ec())
                ),
                (Some(Doorbell::ProgramEnd), _) => write!(f, "program end (KVM_EXIT_MMIO)"),
                _ => write!(
                    f,
                    "KVM_EXIT_MMIO {} {phys_addr:#x} len {len}{}",
                    if *is_write { "write" } else { "read" },
                    match self.mmio_value() {
                        Some(v) if *is_write => format!(" data {v:#x}"),
                        _ => String::new(),
                    }
                ),
            },
            VcpuExit::Hypercall { nr, flags } => {
                write!(f, "KVM_EXIT_HYPERCALL nr={nr:#x} flags={flags:#x}")
            }
            VcpuExit::SystemEvent { event_type } => write!(
                f,
                "KVM_EXIT_SYSTEM_EVENT {}",
                match *event_type {
                    KVM_SYSTEM_EVENT_SHUTDOWN => "SHUTDOWN".to_string(),
                    KVM_SYSTEM_EVENT_RESET => "RESET".to_string(),
                    t => format!("type {t}"),
                }
            ),
            VcpuExit::ProgramEnd { pc } => write!(f, "program end at {pc:#x}"),
            VcpuExit::Intr => write!(f, "KVM_EXIT_INTR"),
        }
    }
}

/// KVM_RUN's inputs in `struct kvm_run`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `run->immediate_exit`: complete a pending MMIO access, then return -EINTR without
    /// entering the guest.
    pub immediate_exit: bool,
    /// `run->mmio.data`: what an MMIO load the previous exit asked for reads.
    pub mmio_data: [u8; 8],
}

/// `struct kvm_mp_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum MpState {
    /// KVM_MP_STATE_RUNNABLE.
    #[default]
    Runnable,
    /// KVM_MP_STATE_STOPPED (after PSCI SYSTEM_OFF, CPU_OFF).
    Stopped,
}

/// What the SMCCC filter does with a range of function ids (`KVM_SMCCC_FILTER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SmcccAction {
    /// KVM_SMCCC_FILTER_HANDLE: KVM handles the call.
    Handle,
    /// KVM_SMCCC_FILTER_DENY: the guest gets SMCCC_RET_NOT_SUPPORTED.
    Deny,
    /// KVM_SMCCC_FILTER_FWD_TO_USER: KVM_EXIT_HYPERCALL.
    ForwardToUser,
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
    /// The MMIO access of the last exit, completed by the next KVM_RUN.
    pub mmio: Option<Mmio>,
    /// KVM_GET/SET_MP_STATE.
    pub mp_state: MpState,
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
    /// KVM_RUN fails with this error.
    Fail(KvmError),
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
    /// KVM_ARM_VM_SMCCC_FILTER.
    smccc_filter: SmcccFilter,
    /// `kvm_vm_has_ran_once`: ID registers and the SMCCC filter are frozen from the first
    /// KVM_RUN.
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
                mmio: None,
                mp_state: MpState::Runnable,
            })
            .collect();
        let events = if config.mode == AccessMode::Checking {
            Vec::with_capacity(128)
        } else {
            Vec::new()
        };
        let mut vm = Vm {
            flow,
            pcpus,
            vcpus,
            mem: GuestMemory::new(),
            guest_features: first,
            config,
            events,
            dead: None,
            smccc_filter: SmcccFilter::default(),
            ran_once: false,
        };
        vm.reset_guest()?;
        Ok(vm)
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

    /// What every hypdbg guest starts with, as a VMM sets it up before the first KVM_RUN:
    /// the exception runtime in its slot, and each vcpu's registers from
    /// [`runtime::reset_registers`] (PC, SP_EL1, the doorbell register).
    fn reset_guest(&mut self) -> Result<(), KvmError> {
        let rt = runtime::program()
            .map_err(|e| KvmError::Inval(format!("the guest runtime does not assemble: {e}")))?;
        if self.vcpus.len() > MAX_VCPUS {
            return Err(KvmError::Inval(format!(
                "{} vcpus: the guest runtime has room for {MAX_VCPUS}",
                self.vcpus.len()
            )));
        }
        self.mem.load_code(rt.base, &rt.words);
        for i in 0..self.vcpus.len() {
            self.mem.write(log_base(i), &runtime::log_reset(i));
            for (id, value) in runtime::reset_registers(CODE_BASE, i) {
                self.set_core_reg(i, id, value);
            }
        }
        Ok(())
    }

    /// Load a program into guest memory (followed by the program-end stop) and point every
    /// vcpu's PC at its first instruction.
    pub fn load_program(&mut self, p: &Program) {
        self.mem.load_code(p.base, &p.loaded_words());
        for v in &mut self.vcpus {
            v.kvm.arch.ctxt.regs.pc = p.base;
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// Read guest memory as a VMM does, through its memory slots: EFAULT outside them.
    pub fn read_guest(&self, addr: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        check_slots(addr, buf.len())?;
        self.mem.read(addr, buf);
        Ok(())
    }

    /// Write guest memory as a VMM does, through its memory slots: EFAULT outside them,
    /// and nothing written.
    pub fn write_guest(&mut self, addr: u64, data: &[u8]) -> Result<(), KvmError> {
        check_slots(addr, data.len())?;
        self.mem.write(addr, data);
        Ok(())
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
    /// MDCCINT_EL1, OSLSR_EL1, VBAR_EL1, and the core registers PC, PSTATE, SP, SP_EL1,
    /// ELR_EL1, SPSR_EL1, X0..X30.
    pub fn get_one_reg(&mut self, i: usize, id: u64) -> Result<u64, KvmError> {
        self.vcpu(i)?;
        if let Some(v) = self.core_reg(i, id) {
            return Ok(v);
        }
        if id == VBAR_EL1_ID {
            return Ok(GUEST_VBAR);
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
        if id == VBAR_EL1_ID {
            // The simulator takes every exception to the runtime at GUEST_VBAR.
            return if value == GUEST_VBAR {
                Ok(())
            } else {
                Err(KvmError::Inval(format!(
                    "VBAR_EL1 = {value:#x}: the simulator's guests keep their runtime at {GUEST_VBAR:#x}"
                )))
            };
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
        let c = &self.vcpus[i].kvm.arch.ctxt;
        match id {
            core_reg::PC => Some(c.regs.pc),
            core_reg::PSTATE => Some(c.regs.pstate),
            core_reg::SP => Some(c.regs.sp),
            core_reg::SP_EL1 => Some(c.sp_el1),
            core_reg::ELR_EL1 => Some(c.sys_regs.elr_el1),
            core_reg::SPSR_EL1 => Some(c.sys_regs.spsr_el1),
            _ => (0..31u8)
                .find(|&n| core_reg::x(n) == id)
                .map(|n| c.regs.regs[usize::from(n)]),
        }
    }

    fn set_core_reg(&mut self, i: usize, id: u64, value: u64) -> bool {
        let c = &mut self.vcpus[i].kvm.arch.ctxt;
        match id {
            core_reg::PC => c.regs.pc = value,
            core_reg::PSTATE => c.regs.pstate = value,
            core_reg::SP => c.regs.sp = value,
            core_reg::SP_EL1 => c.sp_el1 = value,
            core_reg::ELR_EL1 => c.sys_regs.elr_el1 = value,
            core_reg::SPSR_EL1 => c.sys_regs.spsr_el1 = value,
            _ => match (0..31u8).find(|&n| core_reg::x(n) == id) {
                Some(n) => c.regs.regs[usize::from(n)] = value,
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
        self.run_streamed(i, None)
    }

    /// Hand `sink` (if any) every event recorded so far.
    fn flush(&mut self, sink: &mut Option<&mut dyn FnMut(Event)>) {
        if let Some(s) = sink.as_mut() {
            for e in self.events.drain(..) {
                s(e);
            }
        }
    }

    /// KVM_RUN, handing `sink` the recorded events as the run goes (after every entry and
    /// every exit, the events recorded before the run first), so that a long run holds at most
    /// one world switch's events; without a sink they stay in [`Vm::events`].
    pub fn run_streamed(
        &mut self,
        i: usize,
        sink: Option<&mut dyn FnMut(Event)>,
    ) -> Result<VcpuExit, KvmError> {
        self.run_with(i, &RunOptions::default(), sink)
    }

    /// `kvm_arch_vcpu_ioctl_run` with the inputs of `struct kvm_run` ([`RunOptions`]):
    /// complete the last exit's MMIO access, vcpu_load, then (unless `immediate_exit`) enter
    /// and handle exits until one needs userspace; commit a pending PC adjustment, vcpu_put.
    pub fn run_with(
        &mut self,
        i: usize,
        opts: &RunOptions,
        mut sink: Option<&mut dyn FnMut(Event)>,
    ) -> Result<VcpuExit, KvmError> {
        self.begin_run(i, opts)?;
        let result = if opts.immediate_exit || self.vcpus[i].mp_state == MpState::Stopped {
            Ok(VcpuExit::Intr)
        } else {
            self.run_loop(i, &mut sink)
        };
        self.end_run(i, result, &mut sink)
    }

    /// Complete an MMIO access the last exit left pending, without running the guest: KVM_RUN
    /// with `immediate_exit` (what a VMM does before it saves a vcpu's state, since the
    /// pending access is not part of the state userspace can read). Nothing when none is
    /// pending.
    pub fn complete_pending_io(&mut self, i: usize) -> Result<(), KvmError> {
        if self.vcpu(i)?.mmio.is_some() {
            let opts = RunOptions {
                immediate_exit: true,
                ..RunOptions::default()
            };
            self.run_with(i, &opts, None)?;
        }
        Ok(())
    }

    /// The part of KVM_RUN before the first entry: the checks, `kvm_handle_mmio_return`
    /// (a load's data into its register, the PC past the access), vcpu_load.
    fn begin_run(&mut self, i: usize, opts: &RunOptions) -> Result<(), KvmError> {
        self.vcpu(i)?;
        if let Some(f) = &self.dead {
            return Err(KvmError::Hyp(f.clone()));
        }
        self.ran_once = true;
        let v = &mut self.vcpus[i];
        if let Some(m) = v.mmio.take() {
            // kvm_handle_mmio_return
            let mut value = m.data.unwrap_or(0);
            if !m.is_write() {
                // Userspace wrote the load's `len` bytes into run->mmio.data (the union's
                // far).
                let n = usize::from(m.len).min(8);
                let mut far = v.kvm.run_debug_arch.far.to_le_bytes();
                far[..n].copy_from_slice(&opts.mmio_data[..n]);
                v.kvm.run_debug_arch.far = u64::from_le_bytes(far);
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&opts.mmio_data[..n]);
                value = u64::from_le_bytes(b);
                if m.rt < 31 {
                    v.kvm.arch.ctxt.regs.regs[usize::from(m.rt)] = value;
                }
            }
            v.kvm.set_flag(DebugFlags::INCREMENT_PC, true);
            self.record(Event::MmioComplete {
                vcpu: i,
                mmio: m,
                value,
            });
        }
        let v = &mut self.vcpus[i];
        let cpu = v.cpu;
        v.last_run_stats = SwitchStats::default();
        self.vcpu_load(i, cpu);
        Ok(())
    }

    /// Enter, then handle exits until one needs userspace.
    fn run_loop(
        &mut self,
        i: usize,
        sink: &mut Option<&mut dyn FnMut(Event)>,
    ) -> Result<VcpuExit, KvmError> {
        let entered = self.enter(i);
        self.flush(sink);
        entered.map_err(KvmError::Hyp)?;
        self.finish_entered(i, sink)
    }

    /// The end of KVM_RUN: commit a pending exception or PC adjustment so userspace sees a
    /// consistent vcpu (`__kvm_adjust_pc` on the way out), vcpu_put, record the exit. A hyp
    /// panic leaves the vcpu as it was.
    fn end_run(
        &mut self,
        i: usize,
        result: Result<VcpuExit, KvmError>,
        sink: &mut Option<&mut dyn FnMut(Event)>,
    ) -> Result<VcpuExit, KvmError> {
        if matches!(result, Err(KvmError::Hyp(_))) {
            self.flush(sink);
            return result;
        }
        let kvm = &mut self.vcpus[i].kvm;
        let adjusted = kvm.arch.pending_exception.is_some() || kvm.flag(DebugFlags::INCREMENT_PC);
        let taken = adjust_pc(self.flow.as_ref(), kvm);
        self.flow.ioctl_run_out(kvm, adjusted);
        self.record_exception(i, taken);
        self.vcpu_put(i);
        match &result {
            Ok(e) => self.record(Event::UserExit {
                vcpu: i,
                exit: e.to_string(),
            }),
            Err(e) => self.record(Event::UserExit {
                vcpu: i,
                exit: format!("KVM_RUN failed: {e}"),
            }),
        }
        self.flush(sink);
        result
    }

    /// Keep the record of an exception KVM made the guest take (an injected one).
    fn record_exception(&mut self, i: usize, taken: Option<GuestEvent>) {
        if let Some(ev) = taken {
            self.vcpus[i].exceptions.push(ev.clone());
            if self.checking() {
                self.events.push(Event::Guest { vcpu: i, what: ev });
            }
        }
    }

    /// One KVM_RUN of each vcpu in `vcpus` (on distinct physical CPUs), with the first world
    /// switch of each interleaved: every vcpu enters its guest before any of them exits, as
    /// on an SMP host. Later iterations of each run proceed one vcpu at a time.
    pub fn run_concurrently(&mut self, vcpus: &[usize]) -> Result<Vec<VcpuExit>, KvmError> {
        self.run_concurrently_streamed(vcpus, None)
    }

    /// [`Vm::run_concurrently`], handing `sink` the events as they come (as
    /// [`Vm::run_streamed`] does).
    pub fn run_concurrently_streamed(
        &mut self,
        vcpus: &[usize],
        mut sink: Option<&mut dyn FnMut(Event)>,
    ) -> Result<Vec<VcpuExit>, KvmError> {
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
        let opts = RunOptions::default();
        let mut first = Vec::with_capacity(vcpus.len());
        for &i in vcpus {
            self.begin_run(i, &opts)?;
            let r = if self.vcpus[i].mp_state == MpState::Stopped {
                Some(Ok(VcpuExit::Intr))
            } else {
                let entered = self.enter(i);
                self.flush(&mut sink);
                entered.map_err(KvmError::Hyp)?;
                None
            };
            first.push(r);
        }
        let mut out = Vec::new();
        for (&i, done) in vcpus.iter().zip(first) {
            let result = match done {
                Some(r) => r,
                None => self.finish_entered(i, &mut sink),
            };
            out.push(self.end_run(i, result, &mut sink)?);
        }
        Ok(out)
    }

    /// The rest of a KVM_RUN whose vcpu has entered its guest: handle exits, re-enter, until
    /// one needs userspace (preempting and migrating as [`SimVcpu::preempt`] asks).
    fn finish_entered(
        &mut self,
        i: usize,
        sink: &mut Option<&mut dyn FnMut(Event)>,
    ) -> Result<VcpuExit, KvmError> {
        let mut budget = self.config.budget_per_run;
        let mut exits = 0u32;
        loop {
            let handled = self.exit_and_handle(i, &mut budget);
            self.flush(sink);
            match handled.map_err(KvmError::Hyp)? {
                Handled::User(e) => return Ok(e),
                Handled::Fail(e) => return Err(e),
                Handled::Resume => {
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
                    let entered = self.enter(i);
                    self.flush(sink);
                    entered.map_err(KvmError::Hyp)?;
                }
            }
        }
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
        let taken = match r {
            Ok(t) => t,
            Err(f) => return Err(self.fault(i, cpu, f, log)),
        };
        self.record_exception(i, taken);
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
            ExitReason::Hvc { .. } => self.handle_hvc(i),
            ExitReason::Irq => Handled::Resume,
            ExitReason::ProgramEnd { pc } => Handled::User(VcpuExit::ProgramEnd { pc }),
            ExitReason::Budget => Handled::User(VcpuExit::Intr),
            ExitReason::Mmio(m) => {
                // io_mem_abort: userspace emulates the access; the next KVM_RUN completes it.
                self.vcpus[i].mmio = Some(m);
                let exit = VcpuExit::Mmio {
                    phys_addr: m.addr,
                    data: m.data.unwrap_or(0).to_le_bytes(),
                    len: u32::from(m.len),
                    is_write: m.is_write(),
                };
                let held = self.vcpus[i].kvm.run_debug_arch;
                self.vcpus[i].kvm.run_debug_arch = run_union(&exit, held);
                Handled::User(exit)
            }
            ExitReason::MmioNoSyndrome { addr } => Handled::Fail(KvmError::NoSys(format!(
                "data abort at {addr:#x}, outside every memory slot, without a valid syndrome (ESR_EL2.ISV=0): KVM cannot emulate a load/store pair or DC ZVA to MMIO"
            ))),
        }
    }

    /// `handle_hvc`: `kvm_smccc_call_handler`. A system event stops every vcpu
    /// (`kvm_prepare_system_event`).
    fn handle_hvc(&mut self, i: usize) -> Handled {
        let exit = match kvm_smccc_call_handler(&mut self.vcpus[i].kvm, &self.smccc_filter) {
            HvcOutcome::Resume => return Handled::Resume,
            HvcOutcome::Forward(nr) => VcpuExit::Hypercall { nr, flags: 0 },
            HvcOutcome::SystemEvent(event_type) => {
                for v in &mut self.vcpus {
                    v.mp_state = MpState::Stopped;
                }
                VcpuExit::SystemEvent { event_type }
            }
        };
        let held = self.vcpus[i].kvm.run_debug_arch;
        self.vcpus[i].kvm.run_debug_arch = run_union(&exit, held);
        Handled::User(exit)
    }

    /// KVM_ARM_VM_SMCCC_FILTER (KVM_SET_DEVICE_ATTR on the VM): what KVM does with the HVCs
    /// of `[base, base + nr)`. EBUSY once a vcpu has run; nothing changes on error.
    pub fn set_smccc_filter(
        &mut self,
        base: u32,
        nr: u32,
        action: SmcccAction,
    ) -> Result<(), KvmError> {
        if self.ran_once {
            return Err(KvmError::Busy(
                "the SMCCC filter is set before any vcpu runs (kvm_vm_has_ran_once)".into(),
            ));
        }
        self.smccc_filter.insert(base, nr, action)
    }

    /// The VM's SMCCC filter (a VMM re-creates it on a migration's destination, before any
    /// vcpu runs there).
    pub fn smccc_filter(&self) -> &SmcccFilter {
        &self.smccc_filter
    }

    /// Install `filter` as the VM's SMCCC filter (EBUSY once a vcpu has run, as
    /// [`Vm::set_smccc_filter`]).
    pub fn set_smccc_filter_all(&mut self, filter: &SmcccFilter) -> Result<(), KvmError> {
        if self.ran_once {
            return Err(KvmError::Busy(
                "the SMCCC filter is set before any vcpu runs (kvm_vm_has_ran_once)".into(),
            ));
        }
        self.smccc_filter = filter.clone();
        Ok(())
    }

    /// KVM_SET_MP_STATE.
    pub fn set_mp_state(&mut self, i: usize, state: MpState) -> Result<(), KvmError> {
        self.vcpu_mut(i)?.mp_state = state;
        Ok(())
    }

    /// KVM_GET_MP_STATE.
    pub fn mp_state(&self, i: usize) -> Result<MpState, KvmError> {
        Ok(self.vcpu(i)?.mp_state)
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

/// What `run->debug.arch` reads after a non-debug exit: `struct kvm_run` keeps the exits in
/// one union, so hsr/hsr_high alias the first 8 bytes of the MMIO, hypercall or system-event
/// fields and far the next 8 (KVM writes `far` only for watchpoints; the other debug exits
/// leave what the union held, `held`).
fn run_union(
    exit: &VcpuExit,
    held: hypdbg_model::uapi::KvmDebugExitArch,
) -> hypdbg_model::uapi::KvmDebugExitArch {
    let (first, second) = match *exit {
        // mmio: phys_addr, then data[8] (a load's data is what userspace writes later).
        VcpuExit::Mmio {
            phys_addr,
            data,
            is_write,
            ..
        } => (
            phys_addr,
            if is_write {
                u64::from_le_bytes(data)
            } else {
                held.far
            },
        ),
        // hypercall (kvm_prepare_hypercall_exit clears it): nr, then args[0] = 0.
        VcpuExit::Hypercall { nr, .. } => (nr, 0),
        // system_event: type and ndata (1), then data[0] (the flags, 0).
        VcpuExit::SystemEvent { event_type } => (u64::from(event_type) | 1 << 32, 0),
        _ => return hypdbg_model::uapi::KvmDebugExitArch::default(),
    };
    hypdbg_model::uapi::KvmDebugExitArch {
        hsr: first as u32,
        hsr_high: (first >> 32) as u32,
        far: second,
    }
}

/// Whether `[addr, addr + len)` is guest memory a VMM can reach (a memory slot backs it).
fn check_slots(addr: u64, len: usize) -> Result<(), KvmError> {
    if is_memory(addr, len as u64) {
        return Ok(());
    }
    Err(KvmError::Fault(format!(
        "guest memory [{addr:#x}, +{len:#x}) is outside every memory slot (RAM [{RAM_BASE:#x}, {:#x}), the runtime [{RUNTIME_BASE:#x}, {:#x}))",
        RAM_BASE + RAM_SIZE,
        RUNTIME_BASE + RUNTIME_SIZE
    )))
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

/// `__kvm_adjust_pc`: take a pending exception (its record), or skip an emulated
/// instruction (`kvm_skip_instr`, which also advances the step state machine).
fn adjust_pc(flow: &dyn DynFlow, v: &mut KvmVcpu) -> Option<GuestEvent> {
    if let Some(e) = v.arch.pending_exception.take() {
        let pc = v.arch.ctxt.regs.pc;
        let ev = exception_event(v, e.esr, e.far, pc);
        take_el1_exception(v, e.esr, e.far, pc);
        v.set_flag(DebugFlags::INCREMENT_PC, false);
        return Some(ev);
    }
    if v.flag(DebugFlags::INCREMENT_PC) {
        flow.skip_instr(v);
        v.set_flag(DebugFlags::INCREMENT_PC, false);
    }
    None
}

/// The entry half of `__kvm_vcpu_run`; the exception a pending injection made the guest
/// take.
fn hyp_enter(
    flow: &dyn DynFlow,
    a: &mut AnyAccess<'_>,
    v: &mut KvmVcpu,
    host: &mut crate::context::KvmHostData,
    vhe: bool,
) -> Result<Option<GuestEvent>, HypFault> {
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
    let taken = adjust_pc(flow, v);
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
    flow.switch_to_guest(a, v, host)?;
    Ok(taken)
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
