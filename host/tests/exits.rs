//! `handle_debug_exit` on synthetic exits, through a fake vcpu (the trait is implementable
//! without the simulator, as it would be for `kvm_ioctls::VcpuFd`): every class, ours or the
//! guest's, the guest's gating and EL, `hsr_high`, watchpoint attribution; software
//! breakpoint error cases and detach through the simulator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::*;
use hypdbg_host::{
    DebugStop, DebugVcpu, Debugger, GuestDebugEvent, RunExit, SwBpError, VcpuError, WatchAccess,
    WatchRequest,
};
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_model::SysReg;
use hypdbg_model::ctrl::{
    DBG_MDSCR_KDE, DBG_MDSCR_MDE, DBG_MDSCR_SS, PSR_D_BIT, PSR_MODE_EL0T, PSR_MODE_EL1H,
};
use hypdbg_model::esr::Esr;
use hypdbg_model::insn::BRK0;
use hypdbg_model::uapi::{
    KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS, KVM_CAP_SET_GUEST_DEBUG,
    KvmDebugExitArch, KvmGuestDebug, core_reg,
};

/// A vcpu that only holds registers and memory, and records what is injected.
#[derive(Default)]
struct FakeVcpu {
    regs: HashMap<u64, u64>,
    mem: HashMap<u64, u8>,
    injected: Vec<(Esr, Option<u64>)>,
    debug: Vec<KvmGuestDebug>,
}

#[derive(Debug, thiserror::Error)]
#[error("no such register")]
struct NoReg;

impl DebugVcpu for FakeVcpu {
    fn check_extension(&self, cap: u32) -> i64 {
        match cap {
            KVM_CAP_SET_GUEST_DEBUG => 1,
            KVM_CAP_GUEST_DEBUG_HW_BPS => 4,
            KVM_CAP_GUEST_DEBUG_HW_WPS => 4,
            _ => 0,
        }
    }
    fn set_guest_debug(&mut self, dbg: &KvmGuestDebug) -> Result<(), VcpuError> {
        self.debug.push(*dbg);
        Ok(())
    }
    fn run(&mut self) -> Result<RunExit, VcpuError> {
        Ok(RunExit::Other {
            what: "fake".into(),
        })
    }
    fn get_one_reg(&mut self, id: u64) -> Result<u64, VcpuError> {
        Ok(self.regs.get(&id).copied().unwrap_or(0))
    }
    fn set_one_reg(&mut self, id: u64, value: u64) -> Result<(), VcpuError> {
        if id == 0 {
            return Err(VcpuError::new("KVM_SET_ONE_REG 0", NoReg));
        }
        self.regs.insert(id, value);
        Ok(())
    }
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), VcpuError> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.mem.get(&(addr + i as u64)).copied().unwrap_or(0);
        }
        Ok(())
    }
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), VcpuError> {
        for (i, b) in data.iter().enumerate() {
            self.mem.insert(addr + i as u64, *b);
        }
        Ok(())
    }
    fn inject_debug_exception(&mut self, esr: Esr, far: Option<u64>) -> Result<(), VcpuError> {
        self.injected.push((esr, far));
        Ok(())
    }
}

fn guest(v: &mut FakeVcpu, pstate: u64, mdscr: u64) {
    v.regs.insert(core_reg::PSTATE, pstate);
    v.regs.insert(SysReg::MdscrEl1.one_reg_id(), mdscr);
}

fn exit(esr: Esr, far: u64) -> KvmDebugExitArch {
    KvmDebugExitArch {
        hsr: esr.bits() as u32,
        hsr_high: (esr.bits() >> 32) as u32,
        far,
    }
}

const KDE_MDE: u64 = DBG_MDSCR_KDE | DBG_MDSCR_MDE;

