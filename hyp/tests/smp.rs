//! `hypdbg_hyp::smp` on std threads (the loom models are the workspace's `tests/loom_*.rs`):
//! migrating vcpus keep every CPU's host registers, the broken save-area choices restore
//! another CPU's registers on a schedule played by hand, and the vcpu mutex keeps
//! KVM_SET_GUEST_DEBUG's block whole.
#![cfg(not(loom))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broken.rs"]
mod broken;

use std::sync::Arc;
use std::thread;

use hypdbg_hyp::KvmError;
use hypdbg_hyp::context::{DebugOwner, KvmVcpu};
use hypdbg_hyp::flow::{Era3, Era3Reference};
use hypdbg_hyp::smp::{SaveArea, SmpHost, SmpVcpu, VcpuFd, live_block};
use hypdbg_hyp::variants::generic::HostStateSharedSlot;
use hypdbg_model::DebugFeatures;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebug, KvmGuestDebugArch};

use broken::UnlockedVcpuFd;

fn features() -> DebugFeatures {
    DebugFeatures::from_counts(2, 2, 1).unwrap()
}

fn block(tag: u64) -> KvmGuestDebugArch {
    let mut a = KvmGuestDebugArch::default();
    for n in 0..2 {
        let base = 0x4000_0000 + tag * 0x10_0000 + (n as u64) * 0x10;
        a.dbg_bcr[n] = 0x1e5;
        a.dbg_bvr[n] = base;
        a.dbg_wcr[n] = 0x1fe7;
        a.dbg_wvr[n] = base + 0x800;
    }
    a
}

