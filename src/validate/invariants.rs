//! The nine invariants of the design notes (kernel-flows), checked on every simulated entry
//! and exit from what the simulator recorded: the register accesses of the switch, the live
//! registers while the guest runs, the host's registers around each run, what the guest read
//! and wrote, and what userspace asked for. The expected values come from a shadow of the
//! guest's and userspace's own actions (what they wrote, what they asked for) and each era's
//! documented contract, never from the state the flow under test computed.

use std::collections::BTreeMap;

use hypdbg_hyp::access::{AccessRecord, HypReg};
use hypdbg_hyp::events::{Event, ExitReason, GuestEvent};
use hypdbg_hyp::flow::Era;
use hypdbg_hyp::pcpu::HostSnapshot;
use hypdbg_model::ctrl::{
    DBG_MDSCR_MDE, DBG_MDSCR_SS, DBG_SPSR_SS, MDCR_EL2_HPMN_MASK, MDCR_EL2_TDA, MDCR_EL2_TDE,
    MDCR_EL2_TDOSA, MDCR_EL2_TDRA, MDCR_EL2_TPM, MDCR_EL2_TPMCR, MDCR_EL2_TPMS, MDCR_EL2_TTRF,
    OSLSR_EL1_OSLK, OSLSR_EL1_OSLM_IMPLEMENTED, mdscr_uses_debug,
};
use hypdbg_model::esr::{ESR_ELX_EC_SOFTSTP_LOW, Esr};
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebugArch};
use hypdbg_model::{DbgBank, DebugFeatures, SysReg};
use serde::Serialize;

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
    /// Its number in kernel-flows.md.
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
    /// `inv3:guest-reads-back`.
    pub fn label(self) -> String {
        format!("inv{}:{}", self.number(), self.name())
    }
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
    /// The scenario action during which it happened.
    pub step: usize,
    /// The index of the simulator event.
    pub event: usize,
    /// The vcpu.
    pub vcpu: usize,
    /// The physical CPU, if one is involved.
    pub pcpu: Option<usize>,
    /// What went wrong, in the kernel's words.
    pub message: String,
}

/// The register blocks the guest and userspace wrote, per vcpu (kept apart from [`Shadow`]
/// so that the small state can be copied freely).
#[derive(Clone, Debug, Default)]
struct Blocks {
    /// The guest's own DBG*R\<n> values.
    regs: KvmGuestDebugArch,
    /// The block userspace last passed with USE_HW.
    user_hw: KvmGuestDebugArch,
}

/// What the guest and userspace did, per vcpu: the expected state.
#[derive(Clone, Copy, Debug, Default)]
struct Shadow {
    mdscr: u64,
    mdccint: u64,
    oslk: bool,
    /// Userspace's current control (0 unless ENABLE).
    control: GuestDebugControl,
    /// Eras 1/2: a trapped write since the last entry.
    dirty_write: bool,
    /// Era 3: the guest's MDSCR at the last load, and a trapped access since.
    mdscr_at_load: u64,
    accessed_since_load: bool,
    /// Whether the current entry was expected to move debug state.
    entry_in_use: bool,
    /// Userspace single-step: guest instructions since the last step exit.
    step_count: Option<u64>,
    /// The guest's own PSTATE.SS while userspace steps it (None: not predictable).
    ss_guest: Option<bool>,
    /// PSTATE.SS as userspace last saw it.
    visible_ss: bool,
    /// Exceptions userspace injected that the guest has not taken yet.
    injected: u32,
    /// An exception entry (UNDEF, injection, guest exception) since the last step exit.
    exception_since_step: bool,
}

fn dbg_value(a: &KvmGuestDebugArch, bank: DbgBank, n: usize) -> u64 {
    a.bank(bank)[n]
}

/// Walks a run's events and collects violations.
pub struct Checker {
    era: Era,
    features: DebugFeatures,
    shadows: BTreeMap<usize, Shadow>,
    blocks: BTreeMap<usize, Blocks>,
    host_before: BTreeMap<usize, HostSnapshot>,
    /// The violations found.
    pub violations: Vec<Violation>,
    step: usize,
    event: usize,
}

