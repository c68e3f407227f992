//! The trace of a scenario run, ftrace-like: one [`Record`] per line, each either rendered as
//! text ([`TextRenderer`]) or serialized as one JSON object (`--json`).
//!
//! Every simulator event becomes a record named after the kernel function it stands for
//! (`kvm_arch_vcpu_load`, `kvm_arm_setup_debug`, `__kvm_vcpu_run`, `kvm_handle_sys_reg`,
//! ...) with the flow's decisions spelled out (DEBUG_DIRTY and `debug_ptr`, or
//! `debug_owner`; MDCR_EL2 with TDE and TDA). Every register access of the world switch is an
//! [`Record::Access`] under the kernel function that made it (`__debug_save_state(host)`,
//! ...), in the kernel's register names. Userspace actions, their outcomes, expectation
//! verdicts and invariant violations are records too, in the order they happened.

use std::fmt::Write as _;

use hypdbg_hyp::access::{AccessRecord, HypReg};
use hypdbg_hyp::context::DebugFlags;
use hypdbg_hyp::events::{Event, ExitReason, FlowState, GuestEvent};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::pcpu::HostSnapshot;
use hypdbg_model::ctrl::{DBG_SPSR_SS, PSR_D_BIT};
use hypdbg_model::esr::{Esr, ec_name};
use hypdbg_model::guest_abi::{Doorbell, doorbell};
use hypdbg_model::words;
use hypdbg_model::{DbgBank, SysReg};
use serde::Serialize;

use crate::scenario::resolve::Resolver;

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The run begins.
    Start {
        /// The file.
        file: String,
        /// The scenario's name.
        scenario: String,
        /// The flow (variant) name.
        flow: String,
        /// Its era.
        era: String,
        /// The physical CPUs, described.
        cpus: Vec<String>,
        /// Number of vcpus.
        vcpus: usize,
    },
    /// A userspace action begins.
    Action {
        /// Its number (1-based, repeats counted).
        action: u64,
        /// `FILE:LINE:COL` of its table.
        location: String,
        /// The vcpu.
        vcpu: usize,
        /// Its `do`.
        op: String,
    },
    /// A simulator event, named after the kernel function.
    Event {
        /// The event's index in the run.
        seq: usize,
        /// The physical CPU, if one is involved.
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu: Option<usize>,
        /// The vcpu.
        vcpu: usize,
        /// The kernel function (or `guest`, `userspace`).
        func: String,
        /// What happened.
        text: String,
    },
    /// One register read or write of the world switch.
    Access {
        /// The event it belongs to.
        seq: usize,
        /// The physical CPU.
        cpu: usize,
        /// The vcpu.
        vcpu: usize,
        /// The kernel function that made it.
        func: String,
        /// `read` (MRS) or `write` (MSR).
        access: String,
        /// The register, in the kernel's name.
        reg: String,
        /// The value moved.
        value: String,
    },
    /// An invariant broken, at the event where the checker saw it.
    Violation {
        /// The event.
        seq: usize,
        /// The action.
        action: u64,
        /// `FILE:LINE:COL` of the action.
        location: String,
        /// The vcpu.
        vcpu: usize,
        /// The physical CPU.
        #[serde(skip_serializing_if = "Option::is_none")]
        cpu: Option<usize>,
        /// `inv1:guest-state-loaded`.
        invariant: String,
        /// The register.
        #[serde(skip_serializing_if = "Option::is_none")]
        register: Option<String>,
        /// The value the invariant requires.
        #[serde(skip_serializing_if = "Option::is_none")]
        expected: Option<String>,
        /// The value found.
        #[serde(skip_serializing_if = "Option::is_none")]
        actual: Option<String>,
        /// In the kernel's words.
        message: String,
        /// Whether the scenario expects this invariant to break.
        expected_by_file: bool,
    },
    /// What an action did.
    Done {
        /// The action.
        action: u64,
        /// `FILE:LINE:COL`.
        location: String,
        /// Whether it succeeded.
        ok: bool,
        /// In words.
        text: String,
    },
    /// An expectation's verdict.
    Expectation {
        /// The action.
        action: u64,
        /// `FILE:LINE:COL` of the expectation (of the field that differs).
        location: String,
        /// Met or not.
        met: bool,
        /// The first difference.
        #[serde(skip_serializing_if = "Option::is_none")]
        difference: Option<String>,
    },
}

/// What the trace needs to name things.
pub struct TraceContext<'a> {
    /// The flow's era (which decisions to show).
    pub era: Era,
    /// Labels, for addresses.
    pub resolver: &'a Resolver,
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

