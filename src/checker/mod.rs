//! The nine invariants of `docs/invariants.md`, checked event by event from what a backend
//! recorded: the register accesses of the switch, the live registers while the guest runs, the
//! host's registers around each run, what the guest read and wrote, and what userspace asked
//! for. The expected values come from a [`shadow`] of the guest's and userspace's own actions
//! and each era's documented contract, never from the state the flow under test computed.
//!
//! This module depends on the simulator's event vocabulary and the architecture model only:
//! the scenario driver, `hypdbg run` and `hypdbg check` all feed it the same stream
//! ([`Checker::on_event`]).
//!
//! - [`shadow`]: the expected state per vcpu, and what the era's contract says is in use;
//! - `entry`: the checks at a guest entry (invariants 1, 5, 6, 7, 8, 9 on the live state);
//! - `exit`: the checks at an exit (invariants 2, 5, 6, 7, 8, 9);
//! - `guest`: the guest's MSR/MRS, traps and exceptions, and ONE_REG reads (3, 8).

mod entry;
mod exit;
mod guest;
pub mod shadow;

use std::collections::BTreeMap;

use hypdbg_hyp::events::Event;
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::pcpu::HostSnapshot;
use hypdbg_model::DebugFeatures;
use serde::Serialize;

use shadow::{Blocks, Shadow};

/// How an invariant is judged on a real kernel ([`Invariant::on_a_real_kernel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealKernelCheck {
    /// From the exits and the host's perf breakpoint, whatever the file expects.
    AtEveryExit,
    /// Only as far as the file's expectations state it (exceptions, registers, memory).
    ThroughExpectations,
    /// Needs the registers while the guest runs.
    SimulatorOnly,
}

/// The invariants a correct flow keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Invariant {
    /// 1. While the guest runs with debug state loaded, every implemented register holds the
    ///    selected block's value, never a host value.
    GuestStateLoaded,
    /// 2. After returning to the host, the host's registers are bit-identical to before.
    HostRestored,
    /// 3. The guest reads back what it wrote.
    GuestReadsBack,
    /// 4. No access to an unimplemented register index, ever.
    NoUnimplementedAccess,
    /// 5. Every implemented index is moved when state is moved.
    NoShortCopy,
    /// 6. Lazy: an unused debug state is not switched and its traps stay armed; a used one
    ///    is switched (and, in era 3, no longer trapped).
    Lazy,
    /// 7. Userspace debug: the guest runs with userspace's registers and MDSCR bits, gets
    ///    its own back, and single-step stops after exactly one instruction.
    UserspaceDebug,
    /// 8. Guest debug events go to the guest, or to userspace when it debugs the guest.
    EventDelivery,
    /// 9. MDCCINT_EL1 travels with the debug state; MDCR_EL2 is restored for the host.
    MdccintMdcr,
}

impl Invariant {
    /// All nine.
    pub const ALL: [Invariant; 9] = [
        Invariant::GuestStateLoaded,
        Invariant::HostRestored,
        Invariant::GuestReadsBack,
        Invariant::NoUnimplementedAccess,
        Invariant::NoShortCopy,
        Invariant::Lazy,
        Invariant::UserspaceDebug,
        Invariant::EventDelivery,
        Invariant::MdccintMdcr,
    ];

    /// Its number in `docs/invariants.md`.
    pub const fn number(self) -> u8 {
        self as u8 + 1
    }

