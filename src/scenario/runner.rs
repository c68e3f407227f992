//! Run a scenario on the simulator, as a debugger would drive KVM.
//!
//! [`Engine`] holds a VM and the userspace state around it (the raw KVM_SET_GUEST_DEBUG
//! state, a `hypdbg_host::Debugger` per vcpu once a debugger action needs one, snapshots) and
//! applies one [`Op`] at a time. [`run_assembled`] is the validator's entry point: every
//! action in order, every event kept; [`crate::scenario::play`] drives the same engine for
//! `hypdbg run`, with expectations and a streaming trace.

use std::collections::BTreeMap;

use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_host::{
    DebugSnapshot, DebugStop, DebugVcpu, Debugger, RunExit, Stop, VcpuError, 
};
use hypdbg_hyp::events::{Event, GuestEvent};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants::Variant;
use hypdbg_hyp::vm::{AccessMode, VcpuExit, Vm, VmConfig};
use hypdbg_hyp::workloads::CODE_BASE;
use hypdbg_hyp::{KvmError, workloads};
use hypdbg_model::esr::{
    ESR_ELX_EC_BREAKPT_CUR, ESR_ELX_EC_BREAKPT_LOW, ESR_ELX_EC_BRK64, ESR_ELX_EC_SOFTSTP_CUR,
    ESR_ELX_EC_SOFTSTP_LOW, ESR_ELX_EC_WATCHPT_CUR, ESR_ELX_EC_WATCHPT_LOW, Esr,
};
use hypdbg_model::profiles::parse_cpu;
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_DEBUG_ARCH_HSR_HIGH_VALID, KvmGuestDebug, KvmGuestDebugArch, core_reg,
};
use hypdbg_model::{DebugFeatures, El, SysReg};

use super::ops::{ExitKind, Op, Scenario, Value};

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

/// Parse a CPU list: one profile name or raw ID_AA64DFR0_EL1 value per entry.
pub fn parse_cpus(list: &[String]) -> Result<Vec<(String, DebugFeatures)>, ScenarioError> {
    let mut out = Vec::new();
    for c in list {
        out.push(parse_one_cpu(c)?);
    }
    if out.is_empty() {
        return Err(ScenarioError::Cpu {
            cpu: String::new(),
            why: "a scenario needs at least one CPU".into(),
        });
    }
    Ok(out)
}

/// One CPU: a profile name or a raw ID_AA64DFR0_EL1 value.
pub fn parse_one_cpu(c: &str) -> Result<(String, DebugFeatures), ScenarioError> {
    let mut v = parse_cpu(c).map_err(|e| ScenarioError::Cpu {
        cpu: c.to_string(),
        why: e.to_string(),
    })?;
    match (v.pop(), v.is_empty()) {
        (Some(one), true) => Ok(one),
        _ => Err(ScenarioError::Cpu {
            cpu: c.to_string(),
            why: "name one CPU per entry ('all' is for --cpu)".into(),
        }),
    }
}

/// Parse the scenario's CPU list.
pub fn cpus(sc: &Scenario) -> Result<Vec<(String, DebugFeatures)>, ScenarioError> {
    parse_cpus(&sc.cpus)
}

/// Labels of the program and the scenario's symbols, and how `label+8` reads.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    labels: BTreeMap<String, u64>,
}

impl Resolver {
    /// The program's labels plus `symbols` (symbols must be numbers; a symbol that is not is
    /// ignored here and reported by the file checks).
    pub fn new(p: &Program, symbols: &BTreeMap<String, Value>) -> Self {
        let mut labels = p.labels.clone();
        for (k, v) in symbols {
            if let Value::Num(n) = v {
                labels.insert(k.clone(), *n);
            }
        }
        Resolver { labels }
    }

    /// A name's address.
    pub fn name(&self, name: &str) -> Option<u64> {
        self.labels.get(name.trim()).copied()
    }

    /// The value: a number, a name, or a name `+`/`-` an offset.
    pub fn resolve(&self, v: &Value) -> Option<u64> {
        match v {
            Value::Num(n) => Some(*n),
            Value::Label(l) => {
                if let Some(a) = self.name(l) {
                    return Some(a);
                }
                let i = l.rfind(['+', '-'])?;
                let (name, off) = (&l[..i], &l[i + 1..]);
                let base = self.name(name)?;
                let off = hypdbg_model::parse_u64(off).ok()?;
                Some(if l.as_bytes()[i] == b'+' {
                    base.wrapping_add(off)
                } else {
                    base.wrapping_sub(off)
                })
            }
        }
    }

    /// An address as `label` or `label+0x8` when a label is at or just before it (within
    /// 4 KiB), for traces.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let (name, base) = self
            .labels
            .iter()
            .filter(|(_, a)| **a <= addr && addr - **a < 0x1000)
            .max_by_key(|(n, a)| (**a, std::cmp::Reverse(n.len())))?;
        Some(if *base == addr {
            name.clone()
        } else {
            format!("{name}+{:#x}", addr - base)
        })
    }
}

fn resolve(r: &Resolver, v: &Value, op: usize) -> Result<u64, ScenarioError> {
    r.resolve(v).ok_or_else(|| ScenarioError::Label {
        op,
        label: v.to_string(),
    })
}

/// A register a scenario names: a core register or a system register, as ONE_REG reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegName {
    /// x0..x30, sp, pc, pstate: the ONE_REG core id and its name.
    Core(u64, &'static str),
    /// A debug system register.
    Sys(SysReg),
}

