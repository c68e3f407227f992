//! Guest execution, one instruction at a time, against the live registers the world switch
//! left: breakpoints and watchpoints are matched with `hypdbg-model` on the physical
//! DBG*R\<n>_EL1, gated by the live MDSCR_EL1, PSTATE.D, the physical OS lock and MDCR_EL2.TDE
//! (AArch64.CheckBreakpoint, CheckWatchpoint, CheckSoftwareStep, SSAdvance).
//!
//! Exceptions the guest takes to EL1 are recorded as they are taken and go to the vector at
//! VBAR_EL1, where the guest's runtime ([`super::runtime`], real A64 code) handles them. Data
//! accesses outside every memory slot are MMIO: they exit to EL2 before they complete (a
//! stage-2 abort), as on a real host.

use hypdbg_model::ctrl::{
    DBG_MDSCR_SS, DBG_SPSR_SS, OSLSR_EL1_OSLK, PSR_D_BIT, PSR_DAIF_MASK, PSR_MODE_EL0T,
    PSR_MODE_EL1H, PSR_MODE_MASK, spsr_el,
};
use hypdbg_model::esr::{ESR_ELX_EC_WATCHPT_CUR, ESR_ELX_EC_WATCHPT_LOW, Esr, SysRegIss};
use hypdbg_model::gating::{DebugContext, DebugEvent, access_traps};
use hypdbg_model::matching::{DataAccess, MatchResult};
use hypdbg_model::{El, SysReg};

use super::insn::Insn;
use super::memory::GuestMemory;
use crate::access::PhysRegs;
use crate::context::KvmVcpu;
use crate::events::{ExitReason, GuestEvent, Mmio};
use hypdbg_model::guest_abi::is_memory;

/// VBAR_EL1 of every modelled guest (`guest_abi::RUNTIME_BASE`).
pub const GUEST_VBAR: u64 = hypdbg_model::guest_abi::RUNTIME_BASE;
/// Synchronous exception from the current EL with SP_ELx.
pub const VECTOR_CURRENT_SYNC: u64 = GUEST_VBAR + 0x200;
/// Synchronous exception from a lower EL using AArch64.
pub const VECTOR_LOWER_SYNC: u64 = GUEST_VBAR + 0x400;

/// One guest run segment between a world switch to the guest and the next exit.
pub struct GuestRun<'a> {
    /// The vcpu (GPRs, PC, PSTATE, EL1 registers).
    pub vcpu: &'a mut KvmVcpu,
    /// The live physical registers.
    pub regs: &'a mut PhysRegs,
    /// Guest memory.
    pub mem: &'a mut GuestMemory,
    /// Where to record what the guest does (checking mode), and whether to record every
    /// instruction.
    pub events: Option<(&'a mut Vec<GuestEvent>, bool)>,
    /// Exceptions the guest's handler took (always kept).
    pub exceptions: &'a mut Vec<GuestEvent>,
    /// A host interrupt arrives before this many more instructions (None: none).
    pub irq_in: Option<u64>,
    /// Instructions left in this KVM_RUN.
    pub budget: &'a mut u64,
    /// Steps completed in this segment: instructions that completed, plus exceptions the
    /// guest's instructions took to EL1 (the unit the software step state machine counts).
    pub completed: u64,
}

/// The outcome of executing one instruction.
enum Step {
    /// Completed: the step state machine advances (SSAdvance).
    Continue,
    /// An exception return: PSTATE.SS was set by DebugExceptionReturnSS, no SSAdvance.
    Returned,
    /// An exception taken to the guest's EL1 (PSTATE.SS cleared by the exception entry).
    Exception,
    /// Something for EL2.
    Exit(ExitReason),
}

