//! The world switch's promises, for every era and for the profiles min (2/2), cortex-a57
//! (6/4) and max (16/16), observed through the checking register access.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use hypdbg_hyp::access::{HypReg, SwitchStats};
use hypdbg_hyp::events::{Event, GuestEvent};
use hypdbg_hyp::vm::{AccessMode, SmcccAction, VcpuExit};
use hypdbg_model::ctrl::{DBG_MDSCR_MDE, DBG_MDSCR_SS, DBG_SPSR_SS};
use hypdbg_model::esr::{ESR_ELX_EC_BREAKPT_LOW, ESR_ELX_EC_SOFTSTP_LOW, Esr};
use hypdbg_model::guest_abi::HYPDBG_FORWARDED_FID;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebug, KvmGuestDebugArch, core_reg};
use hypdbg_model::{DbgBank, SysReg};

/// Entries' and exits' register moves, per switch.
fn switches(vm: &hypdbg_hyp::Vm) -> Vec<SwitchStats> {
    vm.events()
        .iter()
        .filter_map(|e| match e {
            Event::Entered { accesses, .. } | Event::Exited { accesses, .. } => {
                Some(SwitchStats::of(accesses))
            }
            _ => None,
        })
        .collect()
}

fn entered_live(vm: &hypdbg_hyp::Vm) -> Vec<hypdbg_hyp::pcpu::HostSnapshot> {
    vm.events()
        .iter()
        .filter_map(|e| match e {
            Event::Entered { live, .. } => Some(live.regs),
            _ => None,
        })
        .collect()
}

fn each(mut f: impl FnMut(&str, &str)) {
    for &v in REFERENCES {
        for &p in PROFILES {
            f(v, p);
        }
    }
}

#[test]
fn lazy_path_touches_no_debug_register() {
    each(|v, p| {
        let mut vm = vm(v, p);
        load(
            &mut vm,
            "mov x0, #1\nadd x0, x0, #1\nstr x0, [x1]\nstop #0\nnop\nstop #1\n",
        );
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0));
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(1));
        let s = switches(&vm);
        assert_eq!(s.len(), 4, "{v} {p}");
        for st in s {
            assert_eq!(st.debug_state_moves(), 0, "{v} {p}: {st:?}");
        }
        // Traps stay armed so a first use is caught.
        assert!(
            entered_live(&vm)
                .iter()
                .all(|l| l.mdcr_el2 & hypdbg_model::ctrl::MDCR_EL2_TDA != 0),
            "{v} {p}"
        );
    });
}

#[test]
fn mde_only_guest_gets_its_registers_switched() {
    each(|v, p| {
        let f = features(p);
        let mut vm = vm(v, p);
        // The guest enables MDE only (EL0 breakpoints): its DBGBCR0 = 0 must be live.
        load(
            &mut vm,
            "mov x0, #0x8000\nmsr mdscr_el1, x0\nstop #0\nnop\nstop #1\n",
        );
        vm.run(0).unwrap();
        vm.run(0).unwrap();
        let live = entered_live(&vm);
        let last = live.last().unwrap();
        assert_eq!(last.mdscr_el1, DBG_MDSCR_MDE, "{v} {p}");
        assert!(
            last.banks[DbgBank::Bcr as usize].iter().all(|&x| x == 0),
            "{v} {p}: host breakpoints live: {last:x?}"
        );
        let st = switches(&vm);
        let last_entry = st[st.len() - 2];
        let n = (2 * f.num_brps() + 2 * f.num_wrps()) as u32;
        assert_eq!(
            (last_entry.dbg_reads, last_entry.dbg_writes),
            (n, n),
            "{v} {p}"
        );
    });
}

#[test]
fn guest_writes_while_clean_trap_then_load_on_next_entry() {
    each(|v, p| {
        let f = features(p);
        let top = f.num_wrps() - 1;
        let mut vm = vm(v, p);
        let text =
            format!("mov x0, #0x1234\nmsr dbgwvr{top}_el1, x0\nmrs x1, dbgwvr{top}_el1\nstop #0\n");
        load(&mut vm, &text);
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0));
        let trapped: Vec<_> = vm
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Guest {
                    what:
                        GuestEvent::SysRegWrite {
                            reg,
                            value,
                            trapped,
                        },
                    ..
                } => Some((*reg, *value, *trapped)),
                _ => None,
            })
            .collect();
        assert_eq!(
            trapped[0],
            (SysReg::Dbg(DbgBank::Wvr, top as u8), 0x1234, true),
            "{v} {p}"
        );
        // The entry after the trapped write loads the guest's value.
        let live = entered_live(&vm);
        assert_eq!(live[1].banks[DbgBank::Wvr as usize][top], 0x1234, "{v} {p}");
        assert_eq!(
            vm.vcpu(0).unwrap().kvm.arch.ctxt.regs.regs[1],
            0x1234,
            "{v} {p}: read back"
        );
    });
}

