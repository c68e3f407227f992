//! What a scenario says: the VM, the guest, the userspace actions and what to expect of them.
//!
//! These are the types both a scenario file (`hypdbg run FILE`, see [`crate::scenario::source`])
//! and the validator's generated scenarios (`validate::sweep`) use. Every action is a
//! TOML table with a `do` key naming it; every action but `repeat` may carry an `expect`
//! table ([`Expect`]).

use std::collections::BTreeMap;
use std::fmt;

use hypdbg_host::WatchAccess;
use hypdbg_model::profiles::CpuSpec;
use hypdbg_model::uapi::GuestDebugControl;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A number, or a label of the guest program (`"label"`, `"label+8"`, `"label-4"`) or a
/// name of the scenario's `symbols` table.
///
/// TOML integers stop at `i64::MAX`: write larger values (kernel addresses) as strings,
/// `"0xffff800010000000"`; a string that reads as a number is a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Num(u64),
    /// A label, optionally `+offset` or `-offset`.
    Label(String),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Num(n) if *n <= i64::MAX as u64 => s.serialize_u64(*n),
            Value::Num(n) => s.collect_str(&format_args!("{n:#x}")),
            Value::Label(l) => s.serialize_str(l),
        }
    }
}

struct ValueVisitor;

impl Visitor<'_> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a label (\"name\", \"name+8\")")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Num(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::Num)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &"a non-negative number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        let t = v.trim();
        if t.is_empty() {
            return Err(E::invalid_value(de::Unexpected::Str(v), &self));
        }
        Ok(match hypdbg_model::parse_u64(t) {
            Ok(n) => Value::Num(n),
            Err(_) => Value::Label(t.to_string()),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n:#x}"),
            Value::Label(l) => f.write_str(l),
        }
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Num(n)
    }
}

pub use hypdbg_model::esr::parse_ec;

struct EcVisitor;

impl Visitor<'_> for EcVisitor {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an exception class: 0..=0x3f or a name such as \"BREAKPT_CUR\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u8, E> {
        match u8::try_from(v) {
            Ok(n) if n <= 0x3f => Ok(n),
            _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u8, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u8, E> {
        parse_ec(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// `deserialize_with` for an exception class.
fn de_ec<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    d.deserialize_any(EcVisitor)
}

/// `deserialize_with` for an optional exception class.
fn de_opt_ec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    d.deserialize_any(EcVisitor).map(Some)
}

struct ControlVisitor;

impl Visitor<'_> for ControlVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KVM_GUESTDBG_* bits: a number or names joined by '|' (\"ENABLE|SINGLESTEP\")")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        parse_control(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// KVM_GUESTDBG_* bits from `"ENABLE|USE_HW"` (with or without the `KVM_GUESTDBG_` prefix),
/// or a number.
pub fn parse_control(s: &str) -> Option<u32> {
    if let Ok(n) = hypdbg_model::parse_u64(s) {
        return u32::try_from(n).ok();
    }
    let mut bits = 0u32;
    for part in s.split('|') {
        let up = part.trim().to_ascii_uppercase();
        let name = up.strip_prefix("KVM_GUESTDBG_").unwrap_or(&up);
        let flag = GuestDebugControl::from_name(name)?;
        bits |= flag.bits();
    }
    Some(bits)
}

fn de_control<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_any(ControlVisitor)
}

/// What a KVM_RUN (or a debugger's continue or step) ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// The guest's `stop #n`: KVM_EXIT_MMIO at the doorbell slot `n`.
    Stop,
    /// Any other KVM_EXIT_MMIO (a data access outside every memory slot).
    Mmio,
    /// KVM_EXIT_HYPERCALL: an HVC the SMCCC filter forwards to userspace.
    Hypercall,
    /// KVM_EXIT_SYSTEM_EVENT: PSCI SYSTEM_OFF or SYSTEM_RESET.
    SystemEvent,
    /// The guest ran off its code.
    ProgramEnd,
    /// KVM_EXIT_INTR: the run's instruction budget ran out.
    Intr,
    /// The guest took an exception its runtime does not handle (the runtime's doorbell stop).
    GuestAbort,
    /// Any KVM_EXIT_DEBUG (or debugger stop).
    Debug,
    /// A hardware breakpoint (EC 0x30, or the debugger's breakpoint stop).
    Breakpoint,
    /// A watchpoint (EC 0x34).
    Watchpoint,
    /// A software step (EC 0x32).
    Step,
    /// A BRK instruction (EC 0x3c, or the debugger's software-breakpoint stop).
    #[serde(alias = "sw_breakpoint")]
    Brk,
}