fn guest_debug(tag: u64) -> KvmGuestDebug {
    KvmGuestDebug {
        control: (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits(),
        pad: 0,
        arch: block(tag),
    }
}

fn debugged_vcpu<F: Era3>(host: &SmpHost<F>, i: usize) -> SmpVcpu {
    let mut v = SmpVcpu::new(KvmVcpu::new(i));
    host.flow()
        .kvm_arch_vcpu_ioctl_set_guest_debug(&mut v.kvm, &guest_debug(i as u64))
        .unwrap();
    v
}

fn hammer(save_area: SaveArea, put_on_migration: bool) {
    const VCPUS: usize = 3;
    const RUNS: usize = 400;
    let host = Arc::new(SmpHost::new(Era3Reference, features(), 2, save_area));
    let threads: Vec<_> = (0..VCPUS)
        .map(|i| {
            let host = host.clone();
            thread::spawn(move || {
                let mut v = debugged_vcpu(&host, i);
                for k in 0..RUNS {
                    let cpu = (i + k) % host.cpus();
                    let mut on = host.pin(cpu).unwrap();
                    if put_on_migration || k == 0 {
                        on.vcpu_load(&mut v);
                    }
                    let live = on.run(&mut v, |regs| live_block(regs)).unwrap();
                    assert_eq!(live, block(i as u64));
                    assert_eq!(Some(on.host_snapshot()), host.boot_snapshot(cpu));
                    if put_on_migration {
                        on.vcpu_put(&mut v);
                    }
                    drop(on);
                    thread::yield_now();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for cpu in 0..host.cpus() {
        assert_eq!(
            Some(host.pin(cpu).unwrap().host_snapshot()),
            host.boot_snapshot(cpu)
        );
    }
}

#[test]
fn migrating_vcpus_on_std_threads_keep_each_cpus_host_registers() {
    hammer(SaveArea::CurrentCpu, true);
    hammer(SaveArea::CurrentCpu, false);
    hammer(SaveArea::ChosenAtLoad, true);
}

#[test]
fn boot_registers_differ_per_cpu_and_name_their_owner() {
    let host = SmpHost::new(Era3Reference, features(), 2, SaveArea::CurrentCpu);
    let (b0, b1) = (
        host.boot_snapshot(0).unwrap(),
        host.boot_snapshot(1).unwrap(),
    );
    assert_ne!(b0.banks, b1.banks);
    assert_eq!(host.boot_owner(&b0), Some(0));
    assert_eq!(host.boot_owner(&b1), Some(1));
    assert_eq!(host.boot_snapshot(2), None);
    assert_eq!(host.save_area(), SaveArea::CurrentCpu);
}

/// vcpu X loaded on CPU 0 and migrated to CPU 1 without a put; vcpu Y loaded on CPU 0 runs
/// there while X is in its guest on CPU 1. Returns whose host registers CPU 0 and CPU 1 hold
/// afterwards.
fn overlap_on_shared_area<F: Era3>(
    host: &SmpHost<F>,
    load_on_migration: bool,
) -> [Option<usize>; 2] {
    let (mut x, mut y) = (debugged_vcpu(host, 0), debugged_vcpu(host, 1));
    host.pin(0).unwrap().vcpu_load(&mut x);
    let mut on0 = host.pin(0).unwrap();
    on0.vcpu_load(&mut y);
    let mut on1 = host.pin(1).unwrap();
    if load_on_migration {
        on1.vcpu_load(&mut x);
    }
    on1.run(&mut x, |_| {
        let live = on0.run(&mut y, |regs| live_block(regs)).unwrap();
        assert_eq!(live, block(1));
    })
    .unwrap();
    [
        host.boot_owner(&on0.host_snapshot()),
        host.boot_owner(&on1.host_snapshot()),
    ]
}

#[test]
fn save_area_chosen_at_load_restores_another_cpus_registers_after_a_migration_without_put() {
    let broken = SmpHost::new(Era3Reference, features(), 2, SaveArea::ChosenAtLoad);
    // CPU 1 gets CPU 0's host registers back: the cross-CPU restore loom finds.
    assert_eq!(overlap_on_shared_area(&broken, false), [Some(0), Some(0)]);
    let with_load = SmpHost::new(Era3Reference, features(), 2, SaveArea::ChosenAtLoad);
    assert_eq!(overlap_on_shared_area(&with_load, true), [Some(0), Some(1)]);
    let era3 = SmpHost::new(Era3Reference, features(), 2, SaveArea::CurrentCpu);
    assert_eq!(overlap_on_shared_area(&era3, false), [Some(0), Some(1)]);
}

#[test]
fn host_state_shared_slot_restores_another_cpus_registers() {
    let host = SmpHost::new(
        HostStateSharedSlot::default(),
        features(),
        2,
        SaveArea::CurrentCpu,
    );
    assert_eq!(overlap_on_shared_area(&host, true), [Some(0), Some(0)]);
}

#[test]
fn vcpu_fd_keeps_set_guest_debug_whole_against_runs() {
    const ROUNDS: u64 = 300;
    let host = Arc::new(SmpHost::new(
        Era3Reference,
        features(),
        2,
        SaveArea::CurrentCpu,
    ));
    let fd = Arc::new(VcpuFd::new(KvmVcpu::new(0)));
    fd.set_guest_debug(&host, &guest_debug(0)).unwrap();
    let debugger = {
        let (host, fd) = (host.clone(), fd.clone());
        thread::spawn(move || {
            for k in 0..ROUNDS {
                fd.set_guest_debug(&host, &guest_debug(k % 2)).unwrap();
                thread::yield_now();
            }
            fd.set_guest_debug(&host, &guest_debug(7)).unwrap();
        })
    };
    for k in 0..ROUNDS as usize {
        let live = fd.run(&host, k % 2, |regs| live_block(regs)).unwrap();
        assert!(live == block(0) || live == block(1) || live == block(7));
        thread::yield_now();
    }
    debugger.join().unwrap();
    assert_eq!(fd.run(&host, 1, |regs| live_block(regs)).unwrap(), block(7));
    let v = fd.vcpu();
    assert_eq!(v.loaded(), None);
    assert_eq!(v.kvm.arch.debug_owner, DebugOwner::VcpuDebugHostOwned);
    assert_eq!(v.kvm.arch.external_debug_state, block(7));
    for cpu in 0..2 {
        assert_eq!(
            Some(host.pin(cpu).unwrap().host_snapshot()),
            host.boot_snapshot(cpu)
        );
    }
}

#[test]
fn unlocked_vcpu_fd_without_a_race_behaves_like_the_locked_one() {
    let host = SmpHost::new(Era3Reference, features(), 1, SaveArea::CurrentCpu);
    let fd = UnlockedVcpuFd::new(0, &features());
    fd.set_guest_debug(&host, &guest_debug(3)).unwrap();
    assert_eq!(fd.run(&host, 0, |regs| live_block(regs)).unwrap(), block(3));
    // An invalid control word is refused and publishes nothing.
    let bad = KvmGuestDebug {
        control: 0x8000_0000,
        ..guest_debug(4)
    };
    assert!(matches!(
        fd.set_guest_debug(&host, &bad),
        Err(KvmError::Inval(_))
    ));
    assert_eq!(fd.run(&host, 0, |regs| live_block(regs)).unwrap(), block(3));
    // Debugging off: the guest's own (reset) registers, nothing of the old block.
    let off = KvmGuestDebug::default();
    fd.set_guest_debug(&host, &off).unwrap();
    let live = fd.run(&host, 0, |regs| live_block(regs)).unwrap();
    assert_ne!(live, block(3));
}

#[test]
fn errors_are_values() {
    let host = SmpHost::new(Era3Reference, features(), 2, SaveArea::CurrentCpu);
    assert!(matches!(host.pin(2), Err(KvmError::Inval(_))));
    let fd = VcpuFd::new(KvmVcpu::new(0));
    assert!(matches!(fd.run(&host, 9, |_| ()), Err(KvmError::Inval(_))));
    let mut v = debugged_vcpu(&host, 0);
    let mut on = host.pin(1).unwrap();
    assert_eq!(on.cpu(), 1);
    assert!(matches!(on.run(&mut v, |_| ()), Err(KvmError::Inval(_))));
    on.vcpu_load(&mut v);
    assert_eq!(v.loaded(), Some(1));
    on.run(&mut v, |_| ()).unwrap();
    on.vcpu_put(&mut v);
    assert_eq!(v.loaded(), None);
}