#[test]
fn host_registers_survive_every_run_bit_for_bit() {
    each(|v, p| {
        let mut vm = vm_with(v, p, 2, AccessMode::Checking);
        let before: Vec<_> = (0..2)
            .map(|c| vm.pcpu(c).unwrap().host_snapshot())
            .collect();
        load(
            &mut vm,
            "mov x0, #0xa000\nmsr mdscr_el1, x0\nmov x0, #0x1e7\nmsr dbgbcr0_el1, x0\nmsr mdccint_el1, x0\nstop #0\nmsr contextidr_el1, x0\nstop #1\n",
        );
        vm.run(0).unwrap();
        vm.set_vcpu_cpu(0, 1).unwrap();
        let dbg = KvmGuestDebug {
            control: (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits(),
            ..Default::default()
        };
        vm.set_guest_debug(0, &dbg).unwrap();
        vm.run(0).unwrap();
        for (c, b) in before.iter().enumerate() {
            assert_eq!(&vm.pcpu(c).unwrap().host_snapshot(), b, "{v} {p} cpu{c}");
        }
        for e in vm.events() {
            if let Event::Exited { host, pcpu, .. } = e {
                assert_eq!(**host, before[*pcpu], "{v} {p}");
            }
        }
    });
}

#[test]
fn userspace_hw_debug_runs_on_external_registers_and_gives_the_guest_its_own_back() {
    each(|v, p| {
        let mut vm = vm(v, p);
        let prog = load(
            &mut vm,
            "mov x0, #0xa000\nmsr mdscr_el1, x0\nmov x0, #0x1e5\nmsr dbgbcr0_el1, x0\nstop #0\nbp: nop\nstop #1\nmrs x3, dbgbcr0_el1\nmrs x4, mdscr_el1\nstop #2\n",
        );
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0));
        let bp = prog.label("bp").unwrap();
        let mut arch = KvmGuestDebugArch::default();
        arch.dbg_bcr[0] = 0x1e7;
        arch.dbg_bvr[0] = bp;
        let control = GuestDebugControl::ENABLE | GuestDebugControl::USE_HW;
        vm.set_guest_debug(
            0,
            &KvmGuestDebug {
                control: control.bits(),
                pad: 0,
                arch,
            },
        )
        .unwrap();
        match vm.run(0).unwrap() {
            VcpuExit::Debug { arch, .. } => {
                let esr = Esr::from_bits(arch.hsr.into());
                assert_eq!(esr.ec(), ESR_ELX_EC_BREAKPT_LOW, "{v} {p}");
                assert_eq!(vm.get_one_reg(0, core_reg::PC).unwrap(), bp);
            }
            other => panic!("{v} {p}: {other:?}"),
        }
        let live = entered_live(&vm);
        let l = live.last().unwrap();
        assert_eq!(
            (l.banks[0][0], l.banks[1][0]),
            (0x1e7, bp),
            "{v} {p}: userspace's breakpoint live"
        );
        assert!(l.mdscr_el1 & DBG_MDSCR_MDE != 0);
        // Stop debugging: the guest reads its own registers back.
        vm.set_guest_debug(0, &KvmGuestDebug::default()).unwrap();
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(1));
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(2));
        let r = vm.vcpu(0).unwrap().kvm.arch.ctxt.regs.regs;
        assert_eq!((r[3], r[4]), (0x1e5, 0xa000), "{v} {p}");
        assert_eq!(
            vm.get_one_reg(0, SysReg::Dbg(DbgBank::Bcr, 0).one_reg_id())
                .unwrap(),
            0x1e5
        );
    });
}

#[test]
fn userspace_single_step_is_one_instruction_and_restores_pstate_ss_and_mdscr() {
    each(|v, p| {
        let mut vm = vm(v, p);
        let prog = load(
            &mut vm,
            "mov x0, #0x2000\nmsr mdscr_el1, x0\nstop #0\na: nop\nb: msr dbgbvr0_el1, x0\nc: mrs x1, mdscr_el1\nd: nop\nstop #1\n",
        );
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0));
        let pstate_before = vm.get_one_reg(0, core_reg::PSTATE).unwrap();
        let control = GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP;
        vm.set_guest_debug(
            0,
            &KvmGuestDebug {
                control: control.bits(),
                ..Default::default()
            },
        )
        .unwrap();
        // The stop's MMIO store completes on entry: a step exit before `a` with ISV=0; the
        // nop executes (ISV=1); the trapped MSR and MRS are emulated (ISV=0).
        for (want, isv) in [("a", false), ("b", true), ("c", false), ("d", false)] {
            match vm.run(0).unwrap() {
                VcpuExit::Debug { arch, .. } => {
                    assert_eq!((arch.hsr >> 26) as u8, ESR_ELX_EC_SOFTSTP_LOW);
                    assert_eq!(arch.hsr & (1 << 24) != 0, isv, "{v} {p}: ISV at {want}");
                }
                other => panic!("{v} {p}: {other:?}"),
            }
            assert_eq!(
                vm.get_one_reg(0, core_reg::PC).unwrap(),
                prog.label(want).unwrap(),
                "{v} {p}"
            );
            // Between runs the guest's own PSTATE.SS and MDSCR are what userspace sees.
            assert_eq!(
                vm.get_one_reg(0, core_reg::PSTATE).unwrap() & DBG_SPSR_SS,
                pstate_before & DBG_SPSR_SS,
                "{v} {p}"
            );
            assert_eq!(
                vm.get_one_reg(0, SysReg::MdscrEl1.one_reg_id()).unwrap(),
                0x2000,
                "{v} {p}"
            );
        }
        vm.set_guest_debug(0, &KvmGuestDebug::default()).unwrap();
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(1));
        let r = vm.vcpu(0).unwrap().kvm.arch.ctxt.regs.regs;
        assert_eq!(
            r[1] & DBG_MDSCR_SS,
            0,
            "{v} {p}: the guest never sees KVM's MDSCR.SS"
        );
        assert_eq!(
            vm.get_one_reg(0, core_reg::PSTATE).unwrap() & DBG_SPSR_SS,
            pstate_before & DBG_SPSR_SS
        );
    });
}