const CORE_NAMES: [&str; 31] = [
    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
    "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
    "x28", "x29", "x30",
];

impl RegName {
    /// `x0`..`x30`, `sp`, `pc`, `pstate` (any case), or a system register ONE_REG reaches
    /// (`DBG{B,W}{C,V}R<n>_EL1`, `MDSCR_EL1`, `MDCCINT_EL1`, `OSLSR_EL1`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let low = s.trim().to_ascii_lowercase();
        match low.as_str() {
            "pc" => return Ok(RegName::Core(core_reg::PC, "pc")),
            "sp" => return Ok(RegName::Core(core_reg::SP, "sp")),
            "pstate" => return Ok(RegName::Core(core_reg::PSTATE, "pstate")),
            _ => {}
        }
        if let Some(n) = CORE_NAMES.iter().position(|c| *c == low) {
            return Ok(RegName::Core(core_reg::x(n as u8), CORE_NAMES[n]));
        }
        let hint = "ONE_REG reaches x0..x30, sp, pc, pstate, DBG{B,W}{C,V}R<n>_EL1, MDSCR_EL1, MDCCINT_EL1 and OSLSR_EL1";
        match s.parse::<SysReg>() {
            Ok(
                r @ (SysReg::Dbg(..) | SysReg::MdscrEl1 | SysReg::MdccintEl1 | SysReg::OslsrEl1),
            ) => Ok(RegName::Sys(r)),
            Ok(r) => Err(format!("{r} is not reachable through ONE_REG here: {hint}")),
            Err(_) => Err(format!("unknown register '{}': {hint}", s.trim())),
        }
    }

    /// The KVM_{GET,SET}_ONE_REG id.
    pub fn id(self) -> u64 {
        match self {
            RegName::Core(id, _) => id,
            RegName::Sys(r) => r.one_reg_id(),
        }
    }

    /// Whether a guest that sees `f` implements it.
    pub fn implemented(self, f: &DebugFeatures) -> bool {
        match self {
            RegName::Sys(SysReg::Dbg(bank, n)) => {
                let count = if bank.is_breakpoint() {
                    f.num_brps()
                } else {
                    f.num_wrps()
                };
                usize::from(n) < count
            }
            _ => true,
        }
    }
}

impl std::fmt::Display for RegName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegName::Core(_, n) => f.write_str(n),
            RegName::Sys(r) => write!(f, "{r}"),
        }
    }
}

/// How a running action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// What kind of exit (or debugger stop).
    pub kind: ExitKind,
    /// ESR_EL2 of a debug exit.
    pub esr: Option<Esr>,
    /// FAR of a debug exit.
    pub far: Option<u64>,
    /// The HVC immediate.
    pub imm: Option<u16>,
    /// The debugger stop, when the debugger decided.
    pub stop: Option<DebugStop>,
}

fn debug_kind(ec: u8) -> ExitKind {
    match ec {
        ESR_ELX_EC_BREAKPT_LOW | ESR_ELX_EC_BREAKPT_CUR => ExitKind::Breakpoint,
        ESR_ELX_EC_SOFTSTP_LOW | ESR_ELX_EC_SOFTSTP_CUR => ExitKind::Step,
        ESR_ELX_EC_WATCHPT_LOW | ESR_ELX_EC_WATCHPT_CUR => ExitKind::Watchpoint,
        ESR_ELX_EC_BRK64 => ExitKind::Brk,
        _ => ExitKind::Debug,
    }
}

fn exit_esr(arch: &hypdbg_model::uapi::KvmDebugExitArch, flags: u32) -> Esr {
    let high = if flags & KVM_DEBUG_ARCH_HSR_HIGH_VALID != 0 {
        u64::from(arch.hsr_high) << 32
    } else {
        0
    };
    Esr::from_bits(u64::from(arch.hsr) | high)
}

impl ExitInfo {
    /// A raw KVM_RUN exit.
    pub fn of_exit(e: &VcpuExit) -> Self {
        let mut x = ExitInfo {
            kind: ExitKind::Debug,
            esr: None,
            far: None,
            imm: None,
            stop: None,
        };
        match *e {
            VcpuExit::Debug { arch, flags } => {
                let esr = exit_esr(&arch, flags);
                x.kind = debug_kind(esr.ec());
                x.esr = Some(esr);
                x.far = Some(arch.far);
            }
            VcpuExit::Hvc { imm } => {
                x.kind = ExitKind::Hvc;
                x.imm = Some(imm);
            }
            VcpuExit::ProgramEnd { .. } => x.kind = ExitKind::ProgramEnd,
            VcpuExit::Intr => x.kind = ExitKind::Intr,
            VcpuExit::GuestAbort { .. } => x.kind = ExitKind::GuestAbort,
        }
        x
    }

