//! gdb-like sessions through the simulator: hardware breakpoints, watchpoints, software
//! breakpoints, single-step, remove, continue, on the era-3 and era-2 references and on a
//! 6/4 and a 2/2 CPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hypdbg_host::{DebugStop, Debugger, Stop, WatchAccess, WatchRequest};
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_model::insn::BRK0;

const PROG: &str = "
start:  mov x0, #0x8000
        mov x1, #0x55
        nop
bp1:    add x1, x1, #1
st1:    strb w1, [x0, #3]
ld1:    ldr x2, [x0]
st2:    str x1, [x0, #16]
        nop
swbp:   add x1, x1, #2
        nop
        stop #1
";

/// A hardware breakpoint, a step past it, then the write watchpoint it leads to.
fn breakpoint_then_watchpoint(
    v: &mut VmVcpu<'_>,
    p: &Program,
    ctx: &str,
) -> (Debugger, WatchRequest) {
    let mut d = Debugger::new(v).unwrap();
    let watch = WatchRequest::new(0x8002, 2, WatchAccess::Write);
    d.hw_mut().insert_breakpoint(at(p, "bp1")).unwrap();
    d.hw_mut().insert_watchpoint(watch).unwrap();

    let s = d.cont(v).unwrap();
    assert_eq!(
        s,
        Stop::Debug(DebugStop::HwBreakpoint {
            pc: at(p, "bp1"),
            slot: 0
        }),
        "{ctx}"
    );
    assert_eq!(x(v, 1), 0x55, "{ctx}: stopped before the add");

    let s = d.step(v).unwrap();
    assert_eq!(
        s,
        Stop::Debug(DebugStop::Step { pc: at(p, "st1") }),
        "{ctx}"
    );
    assert_eq!(x(v, 1), 0x56, "{ctx}: the add ran once");

    let s = d.cont(v).unwrap();
    let Stop::Debug(DebugStop::Watchpoint {
        pc,
        far,
        request,
        is_write,
        exact,
        ..
    }) = s
    else {
        panic!("{ctx}: expected a watchpoint, got {s:?}");
    };
    assert_eq!(
        (pc, far, request, is_write, exact),
        (at(p, "st1"), 0x8003, watch, true, true),
        "{ctx}"
    );
    assert_eq!(
        v.vm().memory().read_uint(0x8003, 1),
        0,
        "{ctx}: the store has not happened"
    );

    (d, watch)
}

/// The load of the watched doubleword is not a write: no stop for it.
fn load_is_not_a_write(v: &mut VmVcpu<'_>, p: &Program, d: &mut Debugger, ctx: &str) {
    // The load of the watched doubleword is not a write: no stop for it.
    d.hw_mut().remove_breakpoint(at(p, "bp1")).unwrap();
    let s = d.step(v).unwrap();
    assert_eq!(
        s,
        Stop::Debug(DebugStop::Step { pc: at(p, "ld1") }),
        "{ctx}"
    );
    assert_eq!(
        v.vm().memory().read_uint(0x8003, 1),
        0x56,
        "{ctx}: the store completed"
    );
}

/// A software breakpoint: hit, stepped over (the original instruction runs), re-planted,
/// removed; then everything removed, the guest runs to its end untouched.
fn software_breakpoint_and_detach(
    v: &mut VmVcpu<'_>,
    p: &Program,
    d: &mut Debugger,
    watch: WatchRequest,
    ctx: &str,
) {
    d.insert_sw_breakpoint(v, at(p, "swbp")).unwrap();
    assert_eq!(v.vm().memory().read_uint(at(p, "swbp"), 4) as u32, BRK0);
    let s = d.cont(v).unwrap();
    assert_eq!(
        s,
        Stop::Debug(DebugStop::SwBreakpoint { pc: at(p, "swbp") }),
        "{ctx}"
    );
    assert_eq!(x(v, 1), 0x56, "{ctx}");

    // Step over the software breakpoint: the original instruction runs.
    let s = d.step(v).unwrap();
    assert_eq!(
        s,
        Stop::Debug(DebugStop::Step {
            pc: at(p, "swbp") + 4
        }),
        "{ctx}"
    );
    assert_eq!(x(v, 1), 0x58, "{ctx}");
    assert_eq!(
        v.vm().memory().read_uint(at(p, "swbp"), 4) as u32,
        BRK0,
        "{ctx}: re-planted"
    );

    d.remove_sw_breakpoint(v, at(p, "swbp")).unwrap();
    d.hw_mut().remove_watchpoint(watch).unwrap();
    let s = d.cont(v).unwrap();
    assert_eq!(s, Stop::Exit(stop(1)), "{ctx}");
    assert_ne!(
        v.vm().memory().read_uint(at(p, "swbp"), 4) as u32,
        BRK0,
        "{ctx}: restored"
    );
    assert!(
        v.vm().vcpu(0).unwrap().exceptions.is_empty(),
        "{ctx}: nothing reached the guest"
    );
}

#[test]
fn breakpoint_watchpoint_step_remove_continue() {
    for variant in VARIANTS {
        for profile in PROFILES {
            let ctx = format!("{variant}/{profile}");
            let mut vm = vm(variant, profile);
            let p = load(&mut vm, PROG);
            let mut v = VmVcpu::new(&mut vm, 0).unwrap();
            let (mut d, watch) = breakpoint_then_watchpoint(&mut v, &p, &ctx);
            load_is_not_a_write(&mut v, &p, &mut d, &ctx);
            software_breakpoint_and_detach(&mut v, &p, &mut d, watch, &ctx);
        }
    }
}