impl GuestRun<'_> {
    fn record(&mut self, e: GuestEvent) {
        if let Some((log, _)) = self.events.as_mut() {
            log.push(e);
        }
    }

    fn el(&self) -> El {
        spsr_el(self.vcpu.cpsr())
    }

    fn gate(&self) -> DebugContext {
        DebugContext {
            el: self.el(),
            pstate_d: self.vcpu.cpsr() & PSR_D_BIT != 0,
            mdscr: self.regs.file.mdscr_el1,
            mdcr_el2: self.regs.mdcr_el2,
            oslk: self.regs.file.oslsr_el1 & OSLSR_EL1_OSLK != 0,
            os_double_lock: self.regs.file.osdlr_el1 & 1 != 0,
        }
    }

    fn x(&self, r: u8) -> u64 {
        if r >= 31 {
            0
        } else {
            self.vcpu.arch.ctxt.regs.regs[usize::from(r)]
        }
    }

    fn set_x(&mut self, r: u8, v: u64) {
        if r < 31 {
            self.vcpu.arch.ctxt.regs.regs[usize::from(r)] = v;
        }
    }

    /// The stack pointer PSTATE.SP selects: SP_EL1 at EL1h, SP_EL0 at EL0t and EL1t.
    fn sp_slot(&mut self) -> &mut u64 {
        let ctxt = &mut self.vcpu.arch.ctxt;
        if ctxt.regs.pstate & PSR_MODE_MASK == PSR_MODE_EL1H {
            &mut ctxt.sp_el1
        } else {
            &mut ctxt.regs.sp
        }
    }

    /// Xn|SP as a base register.
    fn xsp(&mut self, r: u8) -> u64 {
        if r == 31 { *self.sp_slot() } else { self.x(r) }
    }

    fn set_xsp(&mut self, r: u8, v: u64) {
        if r == 31 {
            *self.sp_slot() = v;
        } else {
            self.set_x(r, v);
        }
    }

    /// Run until something exits to EL2.
    pub fn run(&mut self) -> ExitReason {
        let mut stepped_here = false;
        loop {
            if *self.budget == 0 {
                return ExitReason::Budget;
            }
            if let Some(n) = self.irq_in.as_mut() {
                if *n == 0 {
                    return ExitReason::Irq;
                }
                *n -= 1;
            }
            let gate = self.gate();
            // CheckSoftwareStep: an active-pending step is taken before the next instruction.
            if gate.step_active() && !self.vcpu.pstate_ss() {
                let pc = self.vcpu.arch.ctxt.regs.pc;
                match self.debug_exception(
                    DebugEvent::SoftwareStep {
                        stepped: stepped_here,
                    },
                    pc,
                    0,
                ) {
                    Step::Exit(r) => return r,
                    _ => self.completed += 1,
                }
                stepped_here = false;
                continue;
            }
            let active_not_pending = gate.step_active() && self.vcpu.pstate_ss();
            *self.budget -= 1;
            match self.execute_one(&gate) {
                Step::Exit(r) => {
                    if matches!(r, ExitReason::Hvc { .. }) {
                        self.completed += 1;
                    }
                    return r;
                }
                Step::Returned | Step::Exception => self.completed += 1,
                Step::Continue => {
                    self.completed += 1;
                    // SSAdvance on completing the instruction.
                    if self.regs.file.mdscr_el1 & DBG_MDSCR_SS != 0 && self.vcpu.pstate_ss() {
                        self.vcpu.set_pstate_ss(false);
                    }
                }
            }
            if active_not_pending {
                stepped_here = true;
            }
        }
    }

    fn execute_one(&mut self, gate: &DebugContext) -> Step {
        let pc = self.vcpu.arch.ctxt.regs.pc;
        let Some(word) = self.mem.fetch(pc) else {
            return Step::Exit(ExitReason::ProgramEnd { pc });
        };
        // AArch64.CheckBreakpoint, before the instruction executes.
        if gate.breakpoints_enabled() {
            match self.regs.file.match_env().check_breakpoint(pc, gate.el).0 {
                MatchResult::Hit { .. } => {
                    return self.debug_exception(DebugEvent::Breakpoint, pc, 0);
                }
                MatchResult::Unpredictable { rule } => {
                    self.record(GuestEvent::Unpredictable {
                        pc,
                        rule: rule.to_string(),
                    });
                }
                MatchResult::Miss => {}
            }
        }
        let Some(insn) = Insn::decode(word) else {
            return self.take_el1_exception(Esr::unknown(), None, pc);
        };
        let step = self.execute(insn, gate, pc);
        if matches!(step, Step::Continue)
            && let Some((log, true)) = self.events.as_mut()
        {
            log.push(GuestEvent::Executed {
                pc,
                insn: insn.to_string(),
            });
        }
        step
    }

    fn advance(&mut self) -> Step {
        self.vcpu.arch.ctxt.regs.pc = self.vcpu.arch.ctxt.regs.pc.wrapping_add(4);
        Step::Continue
    }

    fn branch(&mut self, offset: i32) -> Step {
        self.vcpu.arch.ctxt.regs.pc = self
            .vcpu
            .arch
            .ctxt
            .regs
            .pc
            .wrapping_add(offset as i64 as u64);
        Step::Continue
    }

    fn execute(&mut self, insn: Insn, gate: &DebugContext, pc: u64) -> Step {
        match insn {
            Insn::Ldr { .. }
            | Insn::Str { .. }
            | Insn::Ldp { .. }
            | Insn::Stp { .. }
            | Insn::DcZva { .. } => self.data_access(insn, gate, pc),
            Insn::Brk(_)
            | Insn::Svc(_)
            | Insn::Hvc(_)
            | Insn::Eret
            | Insn::Msr { .. }
            | Insn::Mrs { .. } => self.exception_or_system(insn, gate, pc),
            _ => self.compute(insn, pc),
        }
    }

    /// Data processing, branches and DAIF: registers only.
    fn compute(&mut self, insn: Insn, pc: u64) -> Step {
        match insn {
            Insn::Nop | Insn::Isb => self.advance(),
            Insn::Movz { rd, imm16, shift } => {
                self.set_x(rd, u64::from(imm16) << shift);
                self.advance()
            }
            Insn::Movk { rd, imm16, shift } => {
                let v = (self.x(rd) & !(0xffffu64 << shift)) | u64::from(imm16) << shift;
                self.set_x(rd, v);
                self.advance()
            }
            Insn::Adr { rd, offset } => {
                self.set_x(rd, pc.wrapping_add(offset as i64 as u64));
                self.advance()
            }
            Insn::AddReg { rd, rn, rm } => {
                let v = self.x(rn).wrapping_add(self.x(rm));
                self.set_x(rd, v);
                self.advance()
            }
            Insn::SubReg { rd, rn, rm } => {
                let v = self.x(rn).wrapping_sub(self.x(rm));
                self.set_x(rd, v);
                self.advance()
            }
            Insn::AddImm { rd, rn, imm12 } => {
                let v = self.xsp(rn).wrapping_add(u64::from(imm12));
                self.set_xsp(rd, v);
                self.advance()
            }
            Insn::SubImm { rd, rn, imm12 } => {
                let v = self.xsp(rn).wrapping_sub(u64::from(imm12));
                self.set_xsp(rd, v);
                self.advance()
            }
            Insn::LslImm { rd, rn, shift } => {
                let v = self.x(rn) << shift;
                self.set_x(rd, v);
                self.advance()
            }
            Insn::LsrImm { rd, rn, shift } => {
                let v = self.x(rn) >> shift;
                self.set_x(rd, v);
                self.advance()
            }
            Insn::OrrReg { rd, rn, rm } => {
                let v = self.x(rn) | self.x(rm);
                self.set_x(rd, v);
                self.advance()
            }
            Insn::B { offset } => self.branch(offset),
            Insn::Cbz { rt, offset } => {
                if self.x(rt) == 0 {
                    self.branch(offset)
                } else {
                    self.advance()
                }
            }
            Insn::Cbnz { rt, offset } => {
                if self.x(rt) != 0 {
                    self.branch(offset)
                } else {
                    self.advance()
                }
            }
            Insn::DaifSet(imm) | Insn::DaifClr(imm) => {
                // The immediate's D, A, I, F are PSTATE bits 9..6; only D gates debug
                // exceptions here (the guest takes no interrupts).
                let bits = u64::from(imm & 0xf) << 6;
                if matches!(insn, Insn::DaifSet(_)) {
                    *self.vcpu.cpsr_mut() |= bits;
                } else {
                    *self.vcpu.cpsr_mut() &= !bits;
                }
                self.advance()
            }
            _ => self.advance(),
        }
    }

    /// Loads and stores (AArch64.CheckWatchpoint first, then the access).
    fn data_access(&mut self, insn: Insn, gate: &DebugContext, pc: u64) -> Step {
        match insn {
            Insn::Ldr { size, rt, rn, imm } => {
                let addr = self.xsp(rn).wrapping_add(u64::from(imm));
                if let Some(s) = self.watch(gate, addr, size, false, pc) {
                    return s;
                }
                if !is_memory(addr, u64::from(size)) {
                    return Step::Exit(ExitReason::Mmio(Mmio::new(addr, size, None, rt)));
                }
                let v = self.mem.read_uint(addr, usize::from(size));
                self.set_x(rt, v);
                self.record(GuestEvent::Access {
                    address: addr,
                    size,
                    is_store: false,
                });
                self.advance()
            }
            Insn::Str { size, rt, rn, imm } => {
                let addr = self.xsp(rn).wrapping_add(u64::from(imm));
                if let Some(s) = self.watch(gate, addr, size, true, pc) {
                    return s;
                }
                let v = self.x(rt);
                if !is_memory(addr, u64::from(size)) {
                    return Step::Exit(ExitReason::Mmio(Mmio::new(addr, size, Some(v), rt)));
                }
                self.mem.write_uint(addr, usize::from(size), v);
                self.record(GuestEvent::Access {
                    address: addr,
                    size,
                    is_store: true,
                });
                self.advance()
            }
            Insn::Ldp { rt, rt2, rn, imm } | Insn::Stp { rt, rt2, rn, imm } => {
                let is_store = matches!(insn, Insn::Stp { .. });
                let addr = self.xsp(rn).wrapping_add(imm as i64 as u64);
                if let Some(s) = self.watch(gate, addr, 16, is_store, pc) {
                    return s;
                }
                if !is_memory(addr, 16) {
                    return Step::Exit(ExitReason::MmioNoSyndrome { addr });
                }
                if is_store {
                    let (a, b) = (self.x(rt), self.x(rt2));
                    self.mem.write_uint(addr, 8, a);
                    self.mem.write_uint(addr.wrapping_add(8), 8, b);
                } else {
                    let a = self.mem.read_uint(addr, 8);
                    let b = self.mem.read_uint(addr.wrapping_add(8), 8);
                    self.set_x(rt, a);
                    self.set_x(rt2, b);
                }
                self.record(GuestEvent::Access {
                    address: addr,
                    size: 16,
                    is_store,
                });
                self.advance()
            }
            Insn::DcZva { rt } => {
                let addr = self.x(rt) & !63;
                if let Some(s) = self.watch(gate, addr, 64, true, pc) {
                    return s;
                }
                if !is_memory(addr, 64) {
                    return Step::Exit(ExitReason::MmioNoSyndrome { addr });
                }
                self.mem.write(addr, &[0u8; 64]);
                self.record(GuestEvent::Access {
                    address: addr,
                    size: 64,
                    is_store: true,
                });
                self.advance()
            }
            _ => self.advance(),
        }
    }

    /// Exception-generating instructions, ERET, and system register accesses.
    fn exception_or_system(&mut self, insn: Insn, gate: &DebugContext, pc: u64) -> Step {
        match insn {
            Insn::Brk(imm) => self.debug_exception(DebugEvent::Brk(imm), pc, 0),
            Insn::Svc(imm) => {
                // CallSupervisor advances the step state machine before the exception.
                self.vcpu.set_pstate_ss(false);
                self.take_el1_exception(Esr::svc(imm), None, pc.wrapping_add(4))
            }
            Insn::Hvc(imm) => {
                if self.el() == El::El0 {
                    return self.take_el1_exception(Esr::unknown(), None, pc);
                }
                self.vcpu.set_pstate_ss(false);
                self.vcpu.arch.ctxt.regs.pc = pc.wrapping_add(4);
                Step::Exit(ExitReason::Hvc { imm })
            }
            Insn::Eret => {
                if self.el() == El::El0 {
                    return self.take_el1_exception(Esr::unknown(), None, pc);
                }
                self.eret(gate);
                Step::Returned
            }
            Insn::Msr { enc, rt } | Insn::Mrs { rt, enc } => {
                let is_write = matches!(insn, Insn::Msr { .. });
                self.sysreg(enc, rt, is_write, pc)
            }
            _ => self.advance(),
        }
    }

    /// AArch64.CheckWatchpoint for a data access, before it is performed.
    fn watch(
        &mut self,
        gate: &DebugContext,
        address: u64,
        size: u8,
        is_store: bool,
        pc: u64,
    ) -> Option<Step> {
        if !gate.breakpoints_enabled() {
            return None;
        }
        let access = DataAccess {
            address,
            size,
            is_store,
            rmw: false,
            el: gate.el,
        };
        match self.regs.file.match_env().check_watchpoint(&access).0 {
            MatchResult::Hit { address: far } => {
                Some(self.debug_exception(DebugEvent::Watchpoint { wnr: is_store }, pc, far))
            }
            MatchResult::Unpredictable { rule } => {
                self.record(GuestEvent::Unpredictable {
                    pc,
                    rule: rule.to_string(),
                });
                None
            }
            MatchResult::Miss => None,
        }
    }

    /// MSR/MRS: trapped to EL2 per MDCR_EL2, else performed on the live register.
    fn sysreg(
        &mut self,
        enc: hypdbg_model::sysreg::Encoding,
        rt: u8,
        is_write: bool,
        pc: u64,
    ) -> Step {
        let Some(reg) = SysReg::from_encoding(enc) else {
            return self.take_el1_exception(Esr::unknown(), None, pc);
        };
        if self.el() == El::El0 {
            return self.take_el1_exception(Esr::unknown(), None, pc);
        }
        // An unimplemented DBG{B,W}{C,V}R<n> is UNDEFINED at EL1 before any trap to EL2.
        if let SysReg::Dbg(bank, n) = reg
            && usize::from(n) >= self.regs.file.features().count(bank)
        {
            return self.take_el1_exception(Esr::unknown(), None, pc);
        }
        if access_traps(reg, self.regs.mdcr_el2) {
            let iss = SysRegIss {
                encoding: enc,
                rt,
                is_read: !is_write,
            };
            return Step::Exit(ExitReason::SysRegTrap {
                esr: Esr::sys64(iss),
            });
        }
        let undefined = if is_write {
            !reg.is_writable()
        } else {
            !reg.is_readable()
        };
        if undefined {
            return self.take_el1_exception(Esr::unknown(), None, pc);
        }
        let live = matches!(
            reg,
            SysReg::Dbg(..)
                | SysReg::MdscrEl1
                | SysReg::MdccintEl1
                | SysReg::ContextidrEl1
                | SysReg::OsdlrEl1
        );
        if is_write {
            let v = self.x(rt);
            if reg == SysReg::OslarEl1 {
                let f = &mut self.regs.file.oslsr_el1;
                *f = (*f & !OSLSR_EL1_OSLK) | if v & 1 != 0 { OSLSR_EL1_OSLK } else { 0 };
            } else if live {
                if self.regs.file.write(reg, v).is_err() {
                    return self.take_el1_exception(Esr::unknown(), None, pc);
                }
            } else {
                self.vcpu.arch.ctxt.sys_regs.set(reg, v);
            }
            self.record(GuestEvent::SysRegWrite {
                reg,
                value: v,
                trapped: false,
            });
        } else {
            let v = if live || reg == SysReg::OslsrEl1 {
                match self.regs.file.read(reg) {
                    Ok(v) => v,
                    Err(_) => return self.take_el1_exception(Esr::unknown(), None, pc),
                }
            } else if reg == SysReg::IdAa64dfr0El1 {
                // HCR_EL2.TID3: KVM answers with the VM's view (access_id_reg).
                self.vcpu.id_aa64dfr0_el1
            } else if reg == SysReg::DbgauthstatusEl1 {
                hypdbg_model::ctrl::DBGAUTHSTATUS_EL1_HW
            } else if reg.is_raz_wi() {
                // No ROM table, power-down request, claim tags, DCC or OS save/restore.
                0
            } else {
                self.vcpu.arch.ctxt.sys_regs.get(reg).unwrap_or(0)
            };
            self.set_x(rt, v);
            self.record(GuestEvent::SysRegRead {
                reg,
                value: v,
                trapped: false,
            });
        }
        self.advance()
    }

    /// A debug event: to EL2 (exit) with MDCR_EL2.TDE, else to the guest's EL1 handler.
    /// `preferred` is the preferred return address; SPSR.SS is the current PSTATE.SS except
    /// after a step (0).
    fn debug_exception(&mut self, event: DebugEvent, preferred: u64, far: u64) -> Step {
        let gate = self.gate();
        let esr = gate.syndrome(event);
        if matches!(event, DebugEvent::SoftwareStep { .. }) {
            self.vcpu.set_pstate_ss(false);
        }
        if gate.target_of(event) == El::El2 {
            self.vcpu.arch.ctxt.regs.pc = preferred;
            return Step::Exit(ExitReason::Debug { esr, far });
        }
        let far = matches!(event, DebugEvent::Watchpoint { .. }).then_some(far);
        self.take_el1_exception(esr, far, preferred)
    }

    /// AArch64.TakeException to EL1: SPSR_EL1, ELR_EL1, ESR_EL1, FAR_EL1; PSTATE.EL = 1,
    /// D, A, I, F = 1, SS = 0; PC = the vector. Recorded as the guest takes it.
    fn take_el1_exception(&mut self, esr: Esr, far: Option<u64>, preferred: u64) -> Step {
        let ev = exception_event(self.vcpu, esr, far, preferred);
        self.exceptions.push(ev.clone());
        self.record(ev);
        take_el1_exception(self.vcpu, esr, far, preferred);
        Step::Exception
    }

    /// ERET from EL1: PSTATE from SPSR_EL1 (SS per DebugExceptionReturnSS), PC = ELR_EL1.
    fn eret(&mut self, gate: &DebugContext) {
        let spsr = self.vcpu.arch.ctxt.sys_regs.spsr_el1;
        let dest = spsr_el(spsr);
        let ss = gate.exception_return_ss(spsr, dest);
        let mode = if dest == El::El0 {
            PSR_MODE_EL0T
        } else {
            PSR_MODE_EL1H
        };
        let mut pstate = (spsr & !(PSR_MODE_MASK | DBG_SPSR_SS)) | mode;
        if ss {
            pstate |= DBG_SPSR_SS;
        }
        self.vcpu.arch.ctxt.regs.pstate = pstate;
        self.vcpu.arch.ctxt.regs.pc = self.vcpu.arch.ctxt.sys_regs.elr_el1;
    }
}

