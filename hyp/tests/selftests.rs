//! The kernel community's own tests of this path, ported (docs/
//! test-scenarios.md): debug-exceptions.c cases 1-12 over every combination, the
//! userspace single-step test, kvm-unit-tests bp/wp/ss with and without migration.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use hypdbg_hyp::events::GuestEvent;
use hypdbg_hyp::vm::{AccessMode, VcpuExit};
use hypdbg_hyp::workloads::*;
use hypdbg_model::esr::{ESR_ELX_EC_BREAKPT_CUR, ESR_ELX_EC_SOFTSTP_CUR, ESR_ELX_EC_WATCHPT_CUR};

#[test]
fn debug_exceptions_every_combination() {
    for &variant in REFERENCES {
        for &profile in PROFILES {
            let f = features(profile);
            let combos = debug_exceptions_combinations(&f);
            assert!(!combos.is_empty(), "{profile}");
            for (b, w, c) in combos {
                let (p, want) = debug_exceptions_program(&f, b, w, c).unwrap();
                let mut vm = vm_with(variant, profile, 1, AccessMode::Plain);
                vm.load_program(&p);
                let exit = vm.run(0).unwrap();
                assert_eq!(
                    exit,
                    VcpuExit::stop(0),
                    "{variant} {profile} b{b} w{w} c{c}"
                );
                let got = &vm.vcpu(0).unwrap().exceptions;
                if let Err(e) = check_exceptions(&p, got, &want) {
                    panic!("{variant} {profile} b{b} w{w} c{c}: {e}");
                }
                // The last store to write_data (0x79, under the OS lock) went through without
                // an exception; the linked-watchpoint store (0x7a) after its handler returned.
                assert_eq!(vm.memory().read_uint(DATA_BASE, 1), 0x79);
                assert_eq!(vm.memory().read_uint(DATA_BASE + 8, 1), 0x7a);
                // OSLSR_EL1.OSLK read back as set while locked.
                assert_eq!(
                    vm.vcpu(0).unwrap().kvm.arch.ctxt.regs.regs[9] & 2,
                    2,
                    "{variant}"
                );
            }
        }
    }
}

#[test]
fn userspace_single_step_1000_iterations() {
    for &variant in REFERENCES {
        for &profile in PROFILES {
            let mut vm = vm_with(variant, profile, 1, AccessMode::Plain);
            let p = single_step_program(1000).unwrap();
            vm.load_program(&p);
            let r = run_userspace_single_step(&mut vm, 0, &p)
                .unwrap_or_else(|e| panic!("{variant} {profile}: {e}"));
            assert_eq!(r.iterations, 1000);
            // The stop before the window is an MMIO store KVM completes on the next entry, so
            // the first step exit comes before the window's first instruction (ISV=0); the
            // window is nop, 2 MSR, 2 MRS: a step exit after each of the first four; the host
            // turns stepping off before the last.
            assert_eq!(r.steps, 1000 * 5, "{variant} {profile}");
        }
    }
}

#[test]
fn userspace_single_step_with_host_interrupts() {
    // A host interrupt between a step's completion and its exception must not let the guest
    // run an extra instruction (the v6.1 active-pending fix).
    for &variant in REFERENCES {
        for every in [1u64, 2, 3, 7] {
            let mut vm = vm_with(variant, "cortex-a57", 1, AccessMode::Plain);
            vm.vcpu_mut(0).unwrap().irq_every = Some(every);
            let p = single_step_program(200).unwrap();
            vm.load_program(&p);
            let r = run_userspace_single_step(&mut vm, 0, &p)
                .unwrap_or_else(|e| panic!("{variant} irq every {every}: {e}"));
            assert_eq!(r.iterations, 200);
        }
    }
}

fn run_stop(vm: &mut hypdbg_hyp::Vm, imm: u16) {
    assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(imm));
}

/// kvm-unit-tests bp/wp/ss, optionally migrating at the HVC #0 into a fresh VM on another
/// profile with the same counts (all debug registers and MDSCR travel through ONE_REG).
fn kut(variant: &str, profile: &str, to_profile: Option<&str>, which: &str) {
    let f = features(profile);
    let p = match which {
        "bp" => kut_bp_program(&f),
        "wp" => kut_wp_program(&f),
        _ => kut_ss_program(&f),
    }
    .unwrap();
    let mut vm = vm(variant, profile);
    vm.load_program(&p);
    run_stop(&mut vm, 0);
    let mut vm = match to_profile {
        Some(to) => {
            let mut dst = common::vm(variant, to);
            dst.load_program(&p);
            migrate(&mut vm, 0, &mut dst, 0).unwrap();
            dst
        }
        None => vm,
    };
    run_stop(&mut vm, 1);
    let ex: Vec<(u8, u64, Option<u64>)> = vm
        .vcpu(0)
        .unwrap()
        .exceptions
        .iter()
        .filter_map(|e| match e {
            GuestEvent::Exception { esr, elr, far, .. } => Some((esr.ec(), *elr, *far)),
            _ => None,
        })
        .collect();
    let ctx = format!("{variant} {profile} -> {to_profile:?} {which}");
    match which {
        "bp" => {
            let base = p.label("hw_bp0").unwrap();
            let want: Vec<_> = (0..f.num_brps())
                .map(|i| (ESR_ELX_EC_BREAKPT_CUR, base + 4 * i as u64, None))
                .collect();
            assert_eq!(ex, want, "{ctx}");
        }
        "wp" => {
            assert_eq!(ex.len(), f.num_wrps(), "{ctx}: {ex:x?}");
            for (i, (ec, elr, far)) in ex.iter().enumerate() {
                assert_eq!(
                    (*ec, *elr, *far),
                    (
                        ESR_ELX_EC_WATCHPT_CUR,
                        p.label(&format!("wp{i}")).unwrap(),
                        Some(DATA_BASE + i as u64)
                    ),
                    "{ctx}"
                );
                assert_eq!(
                    vm.memory().read_uint(DATA_BASE + i as u64, 1),
                    i as u64,
                    "{ctx}: data[{i}] written"
                );
            }
        }
        _ => {
            let start = p.label("ss_start").unwrap();
            let want = vec![
                (ESR_ELX_EC_SOFTSTP_CUR, start, None),
                (ESR_ELX_EC_SOFTSTP_CUR, start + 4, None),
                (ESR_ELX_EC_SOFTSTP_CUR, start + 8, None),
            ];
            assert_eq!(ex, want, "{ctx}");
        }
    }
}

#[test]
fn kvm_unit_tests_debug_with_and_without_migration() {
    for &variant in REFERENCES {
        for which in ["bp", "wp", "ss"] {
            for &profile in PROFILES {
                kut(variant, profile, None, which);
                kut(variant, profile, Some(profile), which);
            }
            // Different profiles with equal counts.
            kut(variant, "cortex-a57", Some("neoverse-n1"), which);
            kut(variant, "cortex-a710", Some("cortex-a53"), which);
        }
    }
}
