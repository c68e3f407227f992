//! Run a scenario on the simulator, as a debugger would drive KVM.

use hypdbg_hyp::events::Event;
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::Variant;
use hypdbg_hyp::vm::{AccessMode, VcpuExit, Vm, VmConfig};
use hypdbg_hyp::workloads::CODE_BASE;
use hypdbg_model::esr::{
    ESR_ELX_EC_BREAKPT_LOW, ESR_ELX_EC_SOFTSTP_LOW, ESR_ELX_EC_WATCHPT_LOW, Esr,
};
use hypdbg_model::profiles::parse_cpu;
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_DEBUG_ARCH_HSR_HIGH_VALID, KvmGuestDebug, KvmGuestDebugArch,
};
use hypdbg_model::{DebugFeatures, El};

use super::ops::{Op, Scenario, Value};

/// Why a scenario could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// A CPU name or value that is not valid.
    #[error("cpu '{cpu}': {why}")]
    Cpu {
        /// As given.
        cpu: String,
        /// Why.
        why: String,
    },
    /// The guest program does not assemble.
    #[error("guest code: {0}")]
    Code(String),
    /// A label that the program does not define.
    #[error("action {op}: unknown label '{label}'")]
    Label {
        /// Action index.
        op: usize,
        /// The label.
        label: String,
    },
    /// The VM could not be created.
    #[error("vm: {0}")]
    Vm(String),
}

/// Everything a scenario run recorded.
#[derive(Debug)]
pub struct RunOutput {
    /// The flow's era.
    pub era: Era,
    /// What the guest sees (the first CPU's ID_AA64DFR0_EL1).
    pub features: DebugFeatures,
    /// The assembled program.
    pub program: Program,
    /// The simulator's events.
    pub events: Vec<Event>,
    /// For each event, the index of the action that produced it.
    pub op_of_event: Vec<usize>,
    /// One line per action: what happened.
    pub log: Vec<String>,
    /// What stopped the scenario early, with the action index.
    pub error: Option<(usize, String)>,
}

/// Parse the CPU list.
pub fn cpus(sc: &Scenario) -> Result<Vec<(String, DebugFeatures)>, ScenarioError> {
    let mut out = Vec::new();
    for c in &sc.cpus {
        let mut v = parse_cpu(c).map_err(|e| ScenarioError::Cpu {
            cpu: c.clone(),
            why: e.to_string(),
        })?;
        if v.len() != 1 {
            return Err(ScenarioError::Cpu {
                cpu: c.clone(),
                why: "name one CPU per entry ('all' is for --cpu)".into(),
            });
        }
        out.append(&mut v);
    }
    if out.is_empty() {
        return Err(ScenarioError::Cpu {
            cpu: String::new(),
            why: "a scenario needs at least one CPU".into(),
        });
    }
    Ok(out)
}

fn resolve(p: &Program, v: &Value, op: usize) -> Result<u64, ScenarioError> {
    match v {
        Value::Num(n) => Ok(*n),
        Value::Label(l) => {
            let (name, off) = match l.split_once('+') {
                Some((n, o)) => (n.trim(), hypdbg_model::parse_u64(o).ok()),
                None => (l.trim(), Some(0)),
            };
            match (p.label(name), off) {
                (Some(a), Some(o)) => Ok(a.wrapping_add(o)),
                _ => Err(ScenarioError::Label {
                    op,
                    label: l.clone(),
                }),
            }
        }
    }
}

/// Per-vcpu userspace debug state (what the debugger last told KVM).
#[derive(Clone, Copy, Default)]
struct Debugger {
    dbg: KvmGuestDebug,
}

/// Assemble a scenario's guest program.
pub fn assemble(sc: &Scenario) -> Result<Program, ScenarioError> {
    Program::assemble(CODE_BASE, &sc.code).map_err(|e| ScenarioError::Code(e.to_string()))
}