    /// A short name.
    pub const fn name(self) -> &'static str {
        match self {
            Invariant::GuestStateLoaded => "guest-state-loaded",
            Invariant::HostRestored => "host-restored",
            Invariant::GuestReadsBack => "guest-reads-back",
            Invariant::NoUnimplementedAccess => "no-unimplemented-access",
            Invariant::NoShortCopy => "no-short-copy",
            Invariant::Lazy => "lazy",
            Invariant::UserspaceDebug => "userspace-debug",
            Invariant::EventDelivery => "event-delivery",
            Invariant::MdccintMdcr => "mdccint-mdcr",
        }
    }

    /// How a userspace observer of a real kernel judges it: 2 (a host perf breakpoint
    /// survives the guest), 7 (one instruction per step, by PC and ISV) and 8 (event
    /// delivery) at every exit; 1 (the guest's own breakpoints fire, in its exception log)
    /// and 3 (read-back in the guest and through ONE_REG) only as far as the file's
    /// expectations state them; 4, 5, 6 and 9 need every register access of the world
    /// switch: simulator-only.
    pub const fn on_a_real_kernel(self) -> RealKernelCheck {
        match self {
            Invariant::HostRestored | Invariant::UserspaceDebug | Invariant::EventDelivery => {
                RealKernelCheck::AtEveryExit
            }
            Invariant::GuestStateLoaded | Invariant::GuestReadsBack => {
                RealKernelCheck::ThroughExpectations
            }
            Invariant::NoUnimplementedAccess
            | Invariant::NoShortCopy
            | Invariant::Lazy
            | Invariant::MdccintMdcr => RealKernelCheck::SimulatorOnly,
        }
    }

    /// `inv3:guest-reads-back`.
    pub fn label(self) -> String {
        format!("inv{}:{}", self.number(), self.name())
    }

    /// An invariant by `inv3`, `3`, `guest-reads-back` or `inv3:guest-reads-back`.
    ///
    /// ```
    /// use hypdbg::checker::Invariant;
    /// assert_eq!(Invariant::parse("inv5"), Some(Invariant::NoShortCopy));
    /// assert_eq!(Invariant::parse("lazy"), Some(Invariant::Lazy));
    /// assert_eq!(Invariant::parse("inv10"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Invariant> {
        let t = s.trim().to_ascii_lowercase();
        Invariant::ALL.into_iter().find(|i| {
            let num = i.number().to_string();
            t == i.label()
                || t == i.name()
                || t == num
                || t.strip_prefix("inv").is_some_and(|n| n == num)
        })
    }
}

/// A broken invariant a backend saw itself, without the simulator's events (a real
/// kernel's userspace observer: [`crate::real::watch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which.
    pub invariant: Invariant,
    /// The vcpu.
    pub vcpu: usize,
    /// What happened, in the kernel's words.
    pub message: String,
}

/// One broken invariant, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which.
    pub invariant: Invariant,
    /// The register, in the kernel's name.
    pub register: Option<String>,
    /// The value the invariant requires.
    pub expected: Option<u64>,
    /// The value found.
    pub actual: Option<u64>,
    /// The number of the userspace action during which it happened (1-based, repeats
    /// counted).
    pub action: u64,
    /// The number of the event (0-based over the run).
    pub event: u64,
    /// The vcpu.
    pub vcpu: usize,
    /// The physical CPU, if one is involved.
    pub pcpu: Option<usize>,
    /// What went wrong, in the kernel's words.
    pub message: String,
}

/// A violation being described: `checker.violation(inv, vcpu, msg).cpu(p).register(r)
/// .push()`.
#[must_use = "a violation is recorded by `push`"]
pub struct Report<'c> {
    sink: &'c mut Vec<Violation>,
    v: Violation,
}

impl Report<'_> {
    /// The physical CPU involved.
    pub fn cpu(mut self, pcpu: usize) -> Self {
        self.v.pcpu = Some(pcpu);
        self
    }

    /// The register, in the kernel's name.
    pub fn register(mut self, name: impl Into<String>) -> Self {
        self.v.register = Some(name.into());
        self
    }

    /// The value the invariant requires.
    pub fn expected(mut self, want: u64) -> Self {
        self.v.expected = Some(want);
        self
    }

    /// The value found.
    pub fn actual(mut self, got: u64) -> Self {
        self.v.actual = Some(got);
        self
    }

    /// Record it.
    pub fn push(self) {
        self.sink.push(self.v);
    }
}

