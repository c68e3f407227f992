//! The invariants a userspace observer of a real kernel can check, from what every KVM_RUN
//! returned ([`RealWatch`]): 7 (a userspace step stops after exactly one instruction, judged
//! by the PC and the syndrome's ISV bit) and 8 (no debug exit reaches userspace unless it
//! debugs the guest; a step exit only under SINGLESTEP). Invariant 2 is the agent's host perf
//! breakpoint, checked at the end of a run; 1 and 3 are what the guest's exception log and
//! read-backs show, judged by the scenario's expectations and by `hypdbg diff`. Invariants 4,
//! 5, 6 and 9 need the registers while the guest runs: simulator-only.

use hypdbg_hyp::guest::Insn;
use hypdbg_hyp::vm::VcpuExit;
use hypdbg_model::esr::{ESR_ELX_EC_SOFTSTP_LOW, Esr};
use hypdbg_model::guest_abi::RUNTIME_BASE;
use hypdbg_model::uapi::GuestDebugControl;

pub use crate::checker::Finding;
use crate::checker::Invariant;

/// What one vcpu's last KVM_RUN left for the next.
#[derive(Clone, Copy, Debug, Default)]
struct Last {
    /// The PC after it.
    pc: u64,
    /// KVM completes an instruction on the next entry (the exit was MMIO).
    completes_on_entry: bool,
    /// KVM completed an instruction before returning (a forwarded HVC, a system event, an
    /// immediate_exit that finished an MMIO access): its step may be pending.
    completed: bool,
}

/// The per-vcpu state of the checks.
#[derive(Clone, Debug, Default)]
pub struct RealWatch {
    last: Vec<Last>,
    found: Vec<Finding>,
}

impl RealWatch {
    /// Watch `vcpus` vcpus starting at `pc`.
    pub fn new(vcpus: usize, pc: u64) -> Self {
        RealWatch {
            last: vec![
                Last {
                    pc,
                    ..Last::default()
                };
                vcpus
            ],
            found: Vec::new(),
        }
    }

    /// Set vcpu `v`'s PC (KVM_SET_ONE_REG PC, an injected exception).
    pub fn set_pc(&mut self, v: usize, pc: u64) {
        if let Some(l) = self.last.get_mut(v) {
            l.pc = pc;
            l.completes_on_entry = false;
        }
    }