/// Build the VM for a scenario whose program is already assembled.
pub fn build_vm(
    sc: &Scenario,
    program: &Program,
    variant: &Variant,
    trace: bool,
) -> Result<Vm, ScenarioError> {
    let cpus = cpus(sc)?;
    let config = VmConfig {
        pcpus: cpus.iter().map(|(_, f)| *f).collect(),
        vcpus: sc.vcpus.max(1),
        mode: AccessMode::Checking,
        trace_instructions: trace,
        budget_per_run: 20_000,
    };
    let mut vm = Vm::new((variant.make)(), config).map_err(|e| ScenarioError::Vm(e.to_string()))?;
    vm.load_program(program);
    Ok(vm)
}

/// Run `sc` with `variant`'s flow.
pub fn run_scenario(
    sc: &Scenario,
    variant: &Variant,
    trace: bool,
) -> Result<RunOutput, ScenarioError> {
    let program = assemble(sc)?;
    run_assembled(sc, &program, variant, trace)
}

/// Run `sc` (whose program is `program`) with `variant`'s flow.
pub fn run_assembled(
    sc: &Scenario,
    program: &Program,
    variant: &Variant,
    trace: bool,
) -> Result<RunOutput, ScenarioError> {
    let mut vm = build_vm(sc, program, variant, trace)?;
    let features = *vm.guest_features();
    let mut out = RunOutput {
        era: vm.era(),
        features,
        program: program.clone(),
        events: Vec::new(),
        op_of_event: Vec::new(),
        log: Vec::new(),
        error: None,
    };
    let mut dbgs = vec![Debugger::default(); sc.vcpus.max(1)];
    for (i, op) in sc.ops.iter().enumerate() {
        let r = apply(&mut vm, program, &mut dbgs, op, i);
        let n = vm.events().len() - out.op_of_event.len();
        out.op_of_event.extend(std::iter::repeat_n(i, n));
        match r {
            Ok(line) => out.log.push(line),
            Err(Fail::Setup(e)) => return Err(e),
            Err(Fail::Run(msg)) => {
                out.log.push(format!("stopped: {msg}"));
                out.error = Some((i, msg));
                break;
            }
        }
    }
    out.events = vm.take_events();
    Ok(out)
}

enum Fail {
    Setup(ScenarioError),
    Run(String),
}