impl TraceContext<'_> {
    fn addr(&self, a: u64) -> String {
        match self.resolver.symbolize(a) {
            Some(s) => format!("{a:#x} <{s}>"),
            None => format!("{a:#x}"),
        }
    }

    /// The flow's decisions at a boundary, in the kernel's words.
    pub fn state_words(&self, s: &FlowState) -> String {
        let mut w = String::new();
        match self.era {
            Era::One | Era::Two => {
                let _ = write!(
                    w,
                    "{}={} debug_ptr={}",
                    self.era.dirty_flag_name(),
                    u8::from(s.debug_flags.contains(DebugFlags::DEBUG_DIRTY)),
                    match s.debug_ptr {
                        hypdbg_hyp::context::DebugPtr::VcpuDebugState => "&vcpu_debug_state",
                        hypdbg_hyp::context::DebugPtr::ExternalDebugState =>
                            "&external_debug_state",
                    }
                );
            }
            Era::Three => {
                let _ = write!(w, "debug_owner={}", s.debug_owner.kernel_name());
            }
        }
        let other: Vec<&str> = s
            .debug_flags
            .iter_names()
            .map(|(n, _)| n)
            .filter(|n| *n != "DEBUG_DIRTY")
            .collect();
        if !other.is_empty() {
            let _ = write!(w, " flags={}", other.join("|"));
        }
        let _ = write!(w, " MDCR_EL2={}", words::mdcr_el2(s.mdcr_el2));
        if !s.guest_debug.is_empty() {
            let _ = write!(
                w,
                " guest_debug={}",
                words::guest_debug(s.guest_debug.bits())
            );
        }
        let _ = write!(w, " guest MDSCR_EL1={}", words::mdscr(s.guest_mdscr_el1));
        if s.os_lock {
            w.push_str(" OS-lock=locked");
        }
        let mut ps = Vec::new();
        if s.pstate & DBG_SPSR_SS != 0 {
            ps.push("SS");
        }
        if s.pstate & PSR_D_BIT != 0 {
            ps.push("D");
        }
        if !ps.is_empty() {
            let _ = write!(w, " PSTATE.{}", ps.join("|"));
        }
        w
    }

    fn live_words(&self, l: &HostSnapshot) -> String {
        let mut w = format!(
            "guest runs with MDSCR_EL1={} MDCCINT_EL1={:#x} CONTEXTIDR_EL1={:#x} MDCR_EL2={}",
            words::mdscr(l.mdscr_el1),
            l.mdccint_el1,
            l.contextidr_el1,
            words::mdcr_el2(l.mdcr_el2)
        );
        let mut regs = Vec::new();
        for bank in DbgBank::ALL {
            for (n, v) in l.banks[bank as usize].iter().enumerate() {
                if *v != 0 {
                    regs.push(format!("{}={v:#x}", SysReg::Dbg(bank, n as u8)));
                }
            }
        }
        if regs.is_empty() {
            w.push_str("; live DBG{B,W}{C,V}R all zero");
        } else {
            let _ = write!(w, "; live {}", regs.join(" "));
        }
        w
    }

    fn reason_words(&self, r: &ExitReason) -> String {
        match r {
            ExitReason::SysRegTrap { esr } => {
                let reg = esr
                    .sysreg()
                    .map(|iss| {
                        let name = iss
                            .sysreg()
                            .map_or_else(|| "an unknown register".to_string(), |r| r.to_string());
                        format!("{} {name}", if iss.is_read { "MRS" } else { "MSR" })
                    })
                    .unwrap_or_default();
                format!("trapped {reg} (EC 0x18, MDCR_EL2 traps it)")
            }
            ExitReason::Debug { esr, far } => {
                format!(
                    "debug exception routed to EL2: {}, FAR={far:#x}",
                    esr_words(*esr)
                )
            }
            ExitReason::Hvc { imm } => format!("hvc #{imm} (SMCCC call for KVM)"),
            ExitReason::Irq => "host interrupt".into(),
            ExitReason::ProgramEnd { pc } => format!("program end at {}", self.addr(*pc)),
            ExitReason::Budget => "instruction budget exhausted (KVM_EXIT_INTR)".into(),
            ExitReason::Mmio(m) => match (m.data, doorbell(m.addr)) {
                (_, Some(Doorbell::Stop(n))) => format!("stop #{n} (MMIO store to the doorbell)"),
                (_, Some(Doorbell::GuestAbort)) => format!(
                    "the guest runtime's abort stop: {}",
                    esr_words(hypdbg_model::esr::Esr::from_bits(m.data.unwrap_or(0)))
                ),
                (_, Some(Doorbell::ProgramEnd)) => "the program-end stop".into(),
                (Some(d), None) => {
                    format!("MMIO store of {d:#x} ({} bytes) to {:#x}", m.len, m.addr)
                }
                (None, None) => format!(
                    "MMIO load of {} bytes from {:#x} into x{}",
                    m.len, m.addr, m.rt
                ),
            },
            ExitReason::MmioNoSyndrome { addr } => {
                format!("data abort at {addr:#x} outside memory without a valid syndrome")
            }
        }
    }

    fn guest_words(&self, g: &GuestEvent) -> String {
        match g {
            GuestEvent::Executed { pc, insn } => format!("{}: {insn}", self.addr(*pc)),
            GuestEvent::Exception {
                esr,
                elr,
                far,
                from,
            } => {
                let mut s = format!(
                    "takes {} from {from:?} to its EL1 handler, ELR_EL1={}",
                    esr_words(*esr),
                    self.addr(*elr)
                );
                if let Some(f) = far {
                    let _ = write!(s, " FAR_EL1={}", self.addr(*f));
                }
                s
            }
            GuestEvent::SysRegWrite {
                reg,
                value,
                trapped,
            } => format!(
                "MSR {reg}, {value:#x}{}",
                if *trapped { " (trapped, emulated)" } else { "" }
            ),
            GuestEvent::SysRegRead {
                reg,
                value,
                trapped,
            } => format!(
                "MRS {reg} -> {value:#x}{}",
                if *trapped { " (trapped, emulated)" } else { "" }
            ),
            GuestEvent::Access {
                address,
                size,
                is_store,
            } => format!(
                "{} of {size} byte(s) at {}",
                if *is_store { "store" } else { "load" },
                self.addr(*address)
            ),
            GuestEvent::Unpredictable { pc, rule } => format!(
                "CONSTRAINED UNPREDICTABLE at {}: {rule} (the model takes no debug event)",
                self.addr(*pc)
            ),
        }
    }

    /// The records of one event (`seq`: its index in the run; `running_on`: the physical CPU
    /// the event's vcpu is loaded on, for events that do not say).
    pub fn event(&self, seq: usize, e: &Event, running_on: Option<usize>, out: &mut Vec<Record>) {
        let ev = |cpu: Option<usize>, vcpu: usize, func: &str, text: String| Record::Event {
            seq,
            cpu,
            vcpu,
            func: func.to_string(),
            text,
        };
        match e {
            Event::SetGuestDebug { vcpu, .. }
            | Event::SetOneReg { vcpu, .. }
            | Event::GetOneReg { vcpu, .. }
            | Event::Inject { vcpu, .. } => {
                out.push(ev(None, *vcpu, "userspace", self.userspace_words(e)));
            }
            Event::UserExit { vcpu, exit } => out.push(ev(
                None,
                *vcpu,
                "KVM_RUN",
                format!("returns to userspace: {exit}"),
            )),
            Event::Load {
                vcpu, pcpu, state, ..
            } => out.push(ev(
                Some(*pcpu),
                *vcpu,
                "kvm_arch_vcpu_load",
                self.state_words(state),
            )),
            Event::Put {
                vcpu, pcpu, state, ..
            } => out.push(ev(
                Some(*pcpu),
                *vcpu,
                "kvm_arch_vcpu_put",
                self.state_words(state),
            )),
            Event::BeforeEntry {
                vcpu, pcpu, state, ..
            } => out.push(ev(
                Some(*pcpu),
                *vcpu,
                "kvm_arm_setup_debug",
                self.state_words(state),
            )),
            Event::Guest { vcpu, what } => {
                out.push(ev(running_on, *vcpu, "guest", self.guest_words(what)));
            }
            Event::Trap { vcpu, .. } => {
                out.push(ev(running_on, *vcpu, "kvm_handle_sys_reg", trap_words(e)));
            }
            Event::MmioComplete { vcpu, mmio, value } => {
                let text = if mmio.is_write() {
                    format!(
                        "the MMIO store to {:#x} is complete: skip the instruction on entry",
                        mmio.addr
                    )
                } else {
                    format!(
                        "the MMIO load from {:#x} reads {value:#x} into x{}: skip the instruction on entry",
                        mmio.addr, mmio.rt
                    )
                };
                out.push(ev(None, *vcpu, "kvm_handle_mmio_return", text));
            }
            Event::Entered { .. } | Event::Exited { .. } | Event::HypPanic { .. } => {
                self.switch_records(seq, e, out)
            }
        }
    }

    /// What userspace asked of KVM (an ioctl, or an injected exception), in words.
    fn userspace_words(&self, e: &Event) -> String {
        match e {
            Event::SetGuestDebug {
                control, arch, ok, ..
            } => {
                let mut t = format!(
                    "KVM_SET_GUEST_DEBUG control={}",
                    words::guest_debug(*control)
                );
                for bank in DbgBank::ALL {
                    for (n, v) in arch.bank(bank).iter().enumerate() {
                        if *v != 0 {
                            let _ = write!(t, " {}={v:#x}", SysReg::Dbg(bank, n as u8));
                        }
                    }
                }
                if !ok {
                    t.push_str(" -> refused (-EINVAL)");
                }
                t
            }
            Event::SetOneReg { reg, value, .. } => format!("KVM_SET_ONE_REG {reg} = {value:#x}"),
            Event::GetOneReg { reg, value, .. } => format!("KVM_GET_ONE_REG {reg} -> {value:#x}"),
            Event::Inject { esr, far, .. } => {
                let mut t = format!("inject {} into the guest", esr_words(*esr));
                if let Some(f) = far {
                    let _ = write!(t, ", FAR_EL1={}", self.addr(*f));
                }
                t
            }
            _ => String::new(),
        }
    }

    /// A world switch: the entry, exit or hyp panic line, its register accesses grouped
    /// under the kernel function that made them, and what the guest runs with or the host got.
    fn switch_records(&self, seq: usize, e: &Event, out: &mut Vec<Record>) {
        let ev = |cpu: usize, vcpu: usize, func: &str, text: String| Record::Event {
            seq,
            cpu: Some(cpu),
            vcpu,
            func: func.to_string(),
            text,
        };
        match e {
            Event::Entered {
                vcpu,
                pcpu,
                live,
                accesses,
            } => {
                let text = format!("switch to the guest: {}", moves_words(accesses));
                out.push(ev(*pcpu, *vcpu, "__kvm_vcpu_run", text));
                access_records(seq, *pcpu, *vcpu, accesses, self.era, out);
                let live = self.live_words(&live.regs);
                out.push(ev(*pcpu, *vcpu, "__kvm_vcpu_run", live));
            }
            Event::Exited {
                vcpu,
                pcpu,
                reason,
                instructions,
                accesses,
                state,
                ..
            } => {
                let text = format!(
                    "exit after {instructions} instruction(s): {}; switch to the host: {}",
                    self.reason_words(reason),
                    moves_words(accesses)
                );
                out.push(ev(*pcpu, *vcpu, "__kvm_vcpu_run", text));
                access_records(seq, *pcpu, *vcpu, accesses, self.era, out);
                let back = format!("back in the host: {}", self.state_words(state));
                out.push(ev(*pcpu, *vcpu, "__kvm_vcpu_run", back));
            }
            Event::HypPanic {
                vcpu,
                pcpu,
                fault,
                accesses,
            } => {
                let text = format!("the world switch faulted: {fault}");
                out.push(ev(*pcpu, *vcpu, "hyp_panic", text));
                access_records(seq, *pcpu, *vcpu, accesses, self.era, out);
            }
            _ => {}
        }
    }
}

