//! Loom model 2, the kernel side, era 3: the per-physical-CPU host save area with migrating
//! vCPUs, through `hypdbg_hyp::smp` (physical CPUs as locks, the real era-3 `vcpu_load`,
//! `__debug_switch_to_guest_common`, `__debug_switch_to_host_common` and `vcpu_put` of
//! `Era3Reference`; synchronisation from `hypdbg_hyp::sync`, loom's here).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_era3_percpu --target-dir
//! target-loom -- --nocapture`.
//!
//! Two physical CPUs whose host kernels use their own breakpoints and watchpoints, with values
//! distinct per CPU; two vCPU threads, each with its own hardware breakpoints set through
//! KVM_SET_GUEST_DEBUG (so the host owns debug and every entry saves and restores). Each vCPU
//! thread runs on CPU 0, is preempted and migrates to CPU 1, then back to CPU 0: on each CPU it
//! takes the CPU (preemption disabled), `vcpu_load`s, enters and exits once, `vcpu_put`s, and
//! lets go (preemption point). The two threads race for the CPUs in every order loom allows.
//!
//! What the models prove, for every interleaving within the preemption bound:
//!
//! - `era3_host_registers_restored_per_cpu`: every exit on CPU c gives CPU c back its own host
//!   registers, never another CPU's (a "cross-CPU restore") and never lost (the guest's left in
//!   place); every entry runs the guest with its own vCPU's breakpoints; after both threads
//!   finish, both CPUs hold their boot-time host registers.
//! - `era3_survives_migration_without_put`: the same with no put and no load on migration (a
//!   missing preempt notifier): era 3 saves into the *current* CPU's `host_data`, so the host's
//!   registers are still safe.
//! - `save_area_chosen_at_load_is_right_with_put_and_load`: `SaveArea::ChosenAtLoad` is right
//!   as long as every migration is a put and a load (so the broken model below fails for the
//!   missing put, not for the choice alone).
//! - Broken, `SaveArea::ChosenAtLoad` with a migration without a put: the save area chosen at
//!   load (CPU 0's) is used on CPU 1 while the other vCPU uses it on CPU 0: loom must find the
//!   cross-CPU restore.
//! - Broken, the `host-state-shared-slot` mutant (`variants::generic::HostStateSharedSlot`: one
//!   global slot instead of per-CPU `host_data`): loom must find the cross-CPU restore.
//!
//! Bounds: preemption bound 3, two threads, two physical CPUs, 2 breakpoint and 2 watchpoint
//! register pairs per CPU, three runs per thread (CPU 0, CPU 1, CPU 0).
//!
//! What loom sees and does not: every interleaving of lock acquisitions (the CPU locks, the
//! per-CPU `host_data` leaf locks, the shared-slot mutex) and spawn/join, with at most 3
//! preemptions. The code relies on mutexes only: holding a CPU's lock stands for preemption
//! disabled on that CPU, which is what makes a per-CPU area private to the thread running
//! there; lock/unlock give the acquire/release ordering that per-CPU data gets on the real
//! thing from the scheduler's own barriers on migration. Loom does not model the real
//! hardware: interrupts, NMIs or the hyp's own concurrency are outside the model, and the
//! register copies themselves are plain (non-atomic) code that runs between loom's steps.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hypdbg_hyp::context::KvmVcpu;
use hypdbg_hyp::flow::{Era3, Era3Reference};
use hypdbg_hyp::smp::{OnCpu, SaveArea, SmpHost, SmpVcpu, live_block};
use hypdbg_hyp::sync::{Arc, thread};
use hypdbg_hyp::variants::generic::HostStateSharedSlot;
use hypdbg_model::DebugFeatures;
use hypdbg_model::sync::model;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebug, KvmGuestDebugArch};

/// The preemption bound of every model here.
const BOUND: usize = 3;

/// Every vCPU runs on CPU 0, migrates to CPU 1, then back to CPU 0.
const SCHEDULE: [usize; 3] = [0, 1, 0];

fn features() -> DebugFeatures {
    DebugFeatures::from_counts(2, 2, 1).unwrap()
}

/// vCPU `i`'s hardware breakpoints and watchpoints (distinct from every host's and each other).
fn block(i: usize) -> KvmGuestDebugArch {
    let mut a = KvmGuestDebugArch::default();
    for n in 0..2 {
        let base = 0x4000_0000 + (i as u64) * 0x1000 + (n as u64) * 0x10;
        a.dbg_bcr[n] = 0x1e5;
        a.dbg_bvr[n] = base;
        a.dbg_wcr[n] = 0x1fe7;
        a.dbg_wvr[n] = base + 0x800;
    }
    a
}