    /// The findings so far, taken.
    pub fn take(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.found)
    }

    /// Add a finding made elsewhere (the host breakpoint's check before a migration).
    pub fn push(&mut self, f: Finding) {
        self.found.push(f);
    }

    fn find(&mut self, invariant: Invariant, vcpu: usize, message: String) {
        self.found.push(Finding {
            invariant,
            vcpu,
            message,
        });
    }

    /// One KVM_RUN of vcpu `v` under `control` returned `exit` with the PC at `pc`;
    /// `insn_at(pc)` decodes the guest's instruction at an address.
    pub fn on_run(
        &mut self,
        v: usize,
        control: GuestDebugControl,
        immediate_exit: bool,
        exit: &VcpuExit,
        pc: u64,
        insn_at: &mut dyn FnMut(u64) -> Option<Insn>,
    ) {
        let Some(last) = self.last.get(v).copied() else {
            return;
        };
        if let VcpuExit::Debug { arch, .. } = exit {
            let esr = Esr::from_bits(u64::from(arch.hsr));
            self.check_delivery(v, control, esr);
            if esr.ec() == ESR_ELX_EC_SOFTSTP_LOW && control.contains(GuestDebugControl::SINGLESTEP)
            {
                self.check_step(v, &last, esr, pc, insn_at);
            }
        }
        // KVM records a step as pending only while SINGLESTEP is on.
        let stepping = control.contains(GuestDebugControl::SINGLESTEP);
        let completed = stepping
            && match exit {
                VcpuExit::Hypercall { .. } | VcpuExit::SystemEvent { .. } => true,
                VcpuExit::Intr => immediate_exit && last.completes_on_entry || last.completed,
                _ => false,
            };
        self.last[v] = Last {
            pc,
            completes_on_entry: matches!(exit, VcpuExit::Mmio { .. }),
            completed,
        };
    }

    /// KVM_SET_GUEST_DEBUG on vcpu `v`: without ENABLE, KVM forgets a pending step.
    pub fn guest_debug_set(&mut self, v: usize, control: GuestDebugControl) {
        if !control.contains(GuestDebugControl::ENABLE)
            && let Some(l) = self.last.get_mut(v)
        {
            l.completed = false;
        }
    }

    /// Invariant 8: without KVM_GUESTDBG_ENABLE every guest debug event stays in the guest;
    /// a step exit comes only under SINGLESTEP.
    fn check_delivery(&mut self, v: usize, control: GuestDebugControl, esr: Esr) {
        let ec = esr.ec();
        if !control.contains(GuestDebugControl::ENABLE) {
            self.find(
                Invariant::EventDelivery,
                v,
                format!(
                    "KVM_EXIT_DEBUG (EC {ec:#x} {}) reached userspace, which does not debug the guest (guest_debug = 0): the event is the guest's",
                    hypdbg_model::esr::ec_name(ec)
                ),
            );
        } else if ec == ESR_ELX_EC_SOFTSTP_LOW && !control.contains(GuestDebugControl::SINGLESTEP) {
            self.find(
                Invariant::EventDelivery,
                v,
                "a software-step exit (EC 0x32) reached userspace, which did not ask for KVM_GUESTDBG_SINGLESTEP".into(),
            );
        }
    }

    /// Invariant 7 by PC and ISV: after an exit whose instruction KVM completes on entry (an
    /// MMIO access), the step exit is at the next instruction with ISV=0; after an exit whose
    /// instruction KVM completed (a forwarded HVC, a system event, immediate_exit), it is at
    /// the same PC with ISV=0; otherwise one instruction ran: executed (ISV=1, the PC where it
    /// goes) or trapped and emulated by KVM (ISV=0, the next instruction).
    fn check_step(
        &mut self,
        v: usize,
        last: &Last,
        esr: Esr,
        pc: u64,
        insn_at: &mut dyn FnMut(u64) -> Option<Insn>,
    ) {
        let isv = esr.bits() & (1 << 24) != 0;
        let next = last.pc.wrapping_add(4);
        let (ok, why, want) = if last.completes_on_entry {
            (
                !isv && pc == next,
                "KVM completed the MMIO access on entry",
                format!("{next:#x} with ISV=0"),
            )
        } else if last.completed {
            (
                !isv && pc == last.pc,
                "KVM completed an instruction before the last return to userspace",
                format!("{:#x} with ISV=0", last.pc),
            )
        } else {
            let to = successors(last.pc, insn_at(last.pc));
            let shown: Vec<String> = to.iter().map(|p| format!("{p:#x}")).collect();
            (
                (isv && to.contains(&pc)) || (!isv && pc == next),
                "one guest instruction ran",
                format!(
                    "{} with ISV=1 (executed), or {next:#x} with ISV=0 (emulated)",
                    shown.join(" or ")
                ),
            )
        };
        if ok {
            return;
        }
        let executed = if pc == last.pc && !last.completed {
            "0 instructions"
        } else if isv && last.completes_on_entry {
            "2 instructions (the completed one, and one more)"
        } else {
            "not the one instruction expected"
        };
        self.find(
            Invariant::UserspaceDebug,
            v,
            format!(
                "KVM_GUESTDBG_SINGLESTEP: the step exit at {pc:#x} (ISV={}) after the exit at {:#x}: {why}, so the step exit belongs at {want}; the guest executed {executed}",
                u8::from(isv),
                last.pc,
            ),
        );
    }
}