#[test]
fn migration_between_physical_cpus_keeps_every_value() {
    for &v in REFERENCES {
        for (a, b) in [
            ("cortex-a57", "cortex-a57"),
            ("cortex-a57", "neoverse-n1"),
            ("max", "max"),
        ] {
            let fa = features(a);
            let config = hypdbg_hyp::VmConfig {
                pcpus: vec![fa, features(b)],
                vcpus: 1,
                mode: AccessMode::Checking,
                trace_instructions: false,
                budget_per_run: 100_000,
                host_mode: hypdbg_hyp::HostMode::Nvhe,
            };
            let vm =
                hypdbg_hyp::Vm::new((hypdbg_hyp::variants::by_name(v).unwrap().make)(), config)
                    .unwrap();
            let mut text = String::from("mov x0, #0xa000\nmsr mdscr_el1, x0\n");
            for bank in ["dbgbcr", "dbgbvr", "dbgwcr", "dbgwvr"] {
                let n = if bank.starts_with("dbgb") {
                    fa.num_brps()
                } else {
                    fa.num_wrps()
                };
                for i in 0..n {
                    text += &format!(
                        "mov x0, #{}\nmsr {bank}{i}_el1, x0\n",
                        0x100 + i * 4 + bank.len()
                    );
                }
            }
            text += "stop #0\n";
            for bank in ["dbgbcr", "dbgbvr", "dbgwcr", "dbgwvr"] {
                let n = if bank.starts_with("dbgb") {
                    fa.num_brps()
                } else {
                    fa.num_wrps()
                };
                for i in 0..n {
                    text += &format!("mrs x0, {bank}{i}_el1\nstop #2\n");
                }
            }
            text += "stop #1\n";
            let mut vm2 = vm;
            load(&mut vm2, &text);
            assert_eq!(vm2.run(0).unwrap(), VcpuExit::stop(0));
            for cpu in [1usize, 0, 1].iter().cycle().take(200) {
                vm2.set_vcpu_cpu(0, *cpu).unwrap();
                match vm2.run(0).unwrap() {
                    e if e == VcpuExit::stop(2) => {}
                    e if e == VcpuExit::stop(1) => break,
                    other => panic!("{other:?}"),
                }
            }
            let reads: Vec<u64> = vm2
                .events()
                .iter()
                .filter_map(|e| match e {
                    Event::Guest {
                        what:
                            GuestEvent::SysRegRead {
                                reg: SysReg::Dbg(..),
                                value,
                                ..
                            },
                        ..
                    } => Some(*value),
                    _ => None,
                })
                .collect();
            let writes: Vec<u64> = vm2
                .events()
                .iter()
                .filter_map(|e| match e {
                    Event::Guest {
                        what:
                            GuestEvent::SysRegWrite {
                                reg: SysReg::Dbg(..),
                                value,
                                ..
                            },
                        ..
                    } => Some(*value),
                    _ => None,
                })
                .collect();
            assert_eq!(reads, writes, "{v} {a}->{b}");
        }
    }
}

#[test]
fn seed_v2_runs_an_mde_only_guest_on_the_hosts_registers() {
    let mut vm = vm("seed-v2", "cortex-a57");
    load(
        &mut vm,
        "mov x0, #0x8000\nmsr mdscr_el1, x0\nstop #0\nnop\nstop #1\n",
    );
    vm.run(0).unwrap();
    vm.run(0).unwrap();
    let live = entered_live(&vm);
    let last = live.last().unwrap();
    assert_eq!(last.mdscr_el1, DBG_MDSCR_MDE);
    // The host's DBGBCR3_EL1 (0x1e7) is live while the guest runs with MDE: the invariant
    // "the guest runs on its own registers" is broken, as the checking access shows.
    assert_eq!(last.banks[DbgBank::Bcr as usize][3], 0x1e7);
    let host = vm.pcpu(0).unwrap().host_snapshot();
    assert_eq!(last.banks, host.banks);
    // And no debug register moved on that entry.
    let s = switches(&vm);
    assert_eq!(s[s.len() - 2].debug_state_moves(), 0);
    // The reference era 1 switches them.
    let mut r = common::vm("era1", "cortex-a57");
    load(
        &mut r,
        "mov x0, #0x8000\nmsr mdscr_el1, x0\nstop #0\nnop\nstop #1\n",
    );
    r.run(0).unwrap();
    r.run(0).unwrap();
    assert_eq!(
        entered_live(&r).last().unwrap().banks[DbgBank::Bcr as usize][3],
        0
    );
}

#[test]
fn unimplemented_register_access_is_a_hyp_panic_not_a_rust_panic() {
    let mut vm = vm("count-plus-one", "cortex-a57");
    load(
        &mut vm,
        "mov x0, #0x8000\nmsr mdscr_el1, x0\nstop #0\nnop\nstop #1\n",
    );
    // The trapped MDSCR write makes the guest the owner; the next entry's copy faults.
    let e = vm.run(0).unwrap_err();
    assert!(
        e.to_string().contains("UNDEFINED access to DBGBCR6_EL1"),
        "{e}"
    );
    assert!(vm.dead().is_some());
    assert!(vm.run(0).is_err(), "the VM stays dead");
    let panic = vm.events().iter().find_map(|e| match e {
        Event::HypPanic { accesses, .. } => accesses.last().copied(),
        _ => None,
    });
    assert_eq!(
        panic.unwrap().reg,
        HypReg::Sys(SysReg::Dbg(DbgBank::Bcr, 6))
    );
}