#[test]
fn steps() {
    let mut v = FakeVcpu::default();
    let mut d = Debugger::new(&v).unwrap();
    let step = exit(Esr::software_step(false, true), 0);
    d.set_stepping(true);
    assert_eq!(
        d.handle_debug_exit(&mut v, &step, 1, 0x1004).unwrap(),
        DebugStop::Step { pc: 0x1004 }
    );
    d.set_stepping(false);
    guest(&mut v, PSR_MODE_EL1H, KDE_MDE);
    assert_eq!(
        d.handle_debug_exit(&mut v, &step, 1, 0x1004).unwrap(),
        DebugStop::Suppressed {
            pc: 0x1004,
            event: GuestDebugEvent::Step { stepped: true }
        },
        "spurious: the guest is not stepping"
    );
    guest(&mut v, PSR_MODE_EL1H, DBG_MDSCR_KDE | DBG_MDSCR_SS);
    let s = d.handle_debug_exit(&mut v, &step, 1, 0x1004).unwrap();
    assert!(
        matches!(s, DebugStop::Reinjected { far: None, .. }),
        "{s:?}"
    );
    assert_eq!(v.injected, vec![(Esr::software_step(true, true), None)]);
}

#[test]
fn brk_ours_and_the_guests() {
    let mut v = FakeVcpu::default();
    let mut d = Debugger::new(&v).unwrap();
    v.write_memory(0x2000, &0xd503_201fu32.to_le_bytes())
        .unwrap();
    d.insert_sw_breakpoint(&mut v, 0x2000).unwrap();
    assert_eq!(v.mem[&0x2003], (BRK0 >> 24) as u8);
    let brk0 = exit(Esr::brk(0), 0);
    assert_eq!(
        d.handle_debug_exit(&mut v, &brk0, 1, 0x2000).unwrap(),
        DebugStop::SwBreakpoint { pc: 0x2000 }
    );
    // The guest's own BRK is delivered even with everything masked.
    guest(&mut v, PSR_MODE_EL1H | PSR_D_BIT, 0);
    let s = d
        .handle_debug_exit(&mut v, &exit(Esr::brk(0x42), 0x1234), 1, 0x3000)
        .unwrap();
    assert_eq!(
        s,
        DebugStop::Reinjected {
            pc: 0x3000,
            esr: 0xf200_0042,
            far: None
        }
    );
    assert_eq!(
        v.injected,
        vec![(Esr::brk(0x42), None)],
        "no stale FAR for a BRK"
    );
}

#[test]
fn hardware_breakpoints_and_the_guests_el_and_mask() {
    let mut v = FakeVcpu::default();
    let mut d = Debugger::new(&v).unwrap();
    d.hw_mut().insert_breakpoint(0x1000).unwrap();
    d.hw_mut().insert_breakpoint(0xffff_8000_0000_2000).unwrap();
    let bp = exit(Esr::breakpoint(false), 0);
    assert_eq!(
        d.handle_debug_exit(&mut v, &bp, 1, 0xffff_8000_0000_2000)
            .unwrap(),
        DebugStop::HwBreakpoint {
            pc: 0xffff_8000_0000_2000,
            slot: 1
        }
    );
    assert_eq!(
        d.last_stop(),
        Some(DebugStop::HwBreakpoint {
            pc: 0xffff_8000_0000_2000,
            slot: 1
        })
    );
    // Not ours, guest at EL0 with MDE: its EL1 handler sees the lower-EL class.
    guest(&mut v, PSR_MODE_EL0T, DBG_MDSCR_MDE);
    d.handle_debug_exit(&mut v, &bp, 1, 0x5000).unwrap();
    assert_eq!(v.injected.pop(), Some((Esr::breakpoint(false), None)));
    // Guest at EL1 with PSTATE.D: suppressed, nothing injected.
    guest(&mut v, PSR_MODE_EL1H | PSR_D_BIT, KDE_MDE);
    let s = d.handle_debug_exit(&mut v, &bp, 1, 0x5000).unwrap();
    assert_eq!(
        s,
        DebugStop::Suppressed {
            pc: 0x5000,
            event: GuestDebugEvent::Breakpoint
        }
    );
    assert!(v.injected.is_empty());
}