/// Where the instruction at `pc` may go when it executes: the next one, a branch target, or
/// an exception vector.
fn successors(pc: u64, insn: Option<Insn>) -> Vec<u64> {
    let mut s = vec![pc.wrapping_add(4)];
    match insn {
        Some(Insn::B { offset } | Insn::Cbz { offset, .. } | Insn::Cbnz { offset, .. }) => {
            s.push(pc.wrapping_add(offset as i64 as u64));
        }
        Some(Insn::Eret) | None => return Vec::new(),
        _ => {}
    }
    // Any exception the instruction takes goes to the runtime's vectors.
    s.extend([0x000u64, 0x200, 0x400].map(|o| RUNTIME_BASE + o));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypdbg_model::uapi::KvmDebugExitArch;

    fn step(hsr: u32) -> VcpuExit {
        VcpuExit::Debug {
            arch: KvmDebugExitArch {
                hsr,
                hsr_high: 0,
                far: 0,
            },
            flags: 1,
        }
    }

    const STEP: GuestDebugControl = GuestDebugControl::ENABLE.union(GuestDebugControl::SINGLESTEP);

    fn nop(_: u64) -> Option<Insn> {
        Some(Insn::Nop)
    }

    #[test]
    fn steps_after_mmio_and_executed_instructions() {
        let mut w = RealWatch::new(1, 0x1000);
        let mmio = VcpuExit::stop(0);
        w.on_run(0, STEP, false, &mmio, 0x1000, &mut nop);
        w.on_run(0, STEP, false, &step(0xca00_0022), 0x1004, &mut nop);
        w.on_run(0, STEP, false, &step(0xcb00_0022), 0x1008, &mut nop);
        assert!(w.take().is_empty());
        // The 6.1 immediate_exit defect: one instruction late.
        let mut w = RealWatch::new(1, 0x1000);
        w.on_run(0, STEP, false, &mmio, 0x1000, &mut nop);
        w.on_run(0, STEP, true, &VcpuExit::Intr, 0x1004, &mut nop);
        w.on_run(0, STEP, false, &step(0xcb00_0022), 0x1008, &mut nop);
        let f = w.take();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].invariant, Invariant::UserspaceDebug);
        // The pending step that survives: a step exit that executed nothing.
        let mut w = RealWatch::new(1, 0x1000);
        let bp = step(0xc200_0022);
        w.on_run(0, GuestDebugControl::ENABLE, false, &bp, 0x1010, &mut nop);
        w.on_run(0, STEP, false, &step(0xca00_0022), 0x1010, &mut nop);
        let f = w.take();
        assert!(f[0].message.contains("0 instructions"), "{}", f[0].message);
    }

    #[test]
    fn a_completed_instruction_counts_only_under_singlestep_and_while_enabled() {
        let off = VcpuExit::SystemEvent { event_type: 1 };
        // A system event while not stepping leaves no pending step: the next step exit must
        // come after one executed instruction.
        let mut w = RealWatch::new(1, 0x1000);
        w.on_run(0, GuestDebugControl::ENABLE, false, &off, 0x1004, &mut nop);
        w.on_run(0, STEP, false, &step(0xca00_0022), 0x1004, &mut nop);
        assert_eq!(
            w.take().len(),
            1,
            "ISV=0 at the same PC without a pending step"
        );
        // Stepped, then guest debug off (KVM forgets the pending step), then stepping again.
        let mut w = RealWatch::new(1, 0x1000);
        w.on_run(0, STEP, false, &off, 0x1004, &mut nop);
        w.guest_debug_set(0, GuestDebugControl::empty());
        w.on_run(0, STEP, false, &step(0xcb00_0022), 0x1008, &mut nop);
        assert!(w.take().is_empty());
    }

    #[test]
    fn debug_exits_without_userspace_debug_are_misdelivered() {
        let mut w = RealWatch::new(1, 0);
        w.on_run(
            0,
            GuestDebugControl::empty(),
            false,
            &step(0xd200_0000),
            0,
            &mut nop,
        );
        assert_eq!(w.take()[0].invariant, Invariant::EventDelivery);
    }
}