    /// A debugger's stop, with the raw exit that produced it.
    fn of_stop(stop: &Stop, raw: Option<&VcpuExit>) -> Self {
        let mut x = raw.map_or(
            ExitInfo {
                kind: ExitKind::Debug,
                esr: None,
                far: None,
                imm: None,
                stop: None,
            },
            ExitInfo::of_exit,
        );
        if let Stop::Debug(d) = stop {
            x.stop = Some(*d);
            x.kind = match d {
                DebugStop::Step { .. } => ExitKind::Step,
                DebugStop::SwBreakpoint { .. } => ExitKind::Brk,
                DebugStop::HwBreakpoint { .. } => ExitKind::Breakpoint,
                DebugStop::Watchpoint { far, .. } => {
                    x.far = Some(*far);
                    ExitKind::Watchpoint
                }
                _ => ExitKind::Debug,
            };
        }
        x
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ExitKind::Hvc => write!(f, "hvc #{}", self.imm.unwrap_or(0)),
            k if k.is_debug() => {
                write!(f, "{k}")?;
                if let Some(e) = self.esr {
                    write!(
                        f,
                        " (EC {:#x} {})",
                        e.ec(),
                        hypdbg_model::esr::ec_name(e.ec())
                    )?;
                }
                if k == ExitKind::Watchpoint
                    && let Some(a) = self.far
                {
                    write!(f, " far={a:#x}")?;
                }
                Ok(())
            }
            k => write!(f, "{k}"),
        }
    }
}

/// What one action did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// One line, in words.
    pub text: String,
    /// How a running action ended.
    pub exit: Option<ExitInfo>,
    /// Debug stops passed on the way.
    pub stops: u64,
    /// The value a `get_one_reg` read.
    pub value: Option<u64>,
}

impl Outcome {
    fn text(text: String) -> Self {
        Outcome {
            text,
            ..Outcome::default()
        }
    }
}

/// KVM_RUN returns, by kind, over a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExitCounts {
    /// Every KVM_RUN that returned.
    pub total: u64,
    /// KVM_EXIT_DEBUG.
    pub debug: u64,
    /// HVCs for userspace.
    pub hvc: u64,
    /// KVM_EXIT_INTR.
    pub intr: u64,
    /// Program ends.
    pub program_end: u64,
    /// Unhandled guest exceptions.
    pub guest_abort: u64,
}

impl ExitCounts {
    fn record(&mut self, e: &VcpuExit) {
        self.total += 1;
        match e {
            VcpuExit::Debug { .. } => self.debug += 1,
            VcpuExit::Hvc { .. } => self.hvc += 1,
            VcpuExit::Intr => self.intr += 1,
            VcpuExit::ProgramEnd { .. } => self.program_end += 1,
            VcpuExit::GuestAbort { .. } => self.guest_abort += 1,
        }
    }
}

/// Per-vcpu userspace debug state of the raw actions (what `set_guest_debug` last told KVM).
#[derive(Clone, Copy, Default)]
struct RawDebug {
    dbg: KvmGuestDebug,
}

/// Why an action failed.
#[derive(Debug)]
pub enum Fail {
    /// The scenario cannot run at all (a label the program lacks, ...).
    Setup(ScenarioError),
    /// The action failed (KVM refused, the debugger refused, the guest made no progress).
    Run(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Setup(e) => write!(f, "{e}"),
            Fail::Run(m) => f.write_str(m),
        }
    }
}

fn kvm(e: KvmError) -> Fail {
    Fail::Run(e.to_string())
}

fn run_err(e: impl std::fmt::Display) -> Fail {
    Fail::Run(e.to_string())
}

/// Assemble a scenario's guest program.
pub fn assemble(sc: &Scenario) -> Result<Program, ScenarioError> {
    Program::assemble(CODE_BASE, &sc.code).map_err(|e| ScenarioError::Code(e.to_string()))
}

/// Guest instructions per KVM_RUN unless the scenario says.
pub const DEFAULT_BUDGET: u64 = 20_000;

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
        budget_per_run: sc.budget.unwrap_or(DEFAULT_BUDGET),
    };
    let mut vm = Vm::new((variant.make)(), config).map_err(|e| ScenarioError::Vm(e.to_string()))?;
    for (i, &cpu) in sc.vcpu_cpus.iter().enumerate() {
        vm.set_vcpu_cpu(i, cpu)
            .map_err(|e| ScenarioError::Vm(format!("vcpu_cpus[{i}]: {e}")))?;
    }
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

/// Run `sc` (whose program is `program`) with `variant`'s flow: every action in order (a
/// `repeat` expanded in place, its events attributed to the `repeat`), every event kept.
/// Expectations are not evaluated here (see [`crate::scenario::play`]).
pub fn run_assembled(
    sc: &Scenario,
    program: &Program,
    variant: &Variant,
    trace: bool,
) -> Result<RunOutput, ScenarioError> {
    let mut engine = Engine::new(sc, program, variant, trace)?;
    let features = *engine.vm().guest_features();
    let mut out = RunOutput {
        era: engine.vm().era(),
        features,
        program: program.clone(),
        events: Vec::new(),
        op_of_event: Vec::new(),
        log: Vec::new(),
        error: None,
    };
    for (i, op) in sc.ops.iter().enumerate() {
        let r = engine.apply_tree(op, i);
        let n = engine.events_len() - out.op_of_event.len();
        out.op_of_event.extend(std::iter::repeat_n(i, n));
        match r {
            Ok(o) => out.log.push(o.text),
            Err(Fail::Setup(e)) => return Err(e),
            Err(Fail::Run(msg)) => {
                out.log.push(format!("stopped: {msg}"));
                out.error = Some((i, msg));
                break;
            }
        }
    }
    out.events = engine.take_events();
    Ok(out)
}