#[test]
fn check_extension_reports_the_counts_and_bad_control_is_einval() {
    let vm0 = vm("era3", "cortex-a57");
    use hypdbg_model::uapi::*;
    assert_eq!(vm0.check_extension(KVM_CAP_GUEST_DEBUG_HW_BPS), 6);
    assert_eq!(vm0.check_extension(KVM_CAP_GUEST_DEBUG_HW_WPS), 4);
    assert_eq!(vm0.check_extension(KVM_CAP_SET_GUEST_DEBUG), 1);
    assert_eq!(vm0.check_extension(KVM_CAP_SET_GUEST_DEBUG2), 0x3_0003);
    let mut vm1 = vm("era2", "max");
    let e = vm1
        .set_guest_debug(
            0,
            &KvmGuestDebug {
                control: 0x4,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("EINVAL"), "{e}");
    assert!(
        vm1.get_one_reg(0, SysReg::Dbg(DbgBank::Bcr, 15).one_reg_id())
            .is_ok()
    );
    let mut vm2 = vm("era2", "min");
    assert!(
        vm2.set_one_reg(0, SysReg::OslsrEl1.one_reg_id(), 0)
            .is_err(),
        "OSLM may not change"
    );
    assert!(
        vm2.set_one_reg(0, SysReg::OslsrEl1.one_reg_id(), 0xa)
            .is_ok(),
        "OSLK may"
    );
}

/// `kvm_handle_guest_debug` (handle_exit.c): `run->debug.arch` carries the whole ESR_EL2
/// (`hsr`, and since v5.x `hsr_high` = ESR\[63:32\] with KVM_DEBUG_ARCH_HSR_HIGH_VALID),
/// `far` only for a watchpoint, and a completed step ends the active-pending state (era 3:
/// SPSR.SS re-armed).
#[test]
fn debug_exit_reports_the_whole_syndrome_and_far_only_for_watchpoints() {
    use hypdbg_hyp::context::{DebugFlags, KvmVcpu};
    use hypdbg_model::uapi::KVM_DEBUG_ARCH_HSR_HIGH_VALID;
    const ISS2: u64 = 0x00ab_cdef << 32;
    for &v in REFERENCES {
        let flow = (hypdbg_hyp::variants::by_name(v).unwrap().make)();
        let mut vcpu = KvmVcpu::new(0);
        let wp = Esr::from_bits(Esr::watchpoint(false, true).bits() | ISS2);
        let (arch, flags) = flow.handle_guest_debug(&mut vcpu, wp, 0xffff_0000_7100_0040);
        assert_eq!(u64::from(arch.hsr), wp.bits() & 0xffff_ffff, "{v}");
        if v == "era1" {
            // v4.x: hsr only; hsr_high and the flag came with v5.x.
            assert_eq!((flags, arch.hsr_high), (0, 0), "{v}");
        } else {
            assert_eq!(flags, KVM_DEBUG_ARCH_HSR_HIGH_VALID, "{v}");
            assert_eq!(
                arch.hsr_high, 0x00ab_cdef,
                "{v}: hsr_high is ESR_EL2[63:32]"
            );
        }
        assert_eq!(
            arch.far, 0xffff_0000_7100_0040,
            "{v}: a watchpoint reports its FAR"
        );
        let (arch, _) = flow.handle_guest_debug(&mut vcpu, Esr::breakpoint(false), 0x1234);
        assert_eq!(
            arch.far, 0xffff_0000_7100_0040,
            "{v}: only a watchpoint writes run->debug.arch.far; a breakpoint leaves the union's"
        );
        assert_eq!(arch.hsr_high, 0, "{v}");
        let (arch, _) = flow.handle_guest_debug(&mut KvmVcpu::new(0), Esr::breakpoint(false), 1);
        assert_eq!(arch.far, 0, "{v}: a fresh kvm_run is zeroed");
        // Eras 1/2 clear DBG_SS_ACTIVE_PENDING; era 3 re-arms the step (SPSR.SS = 1,
        // active-not-pending) in the vcpu's PSTATE.
        let era3 = v.starts_with("era3");
        let stepped = |vcpu: &KvmVcpu| {
            if era3 {
                vcpu.cpsr() & DBG_SPSR_SS != 0
            } else {
                !vcpu.flag(DebugFlags::DBG_SS_ACTIVE_PENDING)
            }
        };
        vcpu.set_flag(DebugFlags::DBG_SS_ACTIVE_PENDING, true);
        *vcpu.cpsr_mut() &= !DBG_SPSR_SS;
        let (arch, _) = flow.handle_guest_debug(&mut vcpu, Esr::breakpoint(false), 0);
        assert_eq!(arch.hsr >> 26, 0x30, "{v}");
        assert!(
            !stepped(&vcpu),
            "{v}: a breakpoint leaves the step state alone"
        );
        let (arch, _) = flow.handle_guest_debug(&mut vcpu, Esr::software_step(false, true), 0);
        assert_eq!(arch.hsr >> 26, 0x32, "{v}");
        assert!(
            stepped(&vcpu),
            "{v}: a completed step ends the pending state"
        );
    }
}

/// Issue 15 row 3: the id register reads of one dirty round trip, per era. v4.5's
/// `__debug_save_state`/`__debug_restore_state` (era 1) and v4.17..v6.13's debug-sr.h bodies
/// (era 2) each read ID_AA64DFR0_EL1 themselves, so a round trip (save host, restore guest,
/// save guest, restore host) reads it four times, each read right before the body that uses
/// it; era 3 reads the counts cached in `kvm_host_data`.
#[test]
fn id_aa64dfr0_is_read_by_every_save_and_restore_body_in_eras_1_and_2() {
    use hypdbg_hyp::access::Scope;
    for (v, reads) in [("era1", 4), ("era2", 4), ("era3", 0)] {
        let mut vm = vm(v, "cortex-a57");
        load(
            &mut vm,
            "mov x0, #0x8000\nmsr mdscr_el1, x0\nstop #0\nnop\nstop #1\n",
        );
        vm.run(0).unwrap();
        vm.run(0).unwrap();
        let trip: Vec<_> = vm
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Entered { accesses, .. } | Event::Exited { accesses, .. } => {
                    Some(accesses.clone())
                }
                _ => None,
            })
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .flatten()
            .collect();
        let n = trip
            .iter()
            .filter(|r| r.reg == HypReg::IdAa64dfr0El1)
            .count();
        assert_eq!(n, reads, "{v}");
        if reads == 0 {
            continue;
        }
        // Each body's first access is preceded by an ID_AA64DFR0_EL1 read.
        for scope in [
            Scope::SaveHost,
            Scope::RestoreGuest,
            Scope::SaveGuest,
            Scope::RestoreHost,
        ] {
            let first = trip
                .iter()
                .position(|r| r.scope == scope && r.reg != HypReg::IdAa64dfr0El1)
                .unwrap();
            assert_eq!(trip[first - 1].reg, HypReg::IdAa64dfr0El1, "{v} {scope:?}");
        }
    }
}