/// The record of an exception the guest is about to take from its current state: what its
/// runtime logs (FAR_EL1 only for watchpoints, where it is defined).
pub fn exception_event(vcpu: &KvmVcpu, esr: Esr, far: Option<u64>, preferred: u64) -> GuestEvent {
    let far = matches!(esr.ec(), ESR_ELX_EC_WATCHPT_CUR | ESR_ELX_EC_WATCHPT_LOW)
        .then(|| far.unwrap_or(vcpu.arch.ctxt.sys_regs.far_el1));
    GuestEvent::Exception {
        esr,
        elr: preferred,
        far,
        from: spsr_el(vcpu.cpsr()),
    }
}

/// AArch64.TakeException to the guest's EL1 (also used by KVM to inject an exception).
pub fn take_el1_exception(vcpu: &mut KvmVcpu, esr: Esr, far: Option<u64>, preferred: u64) {
    let pstate = vcpu.cpsr();
    let from = spsr_el(pstate);
    let sys = &mut vcpu.arch.ctxt.sys_regs;
    sys.spsr_el1 = pstate;
    sys.elr_el1 = preferred;
    sys.esr_el1 = esr.bits();
    if let Some(f) = far {
        sys.far_el1 = f;
    }
    let regs = &mut vcpu.arch.ctxt.regs;
    regs.pstate = (pstate & !(PSR_MODE_MASK | DBG_SPSR_SS)) | PSR_MODE_EL1H | PSR_DAIF_MASK;
    regs.pc = if from == El::El0 {
        VECTOR_LOWER_SYNC
    } else {
        VECTOR_CURRENT_SYNC
    };
}