/// A vcpu of the engine's VM as the host crate's debugger sees it ([`VmVcpu`]), remembering
/// the last raw exit (so that a debugger stop can be reported with its syndrome) and counting
/// exits.
struct Tap<'v> {
    vcpu: VmVcpu<'v>,
    last: Option<VcpuExit>,
    counts: &'v mut ExitCounts,
}

impl<'v> Tap<'v> {
    fn new(vm: &'v mut Vm, index: usize, counts: &'v mut ExitCounts) -> Result<Self, Fail> {
        Ok(Tap {
            vcpu: VmVcpu::new(vm, index).map_err(run_err)?,
            last: None,
            counts,
        })
    }
}

impl DebugVcpu for Tap<'_> {
    fn check_extension(&self, cap: u32) -> i64 {
        self.vcpu.check_extension(cap)
    }

    fn set_guest_debug(&mut self, dbg: &KvmGuestDebug) -> Result<(), VcpuError> {
        self.vcpu.set_guest_debug(dbg)
    }

    fn run(&mut self) -> Result<RunExit, VcpuError> {
        let exit = self.vcpu.run_raw()?;
        self.counts.record(&exit);
        self.last = Some(exit);
        Ok(exit.into())
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

/// Iterations a `run` with `until_hvc` may take before the scenario is declared stuck.
pub const MAX_RUN_ITERATIONS: u32 = 100_000;

/// KVM_EXIT_INTRs (full instruction budgets) a `run` with `until_hvc` may pass: a guest
/// that loops without reaching its HVC fails fast.
pub const MAX_BUDGETS: u32 = 64;

fn out_of_budget(until: Option<u16>) -> Fail {
    Fail::Run(format!(
        "no hvc #{} after {MAX_BUDGETS} KVM_RUNs that each used up the instruction budget (KVM_EXIT_INTR): the guest loops without reaching it",
        until.unwrap_or(0)
    ))
}

/// A VM and the userspace around it, applying actions.
pub struct Engine<'a> {
    vm: Vm,
    program: &'a Program,
    variant: &'a Variant,
    config: VmConfig,
    resolver: Resolver,
    raw: Vec<RawDebug>,
    debuggers: Vec<Option<Debugger>>,
    stepping: Vec<bool>,
    snapshots: BTreeMap<String, DebugSnapshot>,
    /// Exceptions the guest took on VMs it migrated away from, per vcpu.
    earlier_exceptions: Vec<Vec<GuestEvent>>,
    /// Events of VMs migrated away from, not yet taken.
    earlier_events: Vec<Event>,
    /// KVM_RUN returns so far.
    pub exits: ExitCounts,
}

impl<'a> Engine<'a> {
    /// The VM of `sc` with `program` loaded, running `variant`'s flow.
    pub fn new(
        sc: &Scenario,
        program: &'a Program,
        variant: &'a Variant,
        trace: bool,
    ) -> Result<Self, ScenarioError> {
        let vm = build_vm(sc, program, variant, trace)?;
        let config = VmConfig {
            pcpus: (0..vm.nr_pcpus())
                .filter_map(|i| vm.pcpu(i).map(|p| *p.features()))
                .collect(),
            vcpus: sc.vcpus.max(1),
            mode: AccessMode::Checking,
            trace_instructions: trace,
            budget_per_run: sc.budget.unwrap_or(DEFAULT_BUDGET),
        };
        let n = config.vcpus;
        Ok(Engine {
            vm,
            program,
            variant,
            config,
            resolver: Resolver::new(program, &sc.symbols),
            raw: vec![RawDebug::default(); n],
            debuggers: vec![None; n],
            stepping: vec![false; n],
            snapshots: BTreeMap::new(),
            earlier_exceptions: vec![Vec::new(); n],
            earlier_events: Vec::new(),
            exits: ExitCounts::default(),
        })
    }