fn set_control(vm: &mut hypdbg_hyp::Vm, control: GuestDebugControl) {
    vm.set_guest_debug(
        0,
        &KvmGuestDebug {
            control: control.bits(),
            ..Default::default()
        },
    )
    .unwrap();
}

/// Issue 15 row 2: a step left active-pending by a run (the stepped HVC completed, its step
/// exception not yet taken) survives userspace turning SINGLESTEP off and on again without
/// a run in between: the next run reports that step before any instruction executes. The
/// references forget the pending step where the vcpu is about to run without SINGLESTEP
/// (`kvm_arm_setup_debug`, `kvm_vcpu_load_debug`), not in KVM_SET_GUEST_DEBUG.
#[test]
fn singlestep_off_and_on_without_a_run_keeps_a_pending_step() {
    for &v in REFERENCES {
        let mut vm = vm(v, "cortex-a57");
        let fid = HYPDBG_FORWARDED_FID;
        vm.set_smccc_filter(fid as u32, 1, SmcccAction::ForwardToUser)
            .unwrap();
        let prog = load(&mut vm, "nop\nhvc #0\na: nop\nb: nop\nstop #1\n");
        vm.set_one_reg(0, core_reg::x(0), fid).unwrap();
        let step = GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP;
        set_control(&mut vm, step);
        assert!(matches!(vm.run(0).unwrap(), VcpuExit::Debug { .. }), "{v}");
        // The HVC the SMCCC filter forwards: KVM completed it, its step is pending.
        assert_eq!(
            vm.run(0).unwrap(),
            VcpuExit::Hypercall { nr: fid, flags: 0 },
            "{v}"
        );
        set_control(&mut vm, GuestDebugControl::ENABLE);
        set_control(&mut vm, step);
        match vm.run(0).unwrap() {
            VcpuExit::Debug { arch, .. } => {
                assert_eq!((arch.hsr >> 26) as u8, ESR_ELX_EC_SOFTSTP_LOW, "{v}")
            }
            other => panic!("{v}: {other:?}"),
        }
        assert_eq!(
            vm.get_one_reg(0, core_reg::PC).unwrap(),
            prog.label("a").unwrap(),
            "{v}: the pending step is reported before `a` executes"
        );
        // A run without SINGLESTEP forgets it: stepping again starts afresh.
        set_control(&mut vm, GuestDebugControl::ENABLE);
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(1), "{v}");
    }
}

/// Issue 15 row 5: the DBG{B,W}{C,V}R<n>_EL1 descriptors have no visibility hook, so
/// KVM_GET_ONE_REG/KVM_SET_ONE_REG succeed for all 16 slots of each bank and KVM_GET_REG_LIST
/// lists all 64, whatever the implemented count (the real kernels do the same).
#[test]
fn one_reg_reaches_all_sixteen_slots_of_each_bank_whatever_the_count() {
    for &v in REFERENCES {
        let mut vm = vm(v, "min");
        let list = vm.get_reg_list(0).unwrap();
        for bank in DbgBank::ALL {
            for n in 0..16u8 {
                let id = SysReg::Dbg(bank, n).one_reg_id();
                assert!(list.contains(&id), "{v}: {bank:?}{n} not listed");
                let value = 0x1000 + u64::from(n);
                vm.set_one_reg(0, id, value).unwrap();
                assert_eq!(vm.get_one_reg(0, id).unwrap(), value, "{v} {bank:?}{n}");
            }
        }
        let dbg = list
            .iter()
            .filter(|&&id| matches!(SysReg::from_one_reg_id(id), Ok(SysReg::Dbg(..))))
            .count();
        assert_eq!(dbg, 64, "{v}");
    }
}

/// Issue 15 row 7: an access to DBG{B,W}{C,V}R<n>_EL1 with n at or above the implemented
/// count is UNDEFINED on hardware before any trap to EL2 is considered: the guest takes the
/// UNDEF at EL1 even while MDCR_EL2.TDA traps the implemented ones, and no trap is recorded.
#[test]
fn unimplemented_debug_register_undefs_in_the_guest_without_a_trap() {
    use hypdbg_model::esr::ESR_ELX_EC_UNKNOWN;
    for &v in REFERENCES {
        let mut vm = vm(v, "min");
        let prog = load(
            &mut vm,
            "a: mrs x0, dbgbcr5_el1\nb: msr dbgwvr2_el1, x0\nstop #0\n",
        );
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0), "{v}");
        let undefs: Vec<u64> = vm
            .vcpu(0)
            .unwrap()
            .exceptions
            .iter()
            .filter_map(|e| match e {
                GuestEvent::Exception { esr, elr, .. } if esr.ec() == ESR_ELX_EC_UNKNOWN => {
                    Some(*elr)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            undefs,
            vec![prog.label("a").unwrap(), prog.label("b").unwrap()],
            "{v}"
        );
        assert!(
            !vm.events().iter().any(|e| matches!(e, Event::Trap { .. })),
            "{v}: no trap to EL2"
        );
    }
}