fn apply(
    vm: &mut Vm,
    p: &Program,
    dbgs: &mut [Debugger],
    op: &Op,
    i: usize,
) -> Result<String, Fail> {
    let vcpu_ok = |v: usize| {
        if v < dbgs.len() {
            Ok(v)
        } else {
            Err(Fail::Run(format!("no vcpu {v}")))
        }
    };
    match op {
        Op::RunUntilHvc { vcpu, imm } => {
            let v = vcpu_ok(*vcpu)?;
            run_until_hvc(vm, &mut dbgs[v], v, *imm)
        }
        Op::SetGuestDebug {
            vcpu,
            control,
            bcr,
            bvr,
            wcr,
            wvr,
        } => {
            let v = vcpu_ok(*vcpu)?;
            let mut arch = KvmGuestDebugArch::default();
            for (list, bank) in [
                (bcr, &mut arch.dbg_bcr),
                (bvr, &mut arch.dbg_bvr),
                (wcr, &mut arch.dbg_wcr),
                (wvr, &mut arch.dbg_wvr),
            ] {
                for (n, val) in list {
                    let slot = bank
                        .get_mut(*n)
                        .ok_or_else(|| Fail::Run(format!("register index {n} is above 15")))?;
                    *slot = resolve(p, val, i).map_err(Fail::Setup)?;
                }
            }
            let dbg = KvmGuestDebug {
                control: *control,
                pad: 0,
                arch,
            };
            vm.set_guest_debug(v, &dbg)
                .map_err(|e| Fail::Run(e.to_string()))?;
            dbgs[v].dbg = dbg;
            Ok(format!("KVM_SET_GUEST_DEBUG control={control:#x}"))
        }
        Op::Migrate { vcpu, cpu } => {
            let v = vcpu_ok(*vcpu)?;
            vm.set_vcpu_cpu(v, *cpu)
                .map_err(|e| Fail::Run(e.to_string()))?;
            Ok(format!("vcpu {v} -> physical CPU {cpu}"))
        }
        Op::Irq { vcpu, every } => {
            let v = vcpu_ok(*vcpu)?;
            vm.vcpu_mut(v)
                .map_err(|e| Fail::Run(e.to_string()))?
                .irq_every = *every;
            Ok(format!("host interrupt every {every:?} instructions"))
        }
        Op::RunConcurrently { vcpus } => {
            let exits = vm
                .run_concurrently(vcpus)
                .map_err(|e| Fail::Run(e.to_string()))?;
            Ok(format!(
                "concurrent KVM_RUN: {}",
                exits
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        }
    }
}

/// KVM_RUNs one action may make before the scenario is declared stuck.
pub const MAX_RUNS: u32 = 512;

/// KVM_RUN until HVC #imm, handling debug exits the way a gdb stub does.
fn run_until_hvc(vm: &mut Vm, d: &mut Debugger, v: usize, imm: u16) -> Result<String, Fail> {
    let mut debug_exits = 0u32;
    for _ in 0..MAX_RUNS {
        let exit = vm.run(v).map_err(|e| Fail::Run(e.to_string()))?;
        match exit {
            VcpuExit::Hvc { imm: got } if got == imm => {
                return Ok(format!("ran to hvc #{imm} ({debug_exits} debug exits)"));
            }
            VcpuExit::Hvc { .. } => {}
            VcpuExit::Debug { arch, flags } => {
                debug_exits += 1;
                let high = if flags & KVM_DEBUG_ARCH_HSR_HIGH_VALID != 0 {
                    u64::from(arch.hsr_high) << 32
                } else {
                    0
                };
                let esr = Esr::from_bits(u64::from(arch.hsr) | high);
                handle_debug_exit(vm, d, v, esr, arch.far)?;
            }
            other => return Err(Fail::Run(format!("expected hvc #{imm}, got {other}"))),
        }
    }
    Err(Fail::Run(format!(
        "no hvc #{imm} after {MAX_RUNS} KVM_RUNs: the guest makes no progress"
    )))
}

/// Whether the guest, on its own (no MDCR_EL2.TDE), would take this debug event: its MDSCR_EL1,
/// PSTATE.D, EL and OS lock decide (AArch64.GenerateDebugExceptionsFrom with EL1 the target).
fn guest_would_take(vm: &mut Vm, v: usize, esr: Esr) -> Result<bool, hypdbg_hyp::KvmError> {
    use hypdbg_model::SysReg;
    use hypdbg_model::esr::ESR_ELX_EC_BRK64;
    use hypdbg_model::gating::DebugContext;
    if esr.ec() == ESR_ELX_EC_BRK64 {
        return Ok(true);
    }
    let mdscr = vm.get_one_reg(v, SysReg::MdscrEl1.one_reg_id())?;
    let oslsr = vm.get_one_reg(v, SysReg::OslsrEl1.one_reg_id())?;
    let pstate = vm.get_one_reg(v, hypdbg_model::uapi::core_reg::PSTATE)?;
    let gate = DebugContext {
        el: hypdbg_model::ctrl::spsr_el(pstate),
        pstate_d: pstate & hypdbg_model::ctrl::PSR_D_BIT != 0,
        mdscr,
        mdcr_el2: 0,
        oslk: oslsr & hypdbg_model::ctrl::OSLSR_EL1_OSLK != 0,
        os_double_lock: false,
    };
    Ok(match esr.ec() {
        ESR_ELX_EC_SOFTSTP_LOW => gate.step_active(),
        _ => gate.breakpoints_enabled(),
    })
}

/// Single-step once with `step_control`, reinjecting whatever else the guest raises.
fn step_once(vm: &mut Vm, v: usize) -> Result<(), Fail> {
    let kvm = |e: hypdbg_hyp::KvmError| Fail::Run(e.to_string());
    let step = KvmGuestDebug {
        control: (GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP).bits(),
        ..Default::default()
    };
    vm.set_guest_debug(v, &step).map_err(kvm)?;
    for _ in 0..16 {
        match vm.run(v).map_err(kvm)? {
            VcpuExit::Debug { arch, .. } if (arch.hsr >> 26) as u8 == ESR_ELX_EC_SOFTSTP_LOW => {
                return Ok(());
            }
            VcpuExit::Debug { arch, .. } => {
                let esr = Esr::from_bits(arch.hsr.into());
                let far = (esr.ec() == ESR_ELX_EC_WATCHPT_LOW).then_some(arch.far);
                vm.inject_exception(v, esr.to_same_el(), far).map_err(kvm)?;
            }
            other => return Err(Fail::Run(format!("single-stepping: {other}"))),
        }
    }
    Err(Fail::Run("single-stepping made no progress".into()))
}

fn handle_debug_exit(
    vm: &mut Vm,
    d: &mut Debugger,
    v: usize,
    esr: Esr,
    far: u64,
) -> Result<(), Fail> {
    use hypdbg_model::{DbgBank, SysReg};
    let control = GuestDebugControl::from_bits_truncate(d.dbg.control);
    let ours = match esr.ec() {
        ESR_ELX_EC_SOFTSTP_LOW => control.contains(GuestDebugControl::SINGLESTEP),
        ESR_ELX_EC_BREAKPT_LOW | ESR_ELX_EC_WATCHPT_LOW => {
            control.contains(GuestDebugControl::USE_HW)
        }
        _ => false,
    };
    let kvm = |e: hypdbg_hyp::KvmError| Fail::Run(e.to_string());
    if ours && esr.ec() == ESR_ELX_EC_SOFTSTP_LOW {
        return Ok(());
    }
    if !ours && guest_would_take(vm, v, esr).map_err(kvm)? {
        // The guest's own event: give it back with the guest's (same-EL) view.
        let pstate = vm
            .get_one_reg(v, hypdbg_model::uapi::core_reg::PSTATE)
            .map_err(kvm)?;
        let from_el1 = hypdbg_model::ctrl::spsr_el(pstate) == El::El1;
        let guest_esr = if from_el1 { esr.to_same_el() } else { esr };
        let far = (esr.ec() == ESR_ELX_EC_WATCHPT_LOW).then_some(far);
        return vm.inject_exception(v, guest_esr, far).map_err(kvm);
    }
    if ours {
        // Step over our breakpoint/watchpoint: disable the hardware, single-step, re-arm.
        step_once(vm, v)?;
        let dbg = d.dbg;
        return vm.set_guest_debug(v, &dbg).map_err(kvm);
    }
    // The guest's own breakpoint/watchpoint fired only because MDCR_EL2.TDE routes it to EL2
    // (the guest has PSTATE.D set, or no KDE): step over it with the guest's registers
    // disabled, then give them back.
    let f = *vm.guest_features();
    let mut saved = Vec::new();
    for bank in [DbgBank::Bcr, DbgBank::Wcr] {
        let n = if bank.is_breakpoint() {
            f.num_brps()
        } else {
            f.num_wrps()
        };
        for i in 0..n {
            let id = SysReg::Dbg(bank, i as u8).one_reg_id();
            let val = vm.get_one_reg(v, id).map_err(kvm)?;
            if val & 1 != 0 {
                vm.set_one_reg(v, id, val & !1).map_err(kvm)?;
                saved.push((id, val));
            }
        }
    }
    step_once(vm, v)?;
    for (id, val) in saved {
        vm.set_one_reg(v, id, val).map_err(kvm)?;
    }
    let dbg = d.dbg;
    vm.set_guest_debug(v, &dbg).map_err(kvm)
}