/// What `kvm_handle_sys_reg` did with a trapped access, in words.
fn trap_words(e: &Event) -> String {
    let Event::Trap {
        reg,
        is_write,
        value,
        undef,
        ..
    } = e
    else {
        return String::new();
    };
    let r = reg.map_or("an unknown register".to_string(), |r| r.to_string());
    if *undef {
        format!(
            "{} {r}: UNDEFINED, an exception is injected",
            if *is_write { "MSR" } else { "MRS" }
        )
    } else if *is_write {
        format!("emulate MSR {r}, {value:#x}")
    } else {
        format!("emulate MRS {r} -> {value:#x}")
    }
}

fn access_records(
    seq: usize,
    cpu: usize,
    vcpu: usize,
    a: &[AccessRecord],
    era: Era,
    out: &mut Vec<Record>,
) {
    for r in a {
        out.push(Record::Access {
            seq,
            cpu,
            vcpu,
            func: r.scope.kernel_name_in(era).to_string(),
            access: if r.write { "write" } else { "read" }.to_string(),
            reg: r.reg.to_string(),
            value: hex(r.value),
        });
    }
}

/// Whether an access moves debug state (a breakpoint/watchpoint register or MDCCINT_EL1).
pub fn is_debug_state(r: &HypReg) -> bool {
    matches!(r, HypReg::Sys(SysReg::Dbg(..) | SysReg::MdccintEl1))
}