/// The first breakpoint/watchpoint or MDCCINT_EL1 access of a switch (the register a lazy
/// violation names).
fn first_debug_move(accesses: &[AccessRecord]) -> Option<String> {
    accesses
        .iter()
        .find(|a| {
            matches!(
                a.reg,
                HypReg::Sys(SysReg::Dbg(..)) | HypReg::Sys(SysReg::MdccintEl1)
            )
        })
        .map(|a| a.reg.to_string())
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
            violations: Vec::new(),
            step: 0,
            event: 0,
        }
    }

    fn implemented(&self, bank: DbgBank) -> usize {
        if bank.is_breakpoint() {
            self.features.num_brps()
        } else {
            self.features.num_wrps()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        invariant: Invariant,
        vcpu: usize,
        pcpu: Option<usize>,
        register: Option<String>,
        expected: Option<u64>,
        actual: Option<u64>,
        message: String,
    ) {
        self.violations.push(Violation {
            invariant,
            register,
            expected,
            actual,
            step: self.step,
            event: self.event,
            vcpu,
            pcpu,
            message,
        });
    }

    /// A violation seen in a live register while the guest ran on `pcpu` (with the value or
    /// bits it should have held, when there is one).
    #[allow(clippy::too_many_arguments)]
    fn report_live(
        &mut self,
        invariant: Invariant,
        vcpu: usize,
        pcpu: usize,
        register: &str,
        expected: Option<u64>,
        live: u64,
        message: String,
    ) {
        self.report(
            invariant,
            vcpu,
            Some(pcpu),
            Some(register.to_string()),
            expected,
            Some(live),
            message,
        );
    }

    /// Check every event of a run; `op_of_event[i]` is the action that produced event i.
    pub fn check(&mut self, events: &[Event], op_of_event: &[usize]) {
        for (i, e) in events.iter().enumerate() {
            self.event = i;
            self.step = op_of_event.get(i).copied().unwrap_or(0);
            self.on_event(e);
        }
    }

    fn shadow(&mut self, vcpu: usize) -> &mut Shadow {
        self.shadows.entry(vcpu).or_default()
    }

    fn blocks(&mut self, vcpu: usize) -> &mut Blocks {
        self.blocks.entry(vcpu).or_default()
    }

    fn host_owned(&self, s: &Shadow) -> bool {
        !s.control.is_empty() || s.oslk
    }

    /// Whether the flow's contract says the debug state is in use at an entry, and which block
    /// (userspace's: true).
    fn expectation(&self, s: &Shadow) -> (bool, bool) {
        let use_hw = s.control.contains(GuestDebugControl::USE_HW);
        match self.era {
            Era::One | Era::Two => {
                let eff = if use_hw {
                    s.mdscr | DBG_MDSCR_MDE
                } else if s.oslk {
                    s.mdscr & !DBG_MDSCR_MDE
                } else {
                    s.mdscr
                };
                let in_use = use_hw || mdscr_uses_debug(eff) || s.dirty_write;
                (in_use, use_hw)
            }
            Era::Three => {
                let host = self.host_owned(s);
                let in_use = host || mdscr_uses_debug(s.mdscr_at_load) || s.accessed_since_load;
                (in_use, host)
            }
        }
    }

    fn on_event(&mut self, e: &Event) {
        match e {
            Event::SetGuestDebug {
                vcpu,
                control,
                arch,
                ok,
            } => {
                if !ok {
                    return;
                }
                let s = self.shadow(*vcpu);
                let c = GuestDebugControl::from_bits_truncate(*control);
                let was_stepping = s.control.contains(GuestDebugControl::SINGLESTEP);
                s.control = if c.contains(GuestDebugControl::ENABLE) {
                    c
                } else {
                    GuestDebugControl::empty()
                };
                let use_hw = s.control.contains(GuestDebugControl::USE_HW);
                let stepping = s.control.contains(GuestDebugControl::SINGLESTEP);
                if stepping && !was_stepping {
                    s.step_count = Some(0);
                    s.ss_guest = Some(s.visible_ss);
                } else if !stepping {
                    s.step_count = None;
                }
                if use_hw {
                    self.blocks(*vcpu).user_hw = **arch;
                }
            }
            Event::SetOneReg { vcpu, reg, value } => {
                if let SysReg::Dbg(bank, n) = reg {
                    self.blocks(*vcpu).regs.bank_mut(*bank)[usize::from(*n)] = *value;
                }
                let s = self.shadow(*vcpu);
                match reg {
                    SysReg::MdscrEl1 => s.mdscr = *value,
                    SysReg::MdccintEl1 => s.mdccint = *value,
                    SysReg::OslsrEl1 => s.oslk = value & OSLSR_EL1_OSLK != 0,
                    _ => {}
                }
            }
            Event::GetOneReg { vcpu, reg, value } => {
                self.check_read(*vcpu, *reg, *value, "KVM_GET_ONE_REG")
            }
            Event::Load { vcpu, .. } => {
                let s = self.shadow(*vcpu);
                s.mdscr_at_load = s.mdscr;
                s.accessed_since_load = false;
            }
            Event::Put { vcpu, state, .. } => {
                let s = self.shadow(*vcpu);
                let visible = state.pstate & DBG_SPSR_SS != 0;
                s.visible_ss = visible;
                if let Some(own) = s.ss_guest
                    && visible != own
                {
                    let msg = format!(
                        "between runs the guest's PSTATE.SS reads {} while userspace single-steps it; the guest's own is {}",
                        visible as u8, own as u8
                    );
                    self.report(
                        Invariant::UserspaceDebug,
                        *vcpu,
                        None,
                        Some("PSTATE.SS".into()),
                        Some(own.into()),
                        Some(visible.into()),
                        msg,
                    );
                }
            }
            Event::Inject { vcpu, .. } => {
                let s = self.shadow(*vcpu);
                s.injected += 1;
                s.exception_since_step = true;
            }
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
            } => {
                // An access the architecture defines must not be made UNDEFINED: an
                // implemented DBG*R<n>, MDSCR_EL1, MDCCINT_EL1, or a write to OSLAR_EL1.
                let defined = match reg {
                    Some(SysReg::Dbg(bank, n)) => usize::from(*n) < self.implemented(*bank),
                    Some(SysReg::MdscrEl1 | SysReg::MdccintEl1) => true,
                    Some(SysReg::OslarEl1) => *is_write,
                    _ => false,
                };
                if *undef && defined {
                    let r = reg.map(|r| r.to_string()).unwrap_or_default();
                    let msg = format!(
                        "the guest's {} of {r} trapped and KVM made it UNDEFINED; the register is implemented",
                        if *is_write { "MSR" } else { "MRS" }
                    );
                    self.report(
                        Invariant::GuestReadsBack,
                        *vcpu,
                        None,
                        Some(r),
                        None,
                        None,
                        msg,
                    );
                }
                let s = self.shadow(*vcpu);
                if *undef {
                    // The instruction generated an exception (KVM injects UNDEF).
                    s.exception_since_step = true;
                } else if let Some(c) = s.step_count.as_mut() {
                    *c += 1;
                }
            }
            Event::Exited {
                vcpu,
                pcpu,
                reason,
                instructions,
                host,
                accesses,
                ..
            } => {
                self.on_exited(*vcpu, *pcpu, reason, *instructions, host, accesses);
            }
            Event::HypPanic {
                vcpu,
                pcpu,
                fault,
                accesses,
            } => {
                let reg = accesses.last().map(|a| a.reg.to_string());
                let msg = format!("the world switch touched an unimplemented register: {fault}");
                self.report(
                    Invariant::NoUnimplementedAccess,
                    *vcpu,
                    Some(*pcpu),
                    reg,
                    None,
                    None,
                    msg,
                );
            }
            Event::UserExit { .. } => {}
        }
    }

    fn check_read(&mut self, vcpu: usize, reg: SysReg, value: u64, how: &str) {
        let s = *self.shadow(vcpu);
        let expected = match reg {
            SysReg::Dbg(bank, n) => dbg_value(&self.blocks(vcpu).regs, bank, usize::from(n)),
            SysReg::MdscrEl1 => s.mdscr,
            SysReg::MdccintEl1 => s.mdccint,
            SysReg::OslsrEl1 => {
                OSLSR_EL1_OSLM_IMPLEMENTED | if s.oslk { OSLSR_EL1_OSLK } else { 0 }
            }
            // sys_regs.c: trap_raz_wi (KVM emulates no ROM table and no powerdown request).
            SysReg::MdrarEl1 | SysReg::DbgprcrEl1 => 0,
            _ => return,
        };
        if value != expected {
            let what = if reg == SysReg::OslsrEl1 {
                "the OS lock state it set"
            } else if matches!(reg, SysReg::MdrarEl1 | SysReg::DbgprcrEl1) {
                "KVM's trap_raz_wi: reads as zero"
            } else {
                "what it wrote"
            };
            let msg = format!(
                "{how} of {reg} returned {value:#x}; the guest's own value is {expected:#x} ({what})"
            );
            self.report(
                Invariant::GuestReadsBack,
                vcpu,
                None,
                Some(reg.to_string()),
                Some(expected),
                Some(value),
                msg,
            );
        }
    }

    fn on_guest(&mut self, vcpu: usize, what: &GuestEvent) {
        let era = self.era;
        match what {
            GuestEvent::SysRegWrite {
                reg,
                value,
                trapped,
            } => {
                let host_owned = {
                    let s = *self.shadow(vcpu);
                    self.host_owned(&s)
                };
                if let SysReg::Dbg(bank, n) = reg {
                    self.blocks(vcpu).regs.bank_mut(*bank)[usize::from(*n)] = *value;
                }
                let s = self.shadow(vcpu);
                match reg {
                    SysReg::Dbg(..) => {}
                    SysReg::MdscrEl1 => s.mdscr = *value,
                    SysReg::MdccintEl1 => s.mdccint = *value,
                    SysReg::OslarEl1 => {
                        s.oslk = value & 1 != 0;
                        if era == Era::Three {
                            // kvm_debug_handle_oslar: a full put + load.
                            s.mdscr_at_load = s.mdscr;
                            s.accessed_since_load = false;
                        }
                    }
                    SysReg::OslsrEl1 => {
                        let msg = "a guest MSR to the read-only OSLSR_EL1 completed; it must be UNDEFINED".to_string();
                        self.report(
                            Invariant::GuestReadsBack,
                            vcpu,
                            None,
                            Some(reg.to_string()),
                            None,
                            Some(*value),
                            msg,
                        );
                        return;
                    }
                    _ => return,
                }
                let debug_reg =
                    matches!(reg, SysReg::Dbg(..) | SysReg::MdscrEl1 | SysReg::MdccintEl1);
                if *trapped && debug_reg {
                    s.dirty_write = true;
                    if !host_owned {
                        s.accessed_since_load = true;
                    }
                }
            }
            GuestEvent::SysRegRead {
                reg,
                value,
                trapped,
            } => {
                let host_owned = {
                    let s = *self.shadow(vcpu);
                    self.host_owned(&s)
                };
                self.check_read(vcpu, *reg, *value, "the guest's MRS");
                let debug_reg =
                    matches!(reg, SysReg::Dbg(..) | SysReg::MdscrEl1 | SysReg::MdccintEl1);
                if *trapped && debug_reg && !host_owned {
                    self.shadow(vcpu).accessed_since_load = true;
                }
            }
            GuestEvent::Exception { esr, elr, .. } => {
                let s = *self.shadow(vcpu);
                let ec = esr.ec();
                let debug = esr.is_debug();
                // The guest's own PSTATE.SS now follows its own exception handling.
                self.shadow(vcpu).ss_guest = None;
                self.shadow(vcpu).exception_since_step = true;
                if !debug {
                    return;
                }
                if s.injected > 0 {
                    self.shadow(vcpu).injected -= 1;
                    return;
                }
                let why = if !s.control.is_empty() {
                    "while userspace debugs it: with MDCR_EL2.TDE it must exit to userspace"
                } else if s.oslk && ec != hypdbg_model::esr::ESR_ELX_EC_BRK64 {
                    "while its OS lock is set: breakpoints, watchpoints and step must be suppressed"
                } else {
                    return;
                };
                let msg = format!(
                    "the guest's EL1 took {} at {elr:#x} {why}",
                    hypdbg_model::esr::ec_name(ec)
                );
                self.report(
                    Invariant::EventDelivery,
                    vcpu,
                    None,
                    None,
                    None,
                    Some(esr.bits()),
                    msg,
                );
            }
            GuestEvent::Executed { .. }
            | GuestEvent::Access { .. }
            | GuestEvent::Unpredictable { .. } => {}
        }
    }

    /// Invariants 4 and 5 on one side of a switch.
    fn check_accesses(&mut self, vcpu: usize, pcpu: usize, accesses: &[AccessRecord], side: &str) {
        // [bank][write] -> bitmask of indices moved.
        let mut moved = [[0u32; 2]; 4];
        let mut any = false;
        for a in accesses {
            if let HypReg::Sys(SysReg::Dbg(bank, n)) = a.reg {
                moved[bank as usize][usize::from(a.write)] |= 1 << n;
                any = true;
            }
        }
        if !any {
            return;
        }
        for bank in DbgBank::ALL {
            let n = self.implemented(bank);
            for write in [false, true] {
                let got = moved[bank as usize][usize::from(write)];
                if let Some(missing) = (0..n).find(|i| got & (1 << i) == 0) {
                    let reg = SysReg::Dbg(bank, missing as u8);
                    let msg = format!(
                        "the switch {side} {} {} of the {n} implemented {} registers but not {reg}",
                        if write { "wrote" } else { "read" },
                        got.count_ones(),
                        bank.stem().to_ascii_uppercase()
                    );
                    self.report(
                        Invariant::NoShortCopy,
                        vcpu,
                        Some(pcpu),
                        Some(reg.to_string()),
                        None,
                        None,
                        msg,
                    );
                    return;
                }
            }
        }
    }

    fn on_entered(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        live: &HostSnapshot,
        accesses: &[AccessRecord],
    ) {
        self.check_accesses(vcpu, pcpu, accesses, "to the guest");
        let s = *self.shadow(vcpu);
        let (in_use, users) = self.expectation(&s);
        let blocks = self.blocks(vcpu).clone();
        let block = if users { &blocks.user_hw } else { &blocks.regs };
        let host = self.host_before.get(&pcpu).copied();
        let moves = accesses
            .iter()
            .filter(|a| {
                matches!(
                    a.reg,
                    HypReg::Sys(SysReg::Dbg(..)) | HypReg::Sys(SysReg::MdccintEl1)
                )
            })
            .count();
        let tda = live.mdcr_el2 & (MDCR_EL2_TDA | MDCR_EL2_TDE) != 0;
        let user_on = !s.control.is_empty();
        if in_use {
            'regs: for bank in DbgBank::ALL {
                for n in 0..self.implemented(bank) {
                    let want = dbg_value(block, bank, n);
                    let got = live.banks[bank as usize].get(n).copied().unwrap_or(0);
                    if want != got {
                        let reg = SysReg::Dbg(bank, n as u8);
                        let held = match &host {
                            Some(h) if h.banks[bank as usize].get(n) == Some(&got) => {
                                format!("held the host's {got:#x}")
                            }
                            _ => format!("held {got:#x}"),
                        };
                        let whose = if users { "userspace's" } else { "the guest's" };
                        let inv = if users && user_on {
                            Invariant::UserspaceDebug
                        } else {
                            Invariant::GuestStateLoaded
                        };
                        let msg =
                            format!("{reg} {held} while the guest ran; expected {whose} {want:#x}");
                        self.report(
                            inv,
                            vcpu,
                            Some(pcpu),
                            Some(reg.to_string()),
                            Some(want),
                            Some(got),
                            msg,
                        );
                        break 'regs;
                    }
                }
            }
            if live.mdccint_el1 != s.mdccint {
                let msg = format!(
                    "MDCCINT_EL1 held {:#x} while the guest ran with its debug state loaded; expected the guest's {:#x}",
                    live.mdccint_el1, s.mdccint
                );
                self.report(
                    Invariant::MdccintMdcr,
                    vcpu,
                    Some(pcpu),
                    Some("MDCCINT_EL1".into()),
                    Some(s.mdccint),
                    Some(live.mdccint_el1),
                    msg,
                );
            }
            if self.era == Era::Three && !users && tda {
                let msg = format!(
                    "the guest owns its debug registers but MDCR_EL2 = {:#x} still traps them (TDA): every access exits to EL2",
                    live.mdcr_el2
                );
                self.report_live(
                    Invariant::Lazy,
                    vcpu,
                    pcpu,
                    "MDCR_EL2",
                    None,
                    live.mdcr_el2,
                    msg,
                );
            }
        } else {
            if moves > 0 {
                let first = first_debug_move(accesses);
                let msg = format!(
                    "the guest does not use its debug registers (MDSCR_EL1 = {:#x}, nobody debugs it) but the switch to the guest moved {moves} of them, {} first",
                    s.mdscr,
                    first.as_deref().unwrap_or("?")
                );
                self.report(
                    Invariant::Lazy,
                    vcpu,
                    Some(pcpu),
                    first,
                    Some(0),
                    Some(moves as u64),
                    msg,
                );
            }
            if !tda {
                let msg = format!(
                    "the guest's debug registers are not loaded but MDCR_EL2 = {:#x} does not trap them (TDA clear): a first use would be missed",
                    live.mdcr_el2
                );
                self.report_live(
                    Invariant::Lazy,
                    vcpu,
                    pcpu,
                    "MDCR_EL2",
                    None,
                    live.mdcr_el2,
                    msg,
                );
            }
        }
        // MDSCR_EL1 the guest runs with.
        let use_hw = s.control.contains(GuestDebugControl::USE_HW);
        if !user_on && !s.oslk && live.mdscr_el1 != s.mdscr {
            let msg = format!(
                "MDSCR_EL1 held {:#x} while the guest ran; the guest wrote {:#x}",
                live.mdscr_el1, s.mdscr
            );
            self.report(
                Invariant::GuestStateLoaded,
                vcpu,
                Some(pcpu),
                Some("MDSCR_EL1".into()),
                Some(s.mdscr),
                Some(live.mdscr_el1),
                msg,
            );
        }
        if use_hw && live.mdscr_el1 & DBG_MDSCR_MDE == 0 {
            let msg = format!(
                "userspace set KVM_GUESTDBG_USE_HW but the guest ran with MDSCR_EL1 = {:#x} (MDE clear)",
                live.mdscr_el1
            );
            self.report_live(
                Invariant::UserspaceDebug,
                vcpu,
                pcpu,
                "MDSCR_EL1",
                None,
                live.mdscr_el1,
                msg,
            );
        }
        if s.control.contains(GuestDebugControl::SINGLESTEP) && live.mdscr_el1 & DBG_MDSCR_SS == 0 {
            let msg = format!(
                "userspace set KVM_GUESTDBG_SINGLESTEP but the guest ran with MDSCR_EL1 = {:#x} (SS clear)",
                live.mdscr_el1
            );
            self.report_live(
                Invariant::UserspaceDebug,
                vcpu,
                pcpu,
                "MDSCR_EL1",
                None,
                live.mdscr_el1,
                msg,
            );
        }
        if s.oslk && !use_hw && live.mdscr_el1 & DBG_MDSCR_MDE != 0 {
            let msg = format!(
                "the guest's OS lock is set but it ran with MDSCR_EL1 = {:#x} (MDE set)",
                live.mdscr_el1
            );
            self.report_live(
                Invariant::EventDelivery,
                vcpu,
                pcpu,
                "MDSCR_EL1",
                None,
                live.mdscr_el1,
                msg,
            );
        }
        if user_on && live.mdcr_el2 & MDCR_EL2_TDE == 0 {
            let msg = format!(
                "userspace debugs the guest but MDCR_EL2 = {:#x} has TDE clear: debug events stay in the guest",
                live.mdcr_el2
            );
            self.report_live(
                Invariant::EventDelivery,
                vcpu,
                pcpu,
                "MDCR_EL2",
                None,
                live.mdcr_el2,
                msg,
            );
        }
        self.check_mdcr_contract(vcpu, pcpu, live.mdcr_el2, host.map(|h| h.mdcr_el2));
        let s = self.shadow(vcpu);
        s.entry_in_use = in_use;
        s.dirty_write = false;
    }

    /// The MDCR_EL2 every vcpu runs with whatever its debug state: the OS lock and MDRAR
    /// always trap (KVM emulates them: invariant 6), and the PMU/SPE/trace traps and the
    /// host's HPMN partition are kept (kernel-flows.md: "MDCR_EL2 = HPMN | TPM | TPMCR ...",
    /// plus TPMS and TTRF from v4.17: invariant 9).
    fn check_mdcr_contract(&mut self, vcpu: usize, pcpu: usize, mdcr: u64, host_mdcr: Option<u64>) {
        let always_traps = MDCR_EL2_TDOSA | MDCR_EL2_TDRA;
        if mdcr & always_traps != always_traps {
            let msg = format!(
                "the guest ran with MDCR_EL2 = {mdcr:#x}: TDOSA and TDRA must always be set (KVM emulates the OS lock and MDRAR_EL1)"
            );
            self.report_live(
                Invariant::Lazy,
                vcpu,
                pcpu,
                "MDCR_EL2",
                Some(always_traps),
                mdcr,
                msg,
            );
        }
        let mut kept = MDCR_EL2_TPM | MDCR_EL2_TPMCR;
        if self.era != Era::One {
            kept |= MDCR_EL2_TPMS | MDCR_EL2_TTRF;
        }
        let hpmn_ok = host_mdcr.is_none_or(|h| h & MDCR_EL2_HPMN_MASK == mdcr & MDCR_EL2_HPMN_MASK);
        if mdcr & kept != kept || !hpmn_ok {
            let msg = format!(
                "the guest ran with MDCR_EL2 = {mdcr:#x}: it must keep the host's HPMN ({:#x}) and the PMU/SPE/trace traps {kept:#x}",
                host_mdcr.unwrap_or(0) & MDCR_EL2_HPMN_MASK
            );
            self.report_live(
                Invariant::MdccintMdcr,
                vcpu,
                pcpu,
                "MDCR_EL2",
                Some(kept),
                mdcr,
                msg,
            );
        }
    }

    fn on_exited(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        reason: &ExitReason,
        instructions: u64,
        host: &HostSnapshot,
        accesses: &[AccessRecord],
    ) {
        self.check_accesses(vcpu, pcpu, accesses, "back to the host");
        let s = *self.shadow(vcpu);
        if !s.entry_in_use {
            let moves = accesses
                .iter()
                .filter(|a| {
                    matches!(
                        a.reg,
                        HypReg::Sys(SysReg::Dbg(..)) | HypReg::Sys(SysReg::MdccintEl1)
                    )
                })
                .count();
            if moves > 0 {
                let first = first_debug_move(accesses);
                let msg = format!(
                    "the guest did not use its debug registers but the switch back to the host moved {moves} of them, {} first",
                    first.as_deref().unwrap_or("?")
                );
                self.report(
                    Invariant::Lazy,
                    vcpu,
                    Some(pcpu),
                    first,
                    Some(0),
                    Some(moves as u64),
                    msg,
                );
            }
        }
        if let Some(before) = self.host_before.get(&pcpu).copied() {
            self.compare_host(vcpu, pcpu, &before, host);
        }
        if let Some(c) = self.shadow(vcpu).step_count.as_mut() {
            *c += instructions;
        }
        if let ExitReason::Debug { esr, .. } = reason {
            self.on_debug_exit(vcpu, pcpu, *esr);
        }
    }

    fn on_debug_exit(&mut self, vcpu: usize, pcpu: usize, esr: Esr) {
        let s = *self.shadow(vcpu);
        if s.control.is_empty() {
            let msg = format!(
                "{} exited to userspace but nobody debugs the guest: it belongs to the guest",
                hypdbg_model::esr::ec_name(esr.ec())
            );
            self.report(
                Invariant::EventDelivery,
                vcpu,
                Some(pcpu),
                None,
                None,
                Some(esr.bits()),
                msg,
            );
            return;
        }
        if esr.ec() == ESR_ELX_EC_SOFTSTP_LOW
            && let Some(n) = s.step_count
        {
            // One instruction per step; none only when an exception entry (an UNDEF or an
            // injected or taken exception: the step of an excepting instruction) came
            // between.
            if n > 1 || (n == 0 && !s.exception_since_step) {
                let msg = format!(
                    "KVM_GUESTDBG_SINGLESTEP: the guest executed {n} instructions between two step exits; exactly one is allowed"
                );
                self.report(
                    Invariant::UserspaceDebug,
                    vcpu,
                    Some(pcpu),
                    None,
                    Some(1),
                    Some(n),
                    msg,
                );
            }
            let s = self.shadow(vcpu);
            s.step_count = Some(0);
            s.exception_since_step = false;
        }
    }

    fn compare_host(
        &mut self,
        vcpu: usize,
        pcpu: usize,
        before: &HostSnapshot,
        after: &HostSnapshot,
    ) {
        for bank in DbgBank::ALL {
            let (b, a) = (&before.banks[bank as usize], &after.banks[bank as usize]);
            if let Some(n) = (0..b.len()).find(|&n| b.get(n) != a.get(n)) {
                let reg = SysReg::Dbg(bank, n as u8);
                let (want, got) = (b[n], a.get(n).copied().unwrap_or(0));
                let msg = format!(
                    "after the run the host's {reg} is {got:#x}; it was {want:#x} before the entry"
                );
                self.report(
                    Invariant::HostRestored,
                    vcpu,
                    Some(pcpu),
                    Some(reg.to_string()),
                    Some(want),
                    Some(got),
                    msg,
                );
                return;
            }
        }
        let pairs = [
            (
                "MDSCR_EL1",
                before.mdscr_el1,
                after.mdscr_el1,
                Invariant::HostRestored,
            ),
            (
                "CONTEXTIDR_EL1",
                before.contextidr_el1,
                after.contextidr_el1,
                Invariant::HostRestored,
            ),
            (
                "OSLSR_EL1",
                before.oslsr_el1,
                after.oslsr_el1,
                Invariant::HostRestored,
            ),
            (
                "MDCCINT_EL1",
                before.mdccint_el1,
                after.mdccint_el1,
                Invariant::MdccintMdcr,
            ),
            (
                "MDCR_EL2",
                before.mdcr_el2,
                after.mdcr_el2,
                Invariant::MdccintMdcr,
            ),
        ];
        for (name, want, got, inv) in pairs {
            if want != got {
                let msg = format!(
                    "after the run the host's {name} is {got:#x}; it was {want:#x} before the entry"
                );
                self.report(
                    inv,
                    vcpu,
                    Some(pcpu),
                    Some(name.into()),
                    Some(want),
                    Some(got),
                    msg,
                );
            }
        }
    }
}