/// Walks a run's events and collects violations.
pub struct Checker {
    era: Era,
    features: DebugFeatures,
    shadows: BTreeMap<usize, Shadow>,
    blocks: BTreeMap<usize, Blocks>,
    host_before: BTreeMap<usize, HostSnapshot>,
    /// VHE: the host's registers at the last `vcpu_load`, per physical CPU. MDCR_EL2 and the
    /// EL1 registers are the vcpu's from load to put, so they are judged at put.
    host_at_load: BTreeMap<usize, HostSnapshot>,
    /// The violations found (a caller may drain them as they come).
    pub violations: Vec<Violation>,
    action: u64,
    event: u64,
}

impl Checker {
    /// A checker for a VM of `era` whose guest sees `features`.
    pub fn new(era: Era, features: DebugFeatures) -> Self {
        Checker {
            era,
            features,
            shadows: BTreeMap::new(),
            blocks: BTreeMap::new(),
            host_before: BTreeMap::new(),
            host_at_load: BTreeMap::new(),
            violations: Vec::new(),
            action: 0,
            event: 0,
        }
    }

    /// Start describing a violation of `invariant` on `vcpu` at the current event.
    fn violation(&mut self, invariant: Invariant, vcpu: usize, message: String) -> Report<'_> {
        Report {
            v: Violation {
                invariant,
                register: None,
                expected: None,
                actual: None,
                action: self.action,
                event: self.event,
                vcpu,
                pcpu: None,
                message,
            },
            sink: &mut self.violations,
        }
    }

    /// Check one event: number `seq` of the run, produced by userspace action `action`.
    pub fn on_event(&mut self, seq: u64, action: u64, e: &Event) {
        self.event = seq;
        self.action = action;
        match e {
            Event::SetGuestDebug {
                vcpu,
                control,
                arch,
                ok,
            } => {
                if *ok {
                    self.on_set_guest_debug(*vcpu, *control, arch);
                }
            }
            Event::SetOneReg { vcpu, reg, value } => self.on_set_one_reg(*vcpu, *reg, *value),
            Event::GetOneReg { vcpu, reg, value } => {
                self.check_read(*vcpu, *reg, *value, "KVM_GET_ONE_REG")
            }
            Event::Load {
                vcpu, pcpu, host, ..
            } => {
                if let Some(h) = host {
                    self.host_at_load.insert(*pcpu, **h);
                }
                self.shadow(*vcpu).on_load()
            }
            Event::Put {
                vcpu,
                pcpu,
                state,
                host,
            } => {
                if let Some(after) = host {
                    self.on_vhe_put(*vcpu, *pcpu, after);
                }
                self.on_put(*vcpu, state.pstate)
            }
            Event::Inject { vcpu, .. } => self.shadow(*vcpu).on_inject(),
            Event::BeforeEntry { pcpu, host, .. } => {
                self.host_before.insert(*pcpu, **host);
            }
            Event::Entered {
                vcpu,
                pcpu,
                live,
                accesses,
            } => self.on_entered(*vcpu, *pcpu, &live.regs, accesses),
            Event::Guest { vcpu, what } => self.on_guest(*vcpu, what),
            Event::Trap {
                vcpu,
                reg,
                is_write,
                undef,
                ..
            } => self.on_trap(*vcpu, *reg, *is_write, *undef),
            Event::Exited {
                vcpu,
                pcpu,
                reason,
                instructions,
                host,
                accesses,
                ..
            } => self.on_exited(*vcpu, *pcpu, reason, *instructions, host, accesses),
            Event::HypPanic {
                vcpu,
                pcpu,
                fault,
                accesses,
            } => self.on_hyp_panic(*vcpu, *pcpu, fault, accesses),
            Event::MmioComplete { vcpu, .. } => self.on_emulated(*vcpu),
            Event::UserExit { .. } => {}
        }
    }

    fn shadow(&mut self, vcpu: usize) -> &mut Shadow {
        self.shadows.entry(vcpu).or_default()
    }

    fn blocks(&mut self, vcpu: usize) -> &mut Blocks {
        self.blocks.entry(vcpu).or_default()
    }
}