fn moves_words(a: &[AccessRecord]) -> String {
    let dbg = a
        .iter()
        .filter(|r| matches!(r.reg, HypReg::Sys(SysReg::Dbg(..))))
        .count();
    let mdccint = a
        .iter()
        .filter(|r| r.reg == HypReg::Sys(SysReg::MdccintEl1))
        .count();
    if dbg + mdccint == 0 {
        "no debug register moved (lazy)".into()
    } else {
        format!("{dbg} DBG{{B,W}}{{C,V}}R moves + {mdccint} MDCCINT_EL1")
    }
}

/// An ESR in words: `0xf2000000 (EC 0x3c BRK64)`.
pub fn esr_words(e: Esr) -> String {
    format!("ESR {:#x} (EC {:#x} {})", e.bits(), e.ec(), ec_name(e.ec()))
}

/// Renders records as ftrace-like text lines, grouping each event's register accesses under
/// the kernel function that made them.
#[derive(Debug, Default)]
pub struct TextRenderer {
    group: Option<(usize, String)>,
}

fn prefix(seq: Option<usize>, cpu: Option<usize>, vcpu: Option<usize>) -> String {
    let seq = seq.map_or("-".to_string(), |s| s.to_string());
    let cpu = cpu.map_or("---".to_string(), |c| format!("{c:03}"));
    let vcpu = vcpu.map_or("     ".to_string(), |v| format!("vcpu{v}"));
    format!("{seq:>7} [{cpu}] {vcpu:<6}")
}