#[test]
fn watchpoints_are_attributed_by_bytes_direction_and_distance() {
    let mut v = FakeVcpu::default();
    let mut d = Debugger::new(&v).unwrap();
    let cross = WatchRequest::new(0x8006, 4, WatchAccess::Write); // two slots
    let reads = WatchRequest::new(0x9000, 8, WatchAccess::Read);
    d.hw_mut().insert_watchpoint(cross).unwrap();
    d.hw_mut().insert_watchpoint(reads).unwrap();
    let store = Esr::watchpoint(false, true);
    let load = Esr::watchpoint(false, false);
    // The last byte of the crossing request: the second slot, exact.
    let s = d
        .handle_debug_exit(&mut v, &exit(store, 0x8009), 1, 0x1000)
        .unwrap();
    assert_eq!(
        s,
        DebugStop::Watchpoint {
            pc: 0x1000,
            far: 0x8009,
            request: cross,
            slot: 1,
            is_write: true,
            exact: true
        }
    );
    // An STP reported at its aligned start, below the watched bytes: nearest request.
    let s = d
        .handle_debug_exit(&mut v, &exit(store, 0x8000), 1, 0x1000)
        .unwrap();
    assert!(
        matches!(s, DebugStop::Watchpoint { request, slot: 0, exact: false, .. } if request == cross),
        "{s:?}"
    );
    // A load: only the read request watches loads.
    let s = d
        .handle_debug_exit(&mut v, &exit(load, 0x9004), 1, 0x1000)
        .unwrap();
    assert!(
        matches!(s, DebugStop::Watchpoint { request, is_write: false, .. } if request == reads),
        "{s:?}"
    );
    // A store near the read-only request is not ours: the guest's (with FAR_EL1).
    d.hw_mut().remove_watchpoint(cross).unwrap();
    guest(&mut v, PSR_MODE_EL1H, KDE_MDE);
    let s = d
        .handle_debug_exit(&mut v, &exit(store, 0x9004), 1, 0x1000)
        .unwrap();
    assert_eq!(
        s,
        DebugStop::Reinjected {
            pc: 0x1000,
            esr: Esr::watchpoint(true, true).bits(),
            far: Some(0x9004)
        }
    );
    // hsr_high only counts when flagged; the class is in hsr either way.
    let mut e = exit(Esr::from_bits(0xe000_0000), 0);
    e.hsr_high = 0x5;
    assert_eq!(
        d.handle_debug_exit(&mut v, &e, 0, 8).unwrap(),
        DebugStop::Unknown {
            pc: 8,
            esr: 0xe000_0000
        }
    );
    assert_eq!(
        d.handle_debug_exit(&mut v, &e, 1, 8).unwrap(),
        DebugStop::Unknown {
            pc: 8,
            esr: 0x5_e000_0000
        }
    );
}

#[test]
fn software_breakpoint_errors_in_the_simulator() {
    let mut vm = vm("era3", "min");
    let p = load(&mut vm, "a: nop\nb: nop\nstop #1\n");
    let mut v = VmVcpu::new(&mut vm, 0).unwrap();
    let mut d = Debugger::new(&v).unwrap();
    let (a, b) = (at(&p, "a"), at(&p, "b"));
    assert!(matches!(
        d.insert_sw_breakpoint(&mut v, a + 2).unwrap_err(),
        hypdbg_host::DebugError::Sw(SwBpError::Misaligned { .. })
    ));
    d.insert_sw_breakpoint(&mut v, a).unwrap();
    let e = d.insert_sw_breakpoint(&mut v, a).unwrap_err();
    assert!(e.to_string().contains("EEXIST"), "{e}");
    let e = d.remove_sw_breakpoint(&mut v, b).unwrap_err();
    assert!(e.to_string().contains("ENOENT"), "{e}");
    // Someone overwrote our BRK: removal leaves memory alone and says what it found.
    v.vm().memory_mut().write(a, &0xd503_3fdfu32.to_le_bytes());
    let e = d.remove_sw_breakpoint(&mut v, a).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("0xd5033fdf") && m.contains("0xd503201f") && m.contains("not written back"),
        "{m}"
    );
    assert_eq!(v.vm().memory().read_uint(a, 4), 0xd503_3fdf);
    assert!(!d.sw().contains(a));
    // Detach restores every planted instruction and turns guest debug off.
    d.insert_sw_breakpoint(&mut v, b).unwrap();
    d.hw_mut().insert_breakpoint(a).unwrap();
    d.detach(&mut v).unwrap();
    assert_eq!(v.vm().memory().read_uint(b, 4), 0xd503_201f);
    assert!(!d.hw().is_active() && d.sw().is_empty());
    assert!(v.vm().vcpu(0).unwrap().kvm.guest_debug.is_empty());
    assert_eq!(v.run().unwrap(), stop(1));
}