/// Issue 15 row 13: names and numbers of the era each flow claims. KVM_CAP_SET_GUEST_DEBUG2
/// came with v5.12 (era 1 answers 0); `enum debug_owner` is {FREE, HOST_OWNED, GUEST_OWNED};
/// the DEBUG_DIRTY flag is `KVM_ARM64_DEBUG_DIRTY` before v6.0.
#[test]
fn each_era_answers_with_its_own_names_and_capabilities() {
    use hypdbg_hyp::context::DebugOwner;
    use hypdbg_hyp::flow::Era;
    use hypdbg_model::uapi::KVM_CAP_SET_GUEST_DEBUG2;
    assert_eq!(
        vm("era1", "min").check_extension(KVM_CAP_SET_GUEST_DEBUG2),
        0
    );
    assert_eq!(
        vm("era2", "min").check_extension(KVM_CAP_SET_GUEST_DEBUG2),
        0x3_0003
    );
    assert_eq!(
        [
            DebugOwner::VcpuDebugFree as u8,
            DebugOwner::VcpuDebugHostOwned as u8,
            DebugOwner::VcpuDebugGuestOwned as u8
        ],
        [0, 1, 2]
    );
    assert_eq!(Era::One.dirty_flag_name(), "KVM_ARM64_DEBUG_DIRTY");
    assert_eq!(Era::Two.dirty_flag_name(), "DEBUG_DIRTY");
    use hypdbg_hyp::access::Scope;
    assert_eq!(
        Scope::Traps.kernel_name_in(Era::One),
        "__{activate,deactivate}_traps"
    );
    assert_eq!(
        Scope::Traps.kernel_name_in(Era::Two),
        "__{activate,deactivate}_traps_common"
    );
}

/// Issue 15 row 1: what pKVM's `flush_debug_state` hands the hyp's vcpu, per kernel. v7.3
/// (the reference) gives it the owner, the owned block and, while the host owns debug, the
/// `external_mdscr_el1` the world switch loads; v6.14..v7.2 leave that MDSCR out; v6.14-rc1
/// flushed nothing (the hyp vcpu keeps its own owner and MDSCR).
#[test]
fn pkvm_flush_debug_state_is_each_kernels_own() {
    use hypdbg_hyp::context::{DebugOwner, KvmVcpu};
    let mut host = KvmVcpu::new(0);
    host.arch.debug_owner = DebugOwner::VcpuDebugHostOwned;
    host.arch.external_mdscr_el1 = DBG_MDSCR_SS;
    host.arch.external_debug_state.dbg_bcr[0] = 0x1e7;
    for (v, owner, mdscr) in [
        ("era3-pkvm", DebugOwner::VcpuDebugHostOwned, DBG_MDSCR_SS),
        (
            "pkvm-external-mdscr-not-flushed",
            DebugOwner::VcpuDebugHostOwned,
            0x1234,
        ),
        ("pkvm-owner-not-flushed", DebugOwner::VcpuDebugFree, 0x1234),
    ] {
        let flow = (hypdbg_hyp::variants::by_name(v).unwrap().make)();
        let mut hyp = KvmVcpu::new(0);
        hyp.arch.external_mdscr_el1 = 0x1234; // what the hyp vcpu's last exit saved
        flow.flush_debug_state(&mut hyp, &host);
        assert_eq!(hyp.arch.debug_owner, owner, "{v}");
        assert_eq!(hyp.arch.external_mdscr_el1, mdscr, "{v}");
    }
    // Under v6.14..v7.2 a userspace single-step never arms: the guest runs to its HVC.
    for (v, stepped) in [
        ("era3-pkvm", true),
        ("pkvm-external-mdscr-not-flushed", false),
    ] {
        let mut vm = vm(v, "cortex-a57");
        load(&mut vm, "nop\nnop\nstop #0\n");
        set_control(
            &mut vm,
            GuestDebugControl::ENABLE | GuestDebugControl::SINGLESTEP,
        );
        let exit = vm.run(0).unwrap();
        assert_eq!(
            matches!(exit, VcpuExit::Debug { .. }),
            stepped,
            "{v}: {exit:?}"
        );
    }
}