impl ExitKind {
    /// The name used in scenario files.
    pub const fn name(self) -> &'static str {
        match self {
            ExitKind::Stop => "stop",
            ExitKind::Mmio => "mmio",
            ExitKind::Hypercall => "hypercall",
            ExitKind::SystemEvent => "system_event",
            ExitKind::ProgramEnd => "program_end",
            ExitKind::Intr => "intr",
            ExitKind::GuestAbort => "guest_abort",
            ExitKind::Debug => "debug",
            ExitKind::Breakpoint => "breakpoint",
            ExitKind::Watchpoint => "watchpoint",
            ExitKind::Step => "step",
            ExitKind::Brk => "brk",
        }
    }

    /// Whether this kind is a debug exit (so `ec` and `far` apply).
    pub const fn is_debug(self) -> bool {
        matches!(
            self,
            ExitKind::Debug
                | ExitKind::Breakpoint
                | ExitKind::Watchpoint
                | ExitKind::Step
                | ExitKind::Brk
        )
    }

    /// Whether an exit of kind `actual` satisfies an expectation of `self` (`debug` accepts
    /// every debug kind).
    pub fn accepts(self, actual: ExitKind) -> bool {
        self == actual || (self == ExitKind::Debug && actual.is_debug())
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One exception the guest's EL1 handler took, as an expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionExpect {
    /// ESR_EL1.EC as the guest saw it (number or name: `"BREAKPT_CUR"`).
    #[serde(deserialize_with = "de_ec")]
    pub ec: u8,
    /// ELR_EL1: where it was taken (the preferred return address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elr: Option<Value>,
    /// FAR_EL1 (watchpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub far: Option<Value>,
}

/// Bytes of guest memory, as an expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryExpect {
    /// The first byte.
    pub addr: Value,
    /// The bytes, in address order.
    pub bytes: Vec<u8>,
}

/// An MMIO exit, as an expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmioExpect {
    /// `run->mmio.phys_addr`.
    pub addr: Value,
    /// A store (`true`) or a load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<bool>,
    /// `run->mmio.len`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u32>,
    /// A store's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// A KVM_EXIT_SYSTEM_EVENT type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemEvent {
    /// KVM_SYSTEM_EVENT_SHUTDOWN (PSCI SYSTEM_OFF).
    Shutdown,
    /// KVM_SYSTEM_EVENT_RESET (PSCI SYSTEM_RESET).
    Reset,
}

impl SystemEvent {
    /// KVM_SYSTEM_EVENT_*.
    pub const fn event_type(self) -> u32 {
        match self {
            SystemEvent::Shutdown => 1,
            SystemEvent::Reset => 2,
        }
    }

    /// The name in scenario files.
    pub const fn name(self) -> &'static str {
        match self {
            SystemEvent::Shutdown => "shutdown",
            SystemEvent::Reset => "reset",
        }
    }

    /// The event of a KVM_SYSTEM_EVENT_* type.
    pub fn of_type(t: u32) -> Option<Self> {
        match t {
            1 => Some(SystemEvent::Shutdown),
            2 => Some(SystemEvent::Reset),
            _ => None,
        }
    }
}

/// What the SMCCC filter does with a range of function ids (`KVM_SMCCC_FILTER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// KVM handles the call.
    Handle,
    /// The guest gets SMCCC_RET_NOT_SUPPORTED.
    Deny,
    /// KVM_EXIT_HYPERCALL.
    Forward,
}

