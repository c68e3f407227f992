//! A guest that debugs itself keeps working while userspace debugs it: its own hardware
//! breakpoints and watchpoints (mirrored into free slots) and its BRKs come back as debug
//! exits that are not ours and are reinjected with the guest's view (EC 0x31/0x35/0x3c,
//! FAR_EL1 for watchpoints); when its handler returns with PSTATE.D set, the repeated event
//! is stepped over, not injected again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hypdbg_host::{DebugStop, Debugger, Stop, WatchAccess, WatchRequest};
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_model::esr::{ESR_ELX_EC_BREAKPT_CUR, ESR_ELX_EC_BRK64, ESR_ELX_EC_WATCHPT_CUR};

const GUEST_BP: &str = "
start:  mov x0, #0x1e3          // E, PMC = EL1, BAS = 0xf
        msr dbgbcr0_el1, x0
        mov x1, #{gbp}
        msr dbgbvr0_el1, x1
        mov x2, #0xa000         // MDSCR_EL1.KDE | MDE
        msr mdscr_el1, x2
        isb
        msr daifclr, #8         // PSTATE.D = 0
ubp:    nop
        nop
gbp:    nop
        nop
gbrk:   brk #5
        nop
        stop #1
";

#[test]
fn guest_breakpoint_and_brk_are_reinjected_while_userspace_uses_hw() {
    for variant in VARIANTS {
        for profile in PROFILES {
            let ctx = format!("{variant}/{profile}");
            let mut vm = vm(variant, profile);
            let p = load_with_labels(&mut vm, GUEST_BP, &["gbp"]);
            let mut v = VmVcpu::new(&mut vm, 0).unwrap();
            let mut d = Debugger::new(&v).unwrap();
            d.hw_mut().insert_breakpoint(at(&p, "ubp")).unwrap();

            let s = d.cont(&mut v).unwrap();
            assert_eq!(
                s,
                Stop::Debug(DebugStop::HwBreakpoint {
                    pc: at(&p, "ubp"),
                    slot: 0
                }),
                "{ctx}"
            );
            let s = d.cont(&mut v).unwrap();
            assert_eq!(s, Stop::Exit(stop(1)), "{ctx}");
            assert_eq!(
                d.mirrored().breakpoints.len(),
                1,
                "{ctx}: the guest's slot was mirrored"
            );
            assert_eq!(
                d.mirrored().breakpoints[0].hw_slot,
                1,
                "{ctx}: into a free slot"
            );
            assert_eq!(
                guest_exceptions(v.vm()),
                vec![
                    (ESR_ELX_EC_BREAKPT_CUR, at(&p, "gbp"), None),
                    (ESR_ELX_EC_BRK64, at(&p, "gbrk"), None),
                ],
                "{ctx}: the guest saw its own breakpoint once (same-EL class) and its BRK"
            );
            let esr = v.vm().vcpu(0).unwrap().kvm.arch.ctxt.sys_regs.esr_el1;
            assert_eq!(esr, 0xf200_0005, "{ctx}: BRK #5 keeps its immediate");
        }
    }
}

#[test]
fn without_mirroring_the_guest_breakpoint_is_dead_as_under_qemu() {
    let mut vm = vm("era3", "cortex-a57");
    let p = load_with_labels(&mut vm, GUEST_BP, &["gbp"]);
    let mut v = VmVcpu::new(&mut vm, 0).unwrap();
    let mut d = Debugger::new(&v).unwrap();
    d.set_mirror_guest(false);
    d.hw_mut().insert_breakpoint(at(&p, "ubp")).unwrap();
    assert!(matches!(
        d.cont(&mut v).unwrap(),
        Stop::Debug(DebugStop::HwBreakpoint { .. })
    ));
    assert_eq!(d.cont(&mut v).unwrap(), Stop::Exit(stop(1)));
    assert_eq!(
        guest_exceptions(v.vm()),
        vec![(ESR_ELX_EC_BRK64, at(&p, "gbrk"), None)]
    );
}

const GUEST_WP: &str = "
start:  mov x0, #0x1ffb         // E, PAC = EL1, LSC = load|store, BAS = 0xff
        msr dbgwcr0_el1, x0
        mov x1, #0x8000
        msr dbgwvr0_el1, x1
        mov x2, #0xa000
        msr mdscr_el1, x2
        isb
        msr daifclr, #8
        mov x3, #0x77
ubp:    nop
gst:    strb w3, [x1, #3]       // the guest's own watchpoint
        mov x4, #0x9000
ust:    str w3, [x4]            // ours
        nop
        stop #1
";

#[test]
fn guest_watchpoint_is_reinjected_with_far_el1_and_ours_still_stops() {
    for variant in VARIANTS {
        for profile in PROFILES {
            let ctx = format!("{variant}/{profile}");
            let mut vm = vm(variant, profile);
            let p = load(&mut vm, GUEST_WP);
            let mut v = VmVcpu::new(&mut vm, 0).unwrap();
            let mut d = Debugger::new(&v).unwrap();
            let ours = WatchRequest::new(0x9000, 4, WatchAccess::Write);
            d.hw_mut().insert_breakpoint(at(&p, "ubp")).unwrap();
            d.hw_mut().insert_watchpoint(ours).unwrap();

            let s = d.cont(&mut v).unwrap();
            assert!(
                matches!(s, Stop::Debug(DebugStop::HwBreakpoint { .. })),
                "{ctx}: {s:?}"
            );
            let s = d.cont(&mut v).unwrap();
            let Stop::Debug(DebugStop::Watchpoint {
                pc, far, request, ..
            }) = s
            else {
                panic!("{ctx}: {s:?}");
            };
            assert_eq!((pc, far, request), (at(&p, "ust"), 0x9000, ours), "{ctx}");
            assert_eq!(
                guest_exceptions(v.vm()),
                vec![(ESR_ELX_EC_WATCHPT_CUR, at(&p, "gst"), Some(0x8003))],
                "{ctx}: the guest saw its own watchpoint once, with FAR_EL1"
            );
            assert_eq!(
                v.vm().memory().read_uint(0x8003, 1),
                0x77,
                "{ctx}: the guest's store completed"
            );
            assert_eq!(d.cont(&mut v).unwrap(), Stop::Exit(stop(1)), "{ctx}");
            assert_eq!(v.vm().memory().read_uint(0x9000, 4), 0x77, "{ctx}");
        }
    }
}

#[test]
fn a_guest_with_debug_masked_gets_nothing_injected() {
    // Same program, but the guest never clears PSTATE.D: its breakpoint must not be
    // delivered (it would not fire on hardware without TDE), only stepped over.
    let text = GUEST_BP.replace("msr daifclr, #8", "msr daifset, #8");
    let mut vm = vm("era3", "min");
    let p = load_with_labels(&mut vm, &text, &["gbp"]);
    let mut v = VmVcpu::new(&mut vm, 0).unwrap();
    let mut d = Debugger::new(&v).unwrap();
    d.hw_mut().insert_breakpoint(at(&p, "ubp")).unwrap();
    assert!(matches!(
        d.cont(&mut v).unwrap(),
        Stop::Debug(DebugStop::HwBreakpoint { .. })
    ));
    assert_eq!(d.cont(&mut v).unwrap(), Stop::Exit(stop(1)));
    assert_eq!(
        guest_exceptions(v.vm()),
        vec![(ESR_ELX_EC_BRK64, at(&p, "gbrk"), None)]
    );
}