/// Issue 15 row 6: the debug registers sys_regs.c handles without state. DBGCLAIMSET/CLR_EL1,
/// MDCCSR_EL0 and DBGDTR*_EL0 are `trap_raz_wi`, DBGAUTHSTATUS_EL1 reads the host's value;
/// none is UNDEFINED, trapped (clean) or not (the guest owns its debug state). DBGVCR32_EL2
/// is an EL2 register: UNDEFINED at EL1, kept for ONE_REG.
#[test]
fn dcc_claim_and_auth_registers_are_emulated_not_undefined() {
    use hypdbg_model::esr::ESR_ELX_EC_UNKNOWN;
    let program = "
        mov x1, #1
        msr dbgclaimset_el1, x1
        msr dbgclaimclr_el1, x1
        msr dbgdtr_el0, x1
        msr dbgdtrtx_el0, x1
        mrs x2, dbgclaimclr_el1
        mrs x3, mdccsr_el0
        mrs x4, dbgdtrrx_el0
        mrs x5, dbgdtr_el0
        mrs x6, dbgauthstatus_el1
        stop #0
    v: mrs x7, dbgvcr32_el2
        stop #1
    ";
    for &v in REFERENCES {
        for mdscr in [0u64, 0xa000] {
            let mut vm = vm(v, "cortex-a57");
            let prog = load(
                &mut vm,
                &format!("mov x0, #{mdscr:#x}\nmsr mdscr_el1, x0\n{program}"),
            );
            assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0), "{v} {mdscr:#x}");
            let r = vm.vcpu(0).unwrap().kvm.arch.ctxt.regs.regs;
            assert_eq!(r[2..=6], [0, 0, 0, 0, 0xff], "{v} {mdscr:#x}");
            assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(1), "{v}");
            let undefs: Vec<u64> = vm
                .vcpu(0)
                .unwrap()
                .exceptions
                .iter()
                .filter_map(|e| match e {
                    GuestEvent::Exception { esr, elr, .. } if esr.ec() == ESR_ELX_EC_UNKNOWN => {
                        Some(*elr)
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(undefs, vec![prog.label("v").unwrap()], "{v} {mdscr:#x}");
        }
        let mut vm = vm(v, "min");
        let id = SysReg::Dbgvcr32El2.one_reg_id();
        assert!(vm.get_reg_list(0).unwrap().contains(&id));
        vm.set_one_reg(0, id, 0x12).unwrap();
        assert_eq!(vm.get_one_reg(0, id).unwrap(), 0x12, "{v}");
    }
}

/// Issue 15 row 11: the guest-visible ID_AA64DFR0_EL1. The guest sees the sanitised value
/// (DebugVer capped at Armv8.8; SPE, TRBE and BRBE hidden); userspace may lower WRPs before
/// the first run (v6.7+) but not raise it nor touch BRPs; KVM_CAP_GUEST_DEBUG_HW_WPS and the
/// world switch keep the hardware's count, so a guest that uses every hardware watchpoint
/// still reads back what it wrote.
#[test]
fn guest_visible_id_aa64dfr0_is_sanitised_and_its_wrps_may_only_go_down() {
    use hypdbg_model::dfr0::sanitise_id_aa64dfr0_el1;
    use hypdbg_model::uapi::KVM_CAP_GUEST_DEBUG_HW_WPS;
    // DebugVer 0xb (v8.9), PMSVer 1, TraceBuffer 1, BRBE 1 on top of a 6/4 CPU.
    let host = 0x1030_510b | (1 << 32) | (1 << 44) | (1 << 52);
    assert_eq!(sanitise_id_aa64dfr0_el1(host), 0x1030_510a);
    let id = SysReg::IdAa64dfr0El1.one_reg_id();
    for &v in REFERENCES {
        let f = features("cortex-a57");
        let mut vm = vm(v, "cortex-a57");
        let view = vm.get_one_reg(0, id).unwrap();
        assert_eq!(view, sanitise_id_aa64dfr0_el1(f.raw()), "{v}");
        let e = vm.set_one_reg(0, id, view + (1 << 20)).unwrap_err();
        assert!(e.to_string().contains("E2BIG"), "{v}: raising WRPs: {e}");
        let e = vm.set_one_reg(0, id, view - (1 << 12)).unwrap_err();
        assert!(e.to_string().contains("E2BIG"), "{v}: BRPs is locked: {e}");
        let lowered = view - (1 << 20);
        vm.set_one_reg(0, id, lowered).unwrap();
        assert_eq!(vm.get_one_reg(0, id).unwrap(), lowered, "{v}");
        assert_eq!(vm.check_extension(KVM_CAP_GUEST_DEBUG_HW_WPS), 4, "{v}");
        let prog = "
            mrs x0, id_aa64dfr0_el1
            mov x1, #0x1ff7
            msr dbgwcr3_el1, x1
            mov x1, #0xa000
            msr mdscr_el1, x1
            stop #0
            mrs x2, dbgwcr3_el1
            stop #1
        ";
        load(&mut vm, prog);
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0), "{v}");
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(1), "{v}");
        let r = vm.vcpu(0).unwrap().kvm.arch.ctxt.regs.regs;
        assert_eq!((r[0], r[2]), (lowered, 0x1ff7), "{v}");
        let e = vm.set_one_reg(0, id, lowered - (1 << 20)).unwrap_err();
        assert!(
            e.to_string().contains("EBUSY"),
            "{v}: frozen after the first run: {e}"
        );
    }
}

fn vhe_vm(variant: &str, profile: &str) -> hypdbg_hyp::Vm {
    let v = hypdbg_hyp::variants::by_name(&format!("{variant}@vhe")).unwrap();
    let config = hypdbg_hyp::VmConfig {
        pcpus: vec![features(profile)],
        vcpus: 1,
        mode: AccessMode::Checking,
        trace_instructions: false,
        budget_per_run: 2_000_000,
        host_mode: hypdbg_hyp::HostMode::Vhe,
    };
    hypdbg_hyp::Vm::new((v.make)(), config).unwrap()
}