/// Run on the CPU we hold, then check that the CPU's host registers came back.
fn run_and_check<F: Era3>(host: &SmpHost<F>, on: &mut OnCpu<'_, F>, v: &mut SmpVcpu) {
    let i = v.kvm.vcpu_id;
    let cpu = on.cpu();
    let live = on.run(v, |regs| live_block(regs)).unwrap();
    assert_eq!(
        live,
        block(i),
        "vCPU {i} ran on CPU {cpu} without its own breakpoints"
    );
    let now = on.host_snapshot();
    if Some(now) != host.boot_snapshot(cpu) {
        match host.boot_owner(&now) {
            Some(other) if other != cpu => panic!(
                "cross-CPU restore: CPU {cpu} got CPU {other}'s host registers back (exit of vCPU {i})"
            ),
            _ => panic!("CPU {cpu}'s host registers lost on the exit of vCPU {i}: {now:x?}"),
        }
    }
}

/// One vCPU thread: KVM_SET_GUEST_DEBUG, then a run on each CPU of `SCHEDULE`.
fn vcpu_thread<F: Era3>(host: &SmpHost<F>, i: usize, put_on_migration: bool) {
    let mut v = SmpVcpu::new(KvmVcpu::new(i));
    let dbg = KvmGuestDebug {
        control: (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits(),
        pad: 0,
        arch: block(i),
    };
    host.flow()
        .kvm_arch_vcpu_ioctl_set_guest_debug(&mut v.kvm, &dbg)
        .unwrap();
    for (step, cpu) in SCHEDULE.into_iter().enumerate() {
        // Scheduled in on `cpu`: the preempt notifier loads the vCPU (or, when it is missing,
        // nothing happens after the first load).
        let mut on = host.pin(cpu).unwrap();
        if put_on_migration || step == 0 {
            on.vcpu_load(&mut v);
        }
        run_and_check(host, &mut on, &mut v);
        if put_on_migration {
            on.vcpu_put(&mut v);
        }
        // Dropping `on` enables preemption: the thread may be migrated here.
    }
}

/// Two vCPU threads (the model's main thread is vCPU 0) on a host built by `make`.
fn model<F: Era3>(
    make: impl Fn() -> SmpHost<F> + Sync + Send + 'static,
    put_on_migration: bool,
) -> impl Fn() + Sync + Send + 'static {
    move || {
        let host = Arc::new(make());
        let h = host.clone();
        let other = thread::spawn(move || vcpu_thread(&h, 1, put_on_migration));
        vcpu_thread(&host, 0, put_on_migration);
        other.join().unwrap();
        for cpu in 0..host.cpus() {
            let on = host.pin(cpu).unwrap();
            assert_eq!(
                Some(on.host_snapshot()),
                host.boot_snapshot(cpu),
                "CPU {cpu} did not end with its own host registers"
            );
        }
    }
}

#[test]
fn era3_host_registers_restored_per_cpu() {
    model::check(
        "era3/host_registers_restored_per_cpu",
        BOUND,
        50,
        model(
            || SmpHost::new(Era3Reference, features(), 2, SaveArea::CurrentCpu),
            true,
        ),
    );
}

#[test]
fn era3_survives_migration_without_put() {
    model::check(
        "era3/survives_migration_without_put",
        BOUND,
        50,
        model(
            || SmpHost::new(Era3Reference, features(), 2, SaveArea::CurrentCpu),
            false,
        ),
    );
}

#[test]
fn save_area_chosen_at_load_is_right_with_put_and_load() {
    model::check(
        "era3/save_area_chosen_at_load_with_put",
        BOUND,
        50,
        model(
            || SmpHost::new(Era3Reference, features(), 2, SaveArea::ChosenAtLoad),
            true,
        ),
    );
}

#[test]
fn save_area_chosen_at_load_is_caught() {
    model::expect_caught(
        "era3/save_area_chosen_at_load (broken)",
        BOUND,
        "cross-CPU restore",
        model(
            || SmpHost::new(Era3Reference, features(), 2, SaveArea::ChosenAtLoad),
            false,
        ),
    );
}

#[test]
fn host_state_shared_slot_is_caught() {
    model::expect_caught(
        "era3/host_state_shared_slot (broken)",
        BOUND,
        "cross-CPU restore",
        model(
            || {
                SmpHost::new(
                    HostStateSharedSlot::default(),
                    features(),
                    2,
                    SaveArea::CurrentCpu,
                )
            },
            true,
        ),
    );
}