impl TextRenderer {
    /// A renderer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The column header.
    pub fn header() -> &'static str {
        "#     SEQ  CPU  VCPU   FUNCTION: DETAILS"
    }

    /// The text of one record (one or more lines, each ending in a newline).
    pub fn render(&mut self, r: &Record) -> String {
        match r {
            Record::Access {
                seq,
                cpu,
                vcpu,
                func,
                access,
                reg,
                value,
            } => {
                let mut s = String::new();
                let p = prefix(Some(*seq), Some(*cpu), Some(*vcpu));
                let key = (*seq, func.clone());
                if self.group.as_ref() != Some(&key) {
                    let _ = writeln!(s, "{p}    {func}:");
                    self.group = Some(key);
                }
                let dir = if access == "write" { "write" } else { "read " };
                let _ = writeln!(s, "{p}      {dir} {reg:<15} = {value}");
                s
            }
            other => {
                self.group = None;
                line(other)
            }
        }
    }
}

/// The text of a record other than a register access.
fn line(r: &Record) -> String {
    let anon = prefix(None, None, None);
    match r {
        Record::Start {
            file,
            scenario,
            flow,
            era,
            cpus,
            vcpus,
        } => format!(
            "# hypdbg run {file}: scenario '{scenario}', flow {flow} ({era}), {} physical CPU(s): {}, {vcpus} vcpu(s)\n{}\n",
            cpus.len(),
            cpus.join(", "),
            TextRenderer::header()
        ),
        Record::Action {
            action,
            location,
            vcpu,
            op,
        } => format!(
            "{} userspace: ==== action {action} `{op}` at {location}\n",
            prefix(None, None, Some(*vcpu))
        ),
        Record::Event {
            seq,
            cpu,
            vcpu,
            func,
            text,
        } => format!(
            "{}  {func}: {text}\n",
            prefix(Some(*seq), *cpu, Some(*vcpu))
        ),
        Record::Violation {
            seq,
            action,
            location,
            vcpu,
            cpu,
            invariant,
            message,
            expected_by_file,
            ..
        } => {
            let tag = if *expected_by_file {
                "VIOLATION (expected by the file)"
            } else {
                "VIOLATION"
            };
            format!(
                "{}  !!! {tag} {invariant} (action {action} at {location}): {message}\n",
                prefix(Some(*seq), *cpu, Some(*vcpu))
            )
        }
        Record::Done {
            action,
            location,
            ok,
            text,
        } => format!(
            "{anon} userspace: action {action} {}: {text} ({location})\n",
            if *ok { "done" } else { "FAILED" }
        ),
        Record::Expectation {
            action,
            location,
            met,
            difference,
        } => format!(
            "{anon} userspace: action {action} expectation {} ({location}){}\n",
            if *met { "met" } else { "NOT MET" },
            difference
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        Record::Access { .. } => String::new(),
    }
}