/// Issue 15 row 12: on a VHE host MDCR_EL2 and the EL1 registers are loaded at vcpu_load and
/// given back at vcpu_put, not switched at every entry; MDSCR_EL1 still is (the host at EL2
/// uses it); era 3 writes MDCR_EL2 at once when a trapped access promotes ownership, so the
/// second access of the same KVM_RUN no longer traps. Era 1 and pKVM have no VHE form.
#[test]
fn vhe_loads_mdcr_and_el1_registers_at_load_and_promotes_at_once() {
    use hypdbg_hyp::pcpu::HostSnapshot;
    for v in ["era2", "era3"] {
        let mut vm = vhe_vm(v, "cortex-a57");
        let host: HostSnapshot = vm.pcpu(0).unwrap().host_snapshot();
        load(
            &mut vm,
            "mrs x0, dbgbcr0_el1\nmrs x1, dbgbcr1_el1\nstop #0\n",
        );
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0), "{v}");
        for e in vm.events() {
            if let Event::Entered { accesses, .. } | Event::Exited { accesses, .. } = e {
                assert!(
                    accesses
                        .iter()
                        .all(|a| a.reg != HypReg::MdcrEl2
                            && a.reg != HypReg::Sys(SysReg::ContextidrEl1)),
                    "{v}: MDCR_EL2/CONTEXTIDR_EL1 switched per entry: {accesses:?}"
                );
            }
        }
        let after = vm.pcpu(0).unwrap().host_snapshot();
        assert_eq!(
            after.mdcr_el2, host.mdcr_el2,
            "{v}: MDCR_EL2 given back at put"
        );
        assert_eq!(after.contextidr_el1, host.contextidr_el1, "{v}");
        let traps = vm
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Trap { .. }))
            .count();
        // Era 3 promotes at the first trapped access, read or write, and writes MDCR_EL2 at
        // once; in era 2 a read does not make the state dirty: both reads trap.
        assert_eq!(traps, if v == "era3" { 1 } else { 2 }, "{v}");
    }
    for v in ["era1", "era3-pkvm"] {
        assert!(
            hypdbg_hyp::variants::by_name(&format!("{v}@vhe")).is_none(),
            "{v}"
        );
    }
}

/// Issue 15 row 4: from v6.10 era 2 keeps the host's debug registers and MDCR_EL2 per CPU in
/// `kvm_host_data.host_debug_state` (`host_data_ptr(host_debug_state.regs)`), v4.17..v6.9 in
/// the vcpu (`vcpu->arch.host_debug_state`, `mdcr_el2_host`): `era2-percpu` and `era2`.
#[test]
fn era2_keeps_the_host_save_area_per_vcpu_until_v6_9_and_per_cpu_from_v6_10() {
    use hypdbg_hyp::access::CheckingAccess;
    use hypdbg_hyp::context::{DebugFlags, KvmVcpu};
    use hypdbg_hyp::flow::AnyAccess;
    use hypdbg_hyp::pcpu::Pcpu;
    for (v, per_cpu) in [("era2", false), ("era2-percpu", true)] {
        let flow = (hypdbg_hyp::variants::by_name(v).unwrap().make)();
        let mut pcpu = Pcpu::new(0, features("cortex-a57"));
        let host_bcr0 = pcpu.host_snapshot().banks[DbgBank::Bcr as usize].as_slice()[0];
        let mut vcpu = KvmVcpu::new(0);
        vcpu.set_flag(DebugFlags::DEBUG_DIRTY, true);
        vcpu.arch.mdcr_el2 = 0x666;
        let mut log = Vec::new();
        {
            let Pcpu {
                regs, host_data, ..
            } = &mut pcpu;
            let mut a = AnyAccess::Checking(CheckingAccess::new(regs, &mut log));
            flow.activate_traps(&mut a, &mut vcpu, host_data);
            flow.switch_to_guest(&mut a, &mut vcpu, host_data).unwrap();
        }
        let in_cpu = pcpu.host_data.host_debug_state.regs.dbg_bcr[0];
        let in_vcpu = vcpu.arch.host_debug_state.dbg_bcr[0];
        let (cpu_mdcr, vcpu_mdcr) = (
            pcpu.host_data.host_debug_state.mdcr_el2,
            vcpu.arch.mdcr_el2_host,
        );
        if per_cpu {
            assert_eq!((in_cpu, in_vcpu), (host_bcr0, 0), "{v}");
            assert_ne!(cpu_mdcr, 0, "{v}");
            assert_eq!(vcpu_mdcr, 0, "{v}");
        } else {
            assert_eq!((in_cpu, in_vcpu), (0, host_bcr0), "{v}");
            assert_eq!(cpu_mdcr, 0, "{v}");
            assert_ne!(vcpu_mdcr, 0, "{v}");
        }
    }
}

/// Issue 15 row 6: OSDTRRX_EL1, OSDTRTX_EL1 and OSECCR_EL1 have no sys_regs.c descriptor in
/// any kernel: a trapped access (MDCR_EL2.TDA, debug state not loaded) is an unsupported
/// sys_reg access and KVM injects UNDEF.
#[test]
fn os_lock_data_transfer_registers_undef_when_trapped() {
    use hypdbg_model::esr::ESR_ELX_EC_UNKNOWN;
    for &v in REFERENCES {
        let mut vm = vm(v, "min");
        let prog = load(
            &mut vm,
            "a: mrs x0, oseccr_el1\nb: msr osdtrrx_el1, x0\nc: msr osdtrtx_el1, x0\nstop #0\n",
        );
        assert_eq!(vm.run(0).unwrap(), VcpuExit::stop(0), "{v}");
        let undefs: Vec<u64> = vm
            .vcpu(0)
            .unwrap()
            .exceptions
            .iter()
            .filter_map(|e| match e {
                GuestEvent::Exception { esr, elr, .. } if esr.ec() == ESR_ELX_EC_UNKNOWN => {
                    Some(*elr)
                }
                _ => None,
            })
            .collect();
        let want: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|l| prog.label(l).unwrap())
            .collect();
        assert_eq!(undefs, want, "{v}");
        let trapped = vm
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Trap { undef: true, .. }))
            .count();
        assert_eq!(trapped, 3, "{v}: each traps to EL2 first");
    }
}