/// A vcpu's KVM_MP_STATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MpStateName {
    /// KVM_MP_STATE_RUNNABLE.
    Runnable,
    /// KVM_MP_STATE_STOPPED.
    Stopped,
}

/// What must hold after an action. Every field is optional; the first difference is
/// reported. `exit`, `stop`, `ec`, `isv`, `far`, `mmio`, `hypercall`, `system_event` and
/// `stops` apply to the running actions (`run`, `kvm_run`, `step`, `run_until_stop`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// How the last KVM_RUN (or debugger stop) ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitKind>,
    /// The number of the `stop` exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<u16>,
    /// The exception class of the debug exit (`hsr >> 26`; number or name).
    #[serde(
        default,
        deserialize_with = "de_opt_ec",
        skip_serializing_if = "Option::is_none"
    )]
    pub ec: Option<u8>,
    /// ESR_EL2.ISV of the debug exit: for a software step, whether an instruction executed
    /// (true) or KVM completed an emulated one (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isv: Option<bool>,
    /// FAR of the debug exit (watchpoints: the address accessed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub far: Option<Value>,
    /// The MMIO exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmio: Option<MmioExpect>,
    /// The function id of the KVM_EXIT_HYPERCALL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypercall: Option<Value>,
    /// The KVM_EXIT_SYSTEM_EVENT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_event: Option<SystemEvent>,
    /// The vcpu's PC after the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc: Option<Value>,
    /// Debug stops passed on the way (`run` with `until_stop`, `run_until_stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stops: Option<u64>,
    /// Registers after the action: `x0`..`x30`, `pc`, `sp`, `pstate`, or a ONE_REG system
    /// register (`MDSCR_EL1`, `DBGBCR0_EL1`, ...), read with KVM_GET_ONE_REG.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regs: BTreeMap<String, Value>,
    /// Guest memory after the action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<MemoryExpect>,
    /// The exceptions the guest's handler took during this action, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<Vec<ExceptionExpect>>,
    /// Every exception the guest's handler took since the scenario started, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_exceptions: Option<Vec<ExceptionExpect>>,
    /// The action fails with an error whose message contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// One userspace action. `vcpu` defaults to 0 everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// KVM_RUN until the guest executes `stop #n`; debug exits on the way are handled as a
    /// debugger would (its own breakpoints stepped over, steps continued, others reinjected),
    /// from the raw control of the last `set_guest_debug`.
    RunUntilStop {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The stop that ends this action.
        stop: u16,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// The same loop as `run_until_stop`, ending at the first exit of kind `exit`
    /// (`hypercall`, `system_event`, `mmio`, `stop`, `guest_abort`, `program_end`).
    RunUntilExit {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The kind of exit that ends this action.
        exit: ExitKind,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// KVM_SET_GUEST_DEBUG with raw values (index, value) per bank.
    SetGuestDebug {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// KVM_GUESTDBG_* bits (a number, or `"ENABLE|SINGLESTEP"`).
        #[serde(deserialize_with = "de_control")]
        control: u32,
        /// `DBGBCR<n>` values: `[index, value]` pairs.
        #[serde(default)]
        bcr: Vec<(usize, Value)>,
        /// `DBGBVR<n>` values: `[index, value]` pairs.
        #[serde(default)]
        bvr: Vec<(usize, Value)>,
        /// `DBGWCR<n>` values: `[index, value]` pairs.
        #[serde(default)]
        wcr: Vec<(usize, Value)>,
        /// `DBGWVR<n>` values: `[index, value]` pairs.
        #[serde(default)]
        wvr: Vec<(usize, Value)>,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// The vcpu runs on physical CPU `cpu` from its next KVM_RUN.
    Migrate {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// Physical CPU.
        cpu: usize,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// A host interrupt every `every` guest instructions (none: no interrupts).
    Irq {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// Period.
        every: Option<u64>,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Each vcpu makes one KVM_RUN, all entering their guests before any exits (SMP).
    RunConcurrently {
        /// The vcpus, on distinct physical CPUs.
        vcpus: Vec<usize>,
        /// Expectations (state only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// KVM_RUN as a debugger's `continue`: through the vcpu's debugger once one is attached
    /// (by `break`, `watch`, `sw_break`, `step`, `single_step`), else a plain KVM_RUN. Ends at
    /// the first exit to userspace, or with `until_stop` at that stop (other stops,
    /// interrupts and debug stops on the way are passed and counted).
    Run {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// Keep going until the guest's `stop #until_stop`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_stop: Option<u16>,
        /// Do it this many times (the expectation applies to the last).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Exactly one raw KVM_RUN, whatever is attached: the exit is what KVM returned.
    KvmRun {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// `run->immediate_exit`: complete the last exit's MMIO access, then return -EINTR
        /// without entering the guest (exit `intr`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        immediate_exit: bool,
        /// `run->mmio.data`: what the MMIO load of the last exit reads.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mmio_data: Option<Value>,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// The debugger's `stepi`: one guest instruction (`count` times), stepping over a
    /// breakpoint of ours at the PC.
    Step {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// Steps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Single-step mode of the debugger: while on, `run` steps one instruction.
    SingleStep {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// On or off.
        on: bool,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Insert a hardware breakpoint through the debugger's pool.
    Break {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The instruction's address.
        addr: Value,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Remove a hardware breakpoint.
    DeleteBreak {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The instruction's address.
        addr: Value,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Watch exactly `len` bytes at `addr` (the fewest hardware watchpoints that do).
    Watch {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The first byte.
        addr: Value,
        /// Bytes (default 1).
        #[serde(default = "one_u64")]
        len: u64,
        /// `read`, `write` or `access` (default `write`).
        #[serde(default = "write_access")]
        access: WatchAccess,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Remove a watch (the same addr, len and access it was inserted with).
    DeleteWatch {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The first byte.
        addr: Value,
        /// Bytes (default 1).
        #[serde(default = "one_u64")]
        len: u64,
        /// `read`, `write` or `access` (default `write`).
        #[serde(default = "write_access")]
        access: WatchAccess,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Plant a software breakpoint (BRK #0 written into guest memory).
    SwBreak {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The instruction's address.
        addr: Value,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Remove a software breakpoint (the original instruction is written back).
    DeleteSwBreak {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The instruction's address.
        addr: Value,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Detach the debugger: remove everything, stop stepping, KVM_SET_GUEST_DEBUG(0).
    Detach {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Save the vcpu's debug registers through KVM_GET_ONE_REG (a `DebugSnapshot`).
    Snapshot {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The snapshot's name.
        name: String,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Write a snapshot back through KVM_SET_ONE_REG (into any vcpu).
    Restore {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The snapshot's name.
        name: String,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Live-migrate the VM: a fresh VM of the same flow (on `cpus`, default the same list)
    /// receives the guest memory and every vcpu's registers through ONE_REG.
    MigrateVm {
        /// The destination's physical CPUs (same breakpoint/watchpoint counts).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpus: Option<Vec<CpuSpec>>,
        /// Expectations (vcpu 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// KVM_SET_ONE_REG (`x0`..`x30`, `pc`, `sp`, `pstate`, or a debug system register).
    SetOneReg {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The register.
        reg: String,
        /// The value.
        value: Value,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// KVM_GET_ONE_REG, optionally expecting a value.
    GetOneReg {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The register.
        reg: String,
        /// The value it must hold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Write bytes into guest memory.
    WriteMemory {
        /// The first byte.
        addr: Value,
        /// The bytes.
        bytes: Vec<u8>,
        /// Expectations (vcpu 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Preempt the vcpu during its next KVM_RUN after `after` in-kernel exits and move it to
    /// physical CPU `cpu` (vcpu_put, vcpu_load elsewhere).
    Preempt {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// In-kernel exits before the preemption.
        after: u32,
        /// The physical CPU it moves to.
        cpu: usize,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// KVM_ARM_VM_SMCCC_FILTER (v6.4+): what KVM does with the HVCs whose function id (x0)
    /// is in `[base, base + nr)`. Before any vcpu runs.
    SmcccFilter {
        /// The first function id.
        base: Value,
        /// How many.
        #[serde(default = "one_u32")]
        nr: u32,
        /// `forward` (KVM_EXIT_HYPERCALL), `deny` or `handle`.
        action: FilterAction,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// KVM_SET_MP_STATE (a stopped vcpu's KVM_RUN sleeps: exit `intr`).
    SetMpState {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// `runnable` or `stopped`.
        state: MpStateName,
        /// Expectations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect: Option<Box<Expect>>,
    },
    /// Check expectations only.
    Check {
        /// vcpu.
        #[serde(default, skip_serializing_if = "is_zero")]
        vcpu: usize,
        /// Expectations.
        expect: Box<Expect>,
    },
    /// Do `ops` `times` times.
    Repeat {
        /// Iterations.
        times: u32,
        /// The actions.
        ops: Vec<Op>,
    },
}

fn one_u64() -> u64 {
    1
}

fn one_u32() -> u32 {
    1
}

fn write_access() -> WatchAccess {
    WatchAccess::Write
}

impl Op {
    /// The `do` name.
    pub const fn name(&self) -> &'static str {
        match self {
            Op::RunUntilStop { .. } => "run_until_stop",
            Op::RunUntilExit { .. } => "run_until_exit",
            Op::SetGuestDebug { .. } => "set_guest_debug",
            Op::Migrate { .. } => "migrate",
            Op::Irq { .. } => "irq",
            Op::RunConcurrently { .. } => "run_concurrently",
            Op::Run { .. } => "run",
            Op::KvmRun { .. } => "kvm_run",
            Op::Step { .. } => "step",
            Op::SingleStep { .. } => "single_step",
            Op::Break { .. } => "break",
            Op::DeleteBreak { .. } => "delete_break",
            Op::Watch { .. } => "watch",
            Op::DeleteWatch { .. } => "delete_watch",
            Op::SwBreak { .. } => "sw_break",
            Op::DeleteSwBreak { .. } => "delete_sw_break",
            Op::Detach { .. } => "detach",
            Op::Snapshot { .. } => "snapshot",
            Op::Restore { .. } => "restore",
            Op::MigrateVm { .. } => "migrate_vm",
            Op::SetOneReg { .. } => "set_one_reg",
            Op::GetOneReg { .. } => "get_one_reg",
            Op::WriteMemory { .. } => "write_memory",
            Op::Preempt { .. } => "preempt",
            Op::SmcccFilter { .. } => "smccc_filter",
            Op::SetMpState { .. } => "set_mp_state",
            Op::Check { .. } => "check",
            Op::Repeat { .. } => "repeat",
        }
    }

    /// The vcpu the action is about (0 for VM-wide actions).
    pub fn vcpu(&self) -> usize {
        match self {
            Op::RunUntilStop { vcpu, .. }
            | Op::RunUntilExit { vcpu, .. }
            | Op::SetMpState { vcpu, .. }
            | Op::SetGuestDebug { vcpu, .. }
            | Op::Migrate { vcpu, .. }
            | Op::Irq { vcpu, .. }
            | Op::Run { vcpu, .. }
            | Op::KvmRun { vcpu, .. }
            | Op::Step { vcpu, .. }
            | Op::SingleStep { vcpu, .. }
            | Op::Break { vcpu, .. }
            | Op::DeleteBreak { vcpu, .. }
            | Op::Watch { vcpu, .. }
            | Op::DeleteWatch { vcpu, .. }
            | Op::SwBreak { vcpu, .. }
            | Op::DeleteSwBreak { vcpu, .. }
            | Op::Detach { vcpu, .. }
            | Op::Snapshot { vcpu, .. }
            | Op::Restore { vcpu, .. }
            | Op::SetOneReg { vcpu, .. }
            | Op::GetOneReg { vcpu, .. }
            | Op::Preempt { vcpu, .. }
            | Op::Check { vcpu, .. } => *vcpu,
            Op::RunConcurrently { vcpus, .. } => vcpus.first().copied().unwrap_or(0),
            Op::MigrateVm { .. }
            | Op::WriteMemory { .. }
            | Op::SmcccFilter { .. }
            | Op::Repeat { .. } => 0,
        }
    }

    /// The action's expectations.
    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Op::RunUntilStop { expect, .. }
            | Op::RunUntilExit { expect, .. }
            | Op::SmcccFilter { expect, .. }
            | Op::SetMpState { expect, .. }
            | Op::SetGuestDebug { expect, .. }
            | Op::Migrate { expect, .. }
            | Op::Irq { expect, .. }
            | Op::RunConcurrently { expect, .. }
            | Op::Run { expect, .. }
            | Op::KvmRun { expect, .. }
            | Op::Step { expect, .. }
            | Op::SingleStep { expect, .. }
            | Op::Break { expect, .. }
            | Op::DeleteBreak { expect, .. }
            | Op::Watch { expect, .. }
            | Op::DeleteWatch { expect, .. }
            | Op::SwBreak { expect, .. }
            | Op::DeleteSwBreak { expect, .. }
            | Op::Detach { expect, .. }
            | Op::Snapshot { expect, .. }
            | Op::Restore { expect, .. }
            | Op::MigrateVm { expect, .. }
            | Op::SetOneReg { expect, .. }
            | Op::GetOneReg { expect, .. }
            | Op::WriteMemory { expect, .. }
            | Op::Preempt { expect, .. } => expect.as_deref(),
            Op::Check { expect, .. } => Some(expect),
            Op::Repeat { .. } => None,
        }
    }

    /// Whether the action runs the guest and ends with one exit (so `exit`, `stop`, `ec`,
    /// `isv`, `far`, `mmio`, `hypercall` and `system_event` expectations apply).
    pub const fn has_exit(&self) -> bool {
        matches!(
            self,
            Op::RunUntilStop { .. }
                | Op::RunUntilExit { .. }
                | Op::Run { .. }
                | Op::KvmRun { .. }
                | Op::Step { .. }
        )
    }
}

/// A scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it exercises, in words.
    #[serde(default)]
    pub description: String,
    /// The variant (flow) to run, by name (`era1`, `era2`, `era3`, `seed-v2`, ...); the
    /// command line may override it; `era3` when neither says.
    #[serde(default)]
    pub flow: Option<String>,
    /// The physical CPUs: profile names or raw ID_AA64DFR0_EL1 values.
    pub cpus: Vec<CpuSpec>,
    /// Number of vcpus.
    #[serde(default = "one")]
    pub vcpus: usize,
    /// The physical CPU each vcpu starts on (default: vcpu i on CPU i modulo the number of
    /// CPUs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vcpu_cpus: Vec<usize>,
    /// Guest instructions one KVM_RUN may execute before it returns KVM_EXIT_INTR (default
    /// 20000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// The invariants the run is expected to break (`"inv1"`, `"guest-state-loaded"`...),
    /// for files that demonstrate a defective flow: with the file's own flow the run passes
    /// when exactly these are broken; with `--flow` overriding it, it must be clean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_violations: Vec<String>,
    /// The guest program (assembly; every vcpu starts at its first instruction).
    pub code: String,
    /// Names for addresses the program does not label (data), usable wherever a label is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub symbols: BTreeMap<String, Value>,
    /// What userspace does.
    #[serde(default)]
    pub ops: Vec<Op>,
}

fn one() -> usize {
    1
}

impl Scenario {
    /// A scenario with defaults: one vcpu, no symbols, no expected violations.
    pub fn new(name: impl Into<String>, cpus: Vec<CpuSpec>, code: impl Into<String>) -> Self {
        Scenario {
            name: name.into(),
            description: String::new(),
            flow: None,
            cpus,
            vcpus: 1,
            vcpu_cpus: Vec::new(),
            budget: None,
            expect_violations: Vec::new(),
            code: code.into(),
            symbols: BTreeMap::new(),
            ops: Vec::new(),
        }
    }
}