    /// The VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// The VM, mutable (reading registers for expectations).
    pub fn vm_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }

    /// Labels and symbols.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The program.
    pub fn program(&self) -> &Program {
        self.program
    }

    /// Events recorded and not yet taken.
    pub fn events_len(&self) -> usize {
        self.earlier_events.len() + self.vm.events().len()
    }

    /// Take the events recorded so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        if self.earlier_events.is_empty() {
            self.vm.take_events()
        } else {
            let mut e = std::mem::take(&mut self.earlier_events);
            e.extend(self.vm.take_events());
            e
        }
    }

    /// Every exception vcpu `v`'s guest handler took since the start (across migrations).
    pub fn exceptions(&self, v: usize) -> Vec<GuestEvent> {
        let mut all = self.earlier_exceptions.get(v).cloned().unwrap_or_default();
        if let Ok(c) = self.vm.vcpu(v) {
            all.extend(c.exceptions.iter().cloned());
        }
        all
    }

    /// How many exceptions vcpu `v`'s guest took since the start.
    pub fn exception_count(&self, v: usize) -> usize {
        self.earlier_exceptions.get(v).map_or(0, Vec::len)
            + self.vm.vcpu(v).map_or(0, |c| c.exceptions.len())
    }

    fn vcpu_ok(&self, v: usize) -> Result<usize, Fail> {
        if v < self.raw.len() {
            Ok(v)
        } else {
            Err(Fail::Run(format!("no vcpu {v}")))
        }
    }

    fn addr(&self, v: &Value, i: usize) -> Result<u64, Fail> {
        resolve(&self.resolver, v, i).map_err(Fail::Setup)
    }

    fn describe(&self, a: u64) -> String {
        match self.resolver.symbolize(a) {
            Some(s) => format!("{a:#x} <{s}>"),
            None => format!("{a:#x}"),
        }
    }

    /// Apply an action, expanding `repeat` in place.
    pub fn apply_tree(&mut self, op: &Op, i: usize) -> Result<Outcome, Fail> {
        match op {
            Op::Repeat { times, ops } => {
                let mut last = Outcome::text(String::new());
                for _ in 0..*times {
                    for o in ops {
                        last = self.apply_tree(o, i)?;
                    }
                }
                Ok(Outcome::text(format!(
                    "repeated {} action(s) {times} times; last: {}",
                    ops.len(),
                    last.text
                )))
            }
            other => self.apply(other, i),
        }
    }

    /// Apply one action (`i`: its index, for error messages). `repeat` is the caller's.
    pub fn apply(&mut self, op: &Op, i: usize) -> Result<Outcome, Fail> {
        match op {
            Op::RunUntilHvc { vcpu, imm, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let mut d = self.raw[v];
                let r = run_until_hvc(&mut self.vm, &mut d, v, *imm, &mut self.exits);
                self.raw[v] = d;
                let (text, stops) = r?;
                Ok(Outcome {
                    text,
                    exit: Some(ExitInfo::of_exit(&VcpuExit::Hvc { imm: *imm })),
                    stops,
                    value: None,
                })
            }
            Op::SetGuestDebug {
                vcpu,
                control,
                bcr,
                bvr,
                wcr,
                wvr,
                ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
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
                        *slot = resolve(&self.resolver, val, i).map_err(Fail::Setup)?;
                    }
                }
                let dbg = KvmGuestDebug {
                    control: *control,
                    pad: 0,
                    arch,
                };
                self.vm.set_guest_debug(v, &dbg).map_err(kvm)?;
                self.raw[v].dbg = dbg;
                Ok(Outcome::text(format!(
                    "KVM_SET_GUEST_DEBUG control={control:#x}"
                )))
            }
            Op::Migrate { vcpu, cpu, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.vm.set_vcpu_cpu(v, *cpu).map_err(kvm)?;
                Ok(Outcome::text(format!("vcpu {v} -> physical CPU {cpu}")))
            }
            Op::Irq { vcpu, every, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.vm.vcpu_mut(v).map_err(kvm)?.irq_every = *every;
                Ok(Outcome::text(format!(
                    "host interrupt every {every:?} instructions"
                )))
            }
            Op::RunConcurrently { vcpus, .. } => {
                let exits = self.vm.run_concurrently(vcpus).map_err(kvm)?;
                for e in &exits {
                    self.exits.record(e);
                }
                Ok(Outcome::text(format!(
                    "concurrent KVM_RUN: {}",
                    exits
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )))
            }
            Op::Run {
                vcpu,
                until_hvc,
                count,
                ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.run(v, *until_hvc, count.unwrap_or(1))
            }
            Op::KvmRun { vcpu, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let e = self.vm.run(v).map_err(kvm)?;
                self.exits.record(&e);
                Ok(Outcome {
                    text: format!("KVM_RUN: {}", self.exit_words(&e)),
                    exit: Some(ExitInfo::of_exit(&e)),
                    ..Outcome::default()
                })
            }
            Op::Step { vcpu, count, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.ensure_debugger(v)?;
                let mut last = None;
                for _ in 0..count.unwrap_or(1) {
                    last = Some(self.with_debugger(v, |d, t| d.step(t))?);
                }
                let (stop, raw) = last.ok_or_else(|| Fail::Run("step count 0".into()))?;
                Ok(self.stop_outcome("stepi", &stop, raw.as_ref(), 0))
            }
            Op::SingleStep { vcpu, on, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                self.ensure_debugger(v)?;
                self.stepping[v] = *on;
                Ok(Outcome::text(format!(
                    "single-step {}",
                    if *on { "on" } else { "off" }
                )))
            }
            Op::Break { vcpu, addr, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let a = self.addr(addr, i)?;
                let d = self.ensure_debugger(v)?;
                let slot = d.hw_mut().insert_breakpoint(a).map_err(run_err)?;
                Ok(Outcome::text(format!(
                    "hardware breakpoint at {} in slot {slot}",
                    self.describe(a)
                )))
            }
            Op::DeleteBreak { vcpu, addr, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let a = self.addr(addr, i)?;
                let d = self.ensure_debugger(v)?;
                let slot = d.hw_mut().remove_breakpoint(a).map_err(run_err)?;
                Ok(Outcome::text(format!(
                    "removed the hardware breakpoint at {} (slot {slot})",
                    self.describe(a)
                )))
            }
            Op::Watch {
                vcpu,
                addr,
                len,
                access,
                ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                let a = self.addr(addr, i)?;
                let d = self.ensure_debugger(v)?;
                let req = hypdbg_host::WatchRequest::new(a, *len, *access);
                let slots = d.hw_mut().insert_watchpoint(req).map_err(run_err)?;
                let arch = d.hw().arch();
                let enc: Vec<String> = slots
                    .iter()
                    .map(|&n| {
                        format!(
                            "slot {n}: DBGWCR={:#x} DBGWVR={:#x}",
                            arch.dbg_wcr[n], arch.dbg_wvr[n]
                        )
                    })
                    .collect();
                Ok(Outcome::text(format!(
                    "watch {access} of {len} byte(s) at {}: {}",
                    self.describe(a),
                    enc.join(", ")
                )))
            }
            Op::DeleteWatch {
                vcpu,
                addr,
                len,
                access,
                ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                let a = self.addr(addr, i)?;
                let d = self.ensure_debugger(v)?;
                let req = hypdbg_host::WatchRequest::new(a, *len, *access);
                let slots = d.hw_mut().remove_watchpoint(req).map_err(run_err)?;
                Ok(Outcome::text(format!(
                    "removed the {access} watch of {len} byte(s) at {} (slots {slots:?})",
                    self.describe(a)
                )))
            }
            Op::SwBreak { vcpu, addr, .. } | Op::DeleteSwBreak { vcpu, addr, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let a = self.addr(addr, i)?;
                self.ensure_debugger(v)?;
                let what = if matches!(op, Op::SwBreak { .. }) {
                    self.with_debugger(v, |d, t| d.insert_sw_breakpoint(t, a))?;
                    "software breakpoint (BRK #0) at"
                } else {
                    self.with_debugger(v, |d, t| d.remove_sw_breakpoint(t, a))?;
                    "removed the software breakpoint at"
                };
                Ok(Outcome::text(format!("{what} {}", self.describe(a))))
            }
            Op::Detach { vcpu, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                if self.debuggers[v].is_some() {
                    self.with_debugger(v, |d, t| d.detach(t))?;
                }
                self.debuggers[v] = None;
                self.stepping[v] = false;
                Ok(Outcome::text("debugger detached".into()))
            }
            Op::Snapshot { vcpu, name, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let mut tap = Tap::new(&mut self.vm, v, &mut self.exits)?;
                let s = DebugSnapshot::save(&mut tap).map_err(run_err)?;
                let text = format!(
                    "snapshot '{name}' of vcpu {v}: {} breakpoint and {} watchpoint register pairs, MDSCR_EL1={:#x}, MDCCINT_EL1={:#x}, OSLSR_EL1={:#x}",
                    s.bcr.len(),
                    s.wcr.len(),
                    s.mdscr_el1,
                    s.mdccint_el1,
                    s.oslsr_el1
                );
                self.snapshots.insert(name.clone(), s);
                Ok(Outcome::text(text))
            }
            Op::Restore { vcpu, name, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let s = self
                    .snapshots
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Fail::Run(format!("no snapshot named '{name}'")))?;
                let mut tap = Tap::new(&mut self.vm, v, &mut self.exits)?;
                s.restore(&mut tap).map_err(run_err)?;
                Ok(Outcome::text(format!(
                    "restored snapshot '{name}' into vcpu {v}"
                )))
            }
            Op::MigrateVm { cpus, .. } => self.migrate_vm(cpus.as_deref()),
            Op::SetOneReg {
                vcpu, reg, value, ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                let r = RegName::parse(reg).map_err(Fail::Run)?;
                let val = self.addr(value, i)?;
                self.vm.set_one_reg(v, r.id(), val).map_err(kvm)?;
                Ok(Outcome::text(format!("KVM_SET_ONE_REG {r} = {val:#x}")))
            }
            Op::GetOneReg { vcpu, reg, .. } => {
                let v = self.vcpu_ok(*vcpu)?;
                let r = RegName::parse(reg).map_err(Fail::Run)?;
                let val = self.vm.get_one_reg(v, r.id()).map_err(kvm)?;
                Ok(Outcome {
                    text: format!("KVM_GET_ONE_REG {r} -> {val:#x}"),
                    value: Some(val),
                    ..Outcome::default()
                })
            }
            Op::WriteMemory { addr, bytes, .. } => {
                let a = self.addr(addr, i)?;
                self.vm.memory_mut().write(a, bytes);
                Ok(Outcome::text(format!(
                    "wrote {} byte(s) at {}",
                    bytes.len(),
                    self.describe(a)
                )))
            }
            Op::Preempt {
                vcpu, after, cpu, ..
            } => {
                let v = self.vcpu_ok(*vcpu)?;
                if *cpu >= self.vm.nr_pcpus() {
                    return Err(Fail::Run(format!("no physical CPU {cpu}")));
                }
                self.vm.vcpu_mut(v).map_err(kvm)?.preempt = Some((*after, *cpu));
                Ok(Outcome::text(format!(
                    "vcpu {v} will be preempted after {after} in-kernel exits and move to physical CPU {cpu}"
                )))
            }
            Op::Check { .. } => Ok(Outcome::text("check".into())),
            Op::Repeat { .. } => self.apply_tree(op, i),
        }
    }

    fn exit_words(&self, e: &VcpuExit) -> String {
        match e {
            VcpuExit::ProgramEnd { pc } => format!("program end at {}", self.describe(*pc)),
            other => other.to_string(),
        }
    }

    fn ensure_debugger(&mut self, v: usize) -> Result<&mut Debugger, Fail> {
        if self.debuggers[v].is_none() {
            let tap = Tap::new(&mut self.vm, v, &mut self.exits)?;
            let d = Debugger::new(&tap).map_err(run_err)?;
            self.debuggers[v] = Some(d);
        }
        self.debuggers[v]
            .as_mut()
            .ok_or_else(|| Fail::Run(format!("no debugger on vcpu {v}")))
    }

    /// Call the vcpu's debugger with the vcpu; returns the result and the last raw exit.
    fn with_debugger<T, E: std::fmt::Display>(
        &mut self,
        v: usize,
        f: impl FnOnce(&mut Debugger, &mut Tap<'_>) -> Result<T, E>,
    ) -> Result<(T, Option<VcpuExit>), Fail> {
        let Engine {
            vm,
            debuggers,
            exits,
            ..
        } = self;
        let d = debuggers[v]
            .as_mut()
            .ok_or_else(|| Fail::Run(format!("no debugger on vcpu {v}")))?;
        let mut tap = Tap::new(vm, v, exits)?;
        let r = f(d, &mut tap).map_err(run_err)?;
        Ok((r, tap.last))
    }

    fn stop_outcome(&self, what: &str, stop: &Stop, raw: Option<&VcpuExit>, stops: u64) -> Outcome {
        let exit = ExitInfo::of_stop(stop, raw);
        let words = match stop {
            Stop::Debug(d) => match d {
                DebugStop::Step { pc } => format!("step to {}", self.describe(*pc)),
                DebugStop::SwBreakpoint { pc } => {
                    format!("software breakpoint at {}", self.describe(*pc))
                }
                DebugStop::HwBreakpoint { pc, slot } => {
                    format!("hardware breakpoint {slot} at {}", self.describe(*pc))
                }
                DebugStop::Watchpoint {
                    pc,
                    far,
                    request,
                    slot,
                    is_write,
                    ..
                } => format!(
                    "watchpoint {slot} ({request}) hit by a {} to {far:#x} at {}",
                    if *is_write { "store" } else { "load" },
                    self.describe(*pc)
                ),
                other => format!("{other:?}"),
            },
            Stop::Exit(_) => match raw {
                Some(e) => self.exit_words(e),
                None => "exit".into(),
            },
        };
        let passed = if stops > 0 {
            format!(" ({stops} stop(s) passed)")
        } else {
            String::new()
        };
        Outcome {
            text: format!("{what}: {words}{passed}"),
            exit: Some(exit),
            stops,
            value: None,
        }
    }

    /// `run`: through the debugger if one is attached, else raw KVM_RUNs.
    fn run(&mut self, v: usize, until: Option<u16>, count: u32) -> Result<Outcome, Fail> {
        if self.debuggers[v].is_none() {
            return self.run_raw(v, until, count);
        }
        let stepping = self.stepping[v];
        let what = if stepping { "stepi" } else { "continue" };
        let mut stops = 0u64;
        let mut last = None;
        let mut budgets = 0u32;
        for _ in 0..count {
            let mut done = false;
            for _ in 0..MAX_RUN_ITERATIONS {
                let (stop, raw) =
                    self.with_debugger(v, |d, t| if stepping { d.step(t) } else { d.cont(t) })?;
                let end = match (&stop, until) {
                    (_, None) => true,
                    (Stop::Exit(RunExit::Hypercall { imm }), Some(n)) => *imm == n,
                    (Stop::Exit(_), Some(_)) if matches!(raw, Some(VcpuExit::Intr)) => {
                        budgets += 1;
                        if budgets >= MAX_BUDGETS {
                            return Err(out_of_budget(until));
                        }
                        false
                    }
                    (Stop::Exit(_), Some(_)) => true,
                    (Stop::Debug(_), Some(_)) => {
                        stops += 1;
                        false
                    }
                };
                last = Some((stop, raw));
                if end {
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(Fail::Run(format!(
                    "no hvc #{} after {MAX_RUN_ITERATIONS} stops: the guest makes no progress",
                    until.unwrap_or(0)
                )));
            }
        }
        let (stop, raw) = last.ok_or_else(|| Fail::Run("run count 0".into()))?;
        Ok(self.stop_outcome(what, &stop, raw.as_ref(), stops))
    }

    fn run_raw(&mut self, v: usize, until: Option<u16>, count: u32) -> Result<Outcome, Fail> {
        let mut stops = 0u64;
        let mut last = None;
        let mut budgets = 0u32;
        for _ in 0..count {
            let mut done = false;
            for _ in 0..MAX_RUN_ITERATIONS {
                let e = self.vm.run(v).map_err(kvm)?;
                self.exits.record(&e);
                let end = match (e, until) {
                    (_, None) => true,
                    (VcpuExit::Hvc { imm }, Some(n)) => imm == n,
                    (VcpuExit::Intr, Some(_)) => {
                        budgets += 1;
                        if budgets >= MAX_BUDGETS {
                            return Err(out_of_budget(until));
                        }
                        false
                    }
                    (VcpuExit::Debug { .. }, Some(_)) => {
                        stops += 1;
                        false
                    }
                    (_, Some(_)) => true,
                };
                last = Some(e);
                if end {
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(Fail::Run(format!(
                    "no hvc #{} after {MAX_RUN_ITERATIONS} KVM_RUNs: the guest makes no progress",
                    until.unwrap_or(0)
                )));
            }
        }
        let e = last.ok_or_else(|| Fail::Run("run count 0".into()))?;
        let passed = if stops > 0 {
            format!(" ({stops} debug exit(s) passed)")
        } else {
            String::new()
        };
        Ok(Outcome {
            text: format!("KVM_RUN: {}{passed}", self.exit_words(&e)),
            exit: Some(ExitInfo::of_exit(&e)),
            stops,
            value: None,
        })
    }

    /// A fresh VM of the same flow receives the memory and every vcpu's registers.
    fn migrate_vm(&mut self, cpus: Option<&[String]>) -> Result<Outcome, Fail> {
        let mut config = self.config.clone();
        if let Some(list) = cpus {
            let parsed = parse_cpus(list).map_err(Fail::Setup)?;
            config.pcpus = parsed.iter().map(|(_, f)| *f).collect();
        }
        let mut dst = Vm::new((self.variant.make)(), config.clone()).map_err(kvm)?;
        *dst.memory_mut() = self.vm.memory().clone();
        let src_features = *self.vm.guest_features();
        let ids = workloads::migration_registers(&src_features);
        for v in 0..config.vcpus {
            for &id in &ids {
                let val = self.vm.get_one_reg(v, id).map_err(kvm)?;
                dst.set_one_reg(v, id, val).map_err(kvm)?;
            }
            let src = self.vm.vcpu(v).map_err(kvm)?;
            let (irq, cpu) = (src.irq_every, src.cpu);
            self.earlier_exceptions[v].extend(src.exceptions.iter().cloned());
            dst.vcpu_mut(v).map_err(kvm)?.irq_every = irq;
            if cpu < dst.nr_pcpus() {
                dst.set_vcpu_cpu(v, cpu).map_err(kvm)?;
            }
        }
        self.earlier_events.extend(self.vm.take_events());
        let n = ids.len();
        self.vm = dst;
        self.config = config;
        Ok(Outcome::text(format!(
            "migrated the VM: {n} registers per vcpu through KVM_GET/SET_ONE_REG, guest memory copied, onto {} physical CPU(s)",
            self.vm.nr_pcpus()
        )))
    }
}

/// KVM_RUNs one action may make before the scenario is declared stuck.
pub const MAX_RUNS: u32 = 512;

/// KVM_RUN until HVC #imm, handling debug exits the way a gdb stub does.
fn run_until_hvc(
    vm: &mut Vm,
    d: &mut RawDebug,
    v: usize,
    imm: u16,
    counts: &mut ExitCounts,
) -> Result<(String, u64), Fail> {
    let mut debug_exits = 0u32;
    for _ in 0..MAX_RUNS {
        let exit = vm.run(v).map_err(|e| Fail::Run(e.to_string()))?;
        counts.record(&exit);
        match exit {
            VcpuExit::Hvc { imm: got } if got == imm => {
                return Ok((
                    format!("ran to hvc #{imm} ({debug_exits} debug exits)"),
                    u64::from(debug_exits),
                ));
            }
            VcpuExit::Hvc { .. } => {}
            VcpuExit::Debug { arch, flags } => {
                debug_exits += 1;
                let esr = exit_esr(&arch, flags);
                handle_debug_exit(vm, d, v, esr, arch.far, counts)?;
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
    use hypdbg_model::gating::DebugContext;
    if esr.ec() == ESR_ELX_EC_BRK64 {
        return Ok(true);
    }
    let mdscr = vm.get_one_reg(v, SysReg::MdscrEl1.one_reg_id())?;
    let oslsr = vm.get_one_reg(v, SysReg::OslsrEl1.one_reg_id())?;
    let pstate = vm.get_one_reg(v, core_reg::PSTATE)?;
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
fn step_once(vm: &mut Vm, v: usize, counts: &mut ExitCounts) -> Result<(), Fail> {
    let step = KvmGuestDebug {
        control: (GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP).bits(),
        ..Default::default()
    };
    vm.set_guest_debug(v, &step).map_err(kvm)?;
    for _ in 0..16 {
        let exit = vm.run(v).map_err(kvm)?;
        counts.record(&exit);
        match exit {
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
    d: &mut RawDebug,
    v: usize,
    esr: Esr,
    far: u64,
    counts: &mut ExitCounts,
) -> Result<(), Fail> {
    use hypdbg_model::DbgBank;
    let control = GuestDebugControl::from_bits_truncate(d.dbg.control);
    let ours = match esr.ec() {
        ESR_ELX_EC_SOFTSTP_LOW => control.contains(GuestDebugControl::SINGLESTEP),
        ESR_ELX_EC_BREAKPT_LOW | ESR_ELX_EC_WATCHPT_LOW => {
            control.contains(GuestDebugControl::USE_HW)
        }
        _ => false,
    };
    if ours && esr.ec() == ESR_ELX_EC_SOFTSTP_LOW {
        return Ok(());
    }
    if !ours && guest_would_take(vm, v, esr).map_err(kvm)? {
        // The guest's own event: give it back with the guest's (same-EL) view.
        let pstate = vm.get_one_reg(v, core_reg::PSTATE).map_err(kvm)?;
        let from_el1 = hypdbg_model::ctrl::spsr_el(pstate) == El::El1;
        let guest_esr = if from_el1 { esr.to_same_el() } else { esr };
        let far = (esr.ec() == ESR_ELX_EC_WATCHPT_LOW).then_some(far);
        return vm.inject_exception(v, guest_esr, far).map_err(kvm);
    }
    if ours {
        // Step over our breakpoint/watchpoint: disable the hardware, single-step, re-arm.
        step_once(vm, v, counts)?;
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
    step_once(vm, v, counts)?;
    for (id, val) in saved {
        vm.set_one_reg(v, id, val).map_err(kvm)?;
    }
    let dbg = d.dbg;
    vm.set_guest_debug(v, &dbg).map_err(kvm)
}
