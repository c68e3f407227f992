//! The debug-state handoff: a snapshot taken through ONE_REG restores exactly into another
//! VM (another era, another CPU model with equal counts, another physical CPU), the guest's
//! own breakpoint still fires there, and restoring into a CPU with fewer breakpoints or
//! watchpoints than the snapshot uses is an error that writes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hypdbg_host::{DebugSnapshot, DebugVcpu, SnapshotError};
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_model::esr::ESR_ELX_EC_BREAKPT_CUR;
use hypdbg_model::uapi::core_reg;

const PROG: &str = "
start:  mov x0, #0x1e3
        msr dbgbcr0_el1, x0
        mov x1, #{bp}
        msr dbgbvr0_el1, x1
        mov x0, #0x1e7
        msr dbgbcr5_el1, x0
        mov x1, #0x4000
        msr dbgbvr5_el1, x1
        mov x0, #0x1ffb
        msr dbgwcr3_el1, x0
        mov x1, #0x8000
        msr dbgwvr3_el1, x1
        mov x3, #0x20000000
        msr mdccint_el1, x3
        mov x2, #0xa000
        msr mdscr_el1, x2
        isb
        stop #1
resume: msr daifclr, #8
        nop
bp:     nop
        stop #2
        mrs x10, dbgbcr0_el1
        mrs x11, dbgbvr0_el1
        mrs x12, dbgbvr5_el1
        mrs x13, dbgwcr3_el1
        mrs x14, dbgwvr3_el1
        mrs x15, mdscr_el1
        mrs x16, mdccint_el1
        stop #3
";

fn source() -> (hypdbg_hyp::Vm, hypdbg_hyp::guest::Program, DebugSnapshot) {
    let mut vm = vm("era3", "cortex-a57");
    let p = load_with_labels(&mut vm, PROG, &["bp"]);
    let mut v = VmVcpu::new(&mut vm, 0).unwrap();
    assert_eq!(v.run().unwrap(), stop(1));
    let s = DebugSnapshot::save(&mut v).unwrap();
    (vm, p, s)
}

#[test]
fn snapshot_holds_every_implemented_register() {
    let (_vm, p, s) = source();
    assert_eq!((s.bcr.len(), s.wcr.len()), (6, 4));
    assert_eq!((s.bcr[0], s.bvr[0]), (0x1e3, at(&p, "bp")));
    assert_eq!((s.bcr[5], s.bvr[5]), (0x1e7, 0x4000));
    assert_eq!((s.wcr[3], s.wvr[3]), (0x1ffb, 0x8000));
    assert_eq!((s.mdscr_el1, s.mdccint_el1), (0xa000, 0x2000_0000));
    assert_eq!((s.used_breakpoints(), s.used_watchpoints()), (6, 4));
    let j = s.to_json().unwrap();
    assert!(j.contains("\"0x1ffb\""), "{j}");
    assert_eq!(DebugSnapshot::from_json(&j).unwrap(), s);
}

#[test]
fn restores_exactly_on_another_vm_model_and_physical_cpu() {
    let (_a, p, snap) = source();
    let json = snap.to_json().unwrap();
    for (variant, profile) in [
        ("era2", "cortex-a72"),
        ("era3", "cortex-a53"),
        ("era1", "cortex-a57"),
    ] {
        let ctx = format!("{variant}/{profile}");
        let mut b = vm_on(variant, profile, 2);
        b.set_vcpu_cpu(0, 1).unwrap();
        load_with_labels(&mut b, PROG, &["bp"]);
        let mut v = VmVcpu::new(&mut b, 0).unwrap();
        // Stale values on the target are overwritten, including registers the snapshot
        // leaves at zero.
        v.set_one_reg(
            hypdbg_model::SysReg::Dbg(hypdbg_model::DbgBank::Bvr, 4).one_reg_id(),
            0x1234,
        )
        .unwrap();
        DebugSnapshot::from_json(&json)
            .unwrap()
            .restore(&mut v)
            .unwrap();
        assert_eq!(
            DebugSnapshot::save(&mut v).unwrap(),
            snap,
            "{ctx}: ONE_REG reads back the snapshot"
        );
        v.set_one_reg(core_reg::PC, at(&p, "resume")).unwrap();
        assert_eq!(v.run().unwrap(), stop(2), "{ctx}");
        assert_eq!(
            guest_exceptions(v.vm()),
            vec![(ESR_ELX_EC_BREAKPT_CUR, at(&p, "bp"), None)],
            "{ctx}: the guest's migrated breakpoint fires on the new physical CPU"
        );
        assert_eq!(v.run().unwrap(), stop(3), "{ctx}");
        let got: Vec<u64> = (10..=16).map(|n| x(&mut v, n)).collect();
        assert_eq!(
            got,
            vec![
                0x1e3,
                at(&p, "bp"),
                0x4000,
                0x1ffb,
                0x8000,
                0xa000,
                0x2000_0000
            ],
            "{ctx}: the guest reads back what it wrote on the source"
        );
        assert_eq!(v.vm().vcpu(0).unwrap().loaded, None);
        assert!(
            v.vm()
                .events()
                .iter()
                .any(|e| matches!(e, hypdbg_hyp::events::Event::Load { pcpu: 1, .. })),
            "{ctx}: ran on CPU 1"
        );
    }
}

#[test]
fn restoring_into_fewer_registers_is_an_error_and_writes_nothing() {
    let (_a, _p, snap) = source();
    let mut small = vm("era3", "min");
    let mut v = VmVcpu::new(&mut small, 0).unwrap();
    let before = DebugSnapshot::save(&mut v).unwrap();
    let e = snap.restore(&mut v).unwrap_err();
    assert!(
        matches!(e, SnapshotError::TooFewRegisters { available: 2, .. }),
        "{e}"
    );
    let m = e.to_string();
    assert!(
        m.contains("DBGBCR5_EL1") && m.contains("0x1e7") && m.contains("only 2 breakpoints"),
        "{m}"
    );
    assert_eq!(
        DebugSnapshot::save(&mut v).unwrap(),
        before,
        "nothing was restored"
    );

    // Watchpoints are checked too.
    let mut w = snap.clone();
    for n in 2..6 {
        w.bcr[n] = 0;
        w.bvr[n] = 0;
    }
    let m = w.restore(&mut v).unwrap_err().to_string();
    assert!(m.contains("DBGWCR3_EL1") && m.contains("watchpoint"), "{m}");

    // A snapshot that only uses what the target has restores, zero-extended back up.
    let mut fits = w.clone();
    fits.wcr[3] = 0;
    fits.wvr[3] = 0;
    fits.restore(&mut v).unwrap();
    let on_min = DebugSnapshot::save(&mut v).unwrap();
    assert_eq!((on_min.bcr[0], on_min.mdscr_el1), (0x1e3, 0xa000));
    let mut big = vm("era3", "cortex-a57");
    let mut v = VmVcpu::new(&mut big, 0).unwrap();
    on_min.restore(&mut v).unwrap();
    assert_eq!(DebugSnapshot::save(&mut v).unwrap(), fits);
}
