//! Loom model 3: KVM_SET_GUEST_DEBUG against KVM_RUN, through `hypdbg_hyp::smp::VcpuFd` (the
//! vcpu behind `vcpu->mutex`, as `kvm_vcpu_ioctl` takes it for every vcpu ioctl) calling the
//! real `Era3::kvm_arch_vcpu_ioctl_set_guest_debug` and the real era-3 load and world switch of
//! `Era3Reference`; synchronisation from `hypdbg_hyp::sync`, loom's here.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_set_guest_debug --target-dir
//! target-loom -- --nocapture`.
//!
//! A debugger thread replaces the vCPU's hardware breakpoints and watchpoints (old block to
//! new block, every implemented register different) while the vCPU thread runs twice
//! (KVM_RUN: load, one entry and exit, put) on a physical CPU.
//!
//! What the models prove, for every interleaving within the preemption bound:
//!
//! - `set_guest_debug_under_vcpu_mutex`: every entry runs the guest with the old block or the
//!   new one, whole, never a half-copied `external_debug_state`; once the ioctl has returned,
//!   the next entry uses the new block; the vCPU's block ends as the new one.
//! - Broken, `UnlockedVcpuFd` (the same ioctl and run without the vcpu mutex, the shared
//!   fields copied one by one through `Relaxed` atomics so that loom sees each field's copy):
//!   loom must find an entry with a half-copied block.
//!
//! Bounds: preemption bound 3, two threads, one physical CPU, 2 breakpoint and 2 watchpoint
//! register pairs.
//!
//! What loom sees and does not: every interleaving of the vcpu mutex, the CPU lock and the
//! per-CPU `host_data` lock, and spawn/join, with at most 3 preemptions; the correct code
//! relies on the vcpu mutex alone (lock = acquire, unlock = release: the ioctl's whole copy
//! happens-before the next run's load and entry). In the broken variant the field copies are
//! `Relaxed` atomics, so loom explores both where a copy is interrupted and (within loom's
//! C11 subset: no load buffering, which could only add failures) which stored value each load
//! may read; on the real thing the unsynchronised `memcpy` is a data race, undefined
//! behaviour that loom would not model at all. The test's `returned` flag is a `Release` store
//! after the ioctl returns, read `Acquire` by the vCPU thread before KVM_RUN.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hypdbg_hyp::KvmError;
use hypdbg_hyp::access::PhysRegs;
use hypdbg_hyp::context::KvmVcpu;
use hypdbg_hyp::flow::Era3Reference;
use hypdbg_hyp::smp::{SaveArea, SmpHost, VcpuFd, live_block};

#[path = "common/broken.rs"]
mod broken;
use broken::UnlockedVcpuFd;
use hypdbg_hyp::sync::{Arc, AtomicBool, Ordering, thread};
use hypdbg_model::DebugFeatures;
use hypdbg_model::sync::model;
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebug, KvmGuestDebugArch};

/// The preemption bound of every model here.
const BOUND: usize = 3;

type Host = SmpHost<Era3Reference>;

fn features() -> DebugFeatures {
    DebugFeatures::from_counts(2, 2, 1).unwrap()
}

/// The debugger's old (`which == 0`) and new (`1`) blocks: every implemented register differs.
fn block(which: u64) -> KvmGuestDebugArch {
    let mut a = KvmGuestDebugArch::default();
    for n in 0..2 {
        let base = 0x4000_0000 + which * 0x10_0000 + (n as u64) * 0x10;
        a.dbg_bcr[n] = 0x1e5 | (which << 1);
        a.dbg_bvr[n] = base;
        a.dbg_wcr[n] = 0x1fe7 | (which << 4);
        a.dbg_wvr[n] = base + 0x800;
    }
    a
}

fn guest_debug(which: u64) -> KvmGuestDebug {
    KvmGuestDebug {
        control: (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits(),
        pad: 0,
        arch: block(which),
    }
}

/// The two ioctls, with or without the vcpu mutex.
trait Fd: Send + Sync + 'static {
    fn set_guest_debug(&self, host: &Host, dbg: &KvmGuestDebug) -> Result<(), KvmError>;
    fn run_once(&self, host: &Host, cpu: usize) -> Result<KvmGuestDebugArch, KvmError>;
}

impl Fd for VcpuFd {
    fn set_guest_debug(&self, host: &Host, dbg: &KvmGuestDebug) -> Result<(), KvmError> {
        VcpuFd::set_guest_debug(self, host, dbg)
    }
    fn run_once(&self, host: &Host, cpu: usize) -> Result<KvmGuestDebugArch, KvmError> {
        self.run(host, cpu, |regs: &mut PhysRegs| live_block(regs))
    }
}

impl Fd for UnlockedVcpuFd {
    fn set_guest_debug(&self, host: &Host, dbg: &KvmGuestDebug) -> Result<(), KvmError> {
        UnlockedVcpuFd::set_guest_debug(self, host, dbg)
    }
    fn run_once(&self, host: &Host, cpu: usize) -> Result<KvmGuestDebugArch, KvmError> {
        self.run(host, cpu, |regs: &mut PhysRegs| live_block(regs))
    }
}

fn model<D: Fd>(make: fn() -> D) -> impl Fn() + Sync + Send + 'static {
    move || {
        let host = Arc::new(SmpHost::new(
            Era3Reference,
            features(),
            1,
            SaveArea::CurrentCpu,
        ));
        let fd = Arc::new(make());
        fd.set_guest_debug(&host, &guest_debug(0)).unwrap();
        let returned = Arc::new(AtomicBool::new(false));
        let debugger = {
            let (host, fd, returned) = (host.clone(), fd.clone(), returned.clone());
            thread::spawn(move || {
                fd.set_guest_debug(&host, &guest_debug(1)).unwrap();
                returned.store(true, Ordering::Release);
            })
        };
        let (old, new) = (block(0), block(1));
        for run in 0..2 {
            let had_returned = returned.load(Ordering::Acquire);
            let live = fd.run_once(&host, 0).unwrap();
            assert!(
                live == old || live == new,
                "entry {run} ran with a half-copied external_debug_state: {live:x?}"
            );
            if had_returned {
                assert_eq!(
                    live, new,
                    "entry {run} after KVM_SET_GUEST_DEBUG returned ran the old block"
                );
            }
        }
        debugger.join().unwrap();
        assert_eq!(fd.run_once(&host, 0).unwrap(), new);
    }
}

#[test]
fn set_guest_debug_under_vcpu_mutex() {
    model::check(
        "set_guest_debug/under_vcpu_mutex",
        BOUND,
        20,
        model(|| VcpuFd::new(KvmVcpu::new(0))),
    );
}

#[test]
fn set_guest_debug_without_vcpu_mutex_is_caught() {
    model::expect_caught(
        "set_guest_debug/without_vcpu_mutex (broken)",
        BOUND,
        "half-copied",
        model(|| UnlockedVcpuFd::new(0, &features())),
    );
}
