//! Loom model 1, the VMM side: one debugger, many vCPUs, through `hypdbg_host::SharedHwDebug`
//! (the real code, whose synchronisation types come from `hypdbg_hyp::sync`: loom's here).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_vmm --target-dir target-loom
//! -- --nocapture` (prints each model's explored-interleavings count and time).
//!
//! What the models prove, for every interleaving within the preemption bound:
//!
//! - `one_debugger_two_vcpus` (3 threads: a debugger publishing a new set of two breakpoints
//!   while two vCPU threads each enter, and re-enter when kicked):
//!   - no vCPU enters with a torn set: what it gets is the old set or the new one, whole;
//!   - once `update` has returned, a vCPU's next entry uses the new set, and `update` never
//!     returns while a vCPU is still in the guest with the old one (the kick waits for it);
//!   - a kicked vCPU re-enters with the new set.
//! - `two_debuggers_never_interleave` (3 threads: two debuggers each adding a breakpoint, one
//!   vCPU entering once): updates are serialised (an update never publishes while an earlier
//!   one still waits for a vCPU to leave the older set, watched from inside the update), get
//!   distinct generations 1 and 2, lose no edit, and the vCPU sees generation g with exactly
//!   g edits applied. (`SharedHwDebug` has no unserialised variant to run as a broken one;
//!   checked by hand: with its `updaters` lock removed this model fails with "interleaved
//!   updates" within the same bound.)
//! - Broken, `NaivePool` (below, in this test only) (QEMU's register-by-register copy with no lock and no
//!   kick), same shape as the first model: loom must find a torn copy
//!   (`naive_pool_is_caught_tearing`) and a vCPU still running the old set after the
//!   debugger's publication returned (`naive_pool_is_caught_running_stale`). Both are asserted
//!   to fail; a model that stopped exploring would not.
//!
//! Bounds: preemption bound 3, three threads, two breakpoint pairs (of 2 BRPs/2 WRPs).
//!
//! What loom sees and does not: every interleaving of the threads' synchronisation operations
//! (mutex, condvar, atomics, spawn/join) with at most 3 preemptions, and, for atomics, the
//! subset of C11 weak-memory behaviours loom models: a load may read any store that coherence
//! and happens-before allow, but loom does not explore load buffering (a `Relaxed` load
//! reordered after a later store of the same thread), and it treats `SeqCst` accesses as
//! `AcqRel` (weaker: false alarms possible, none hidden). `SharedHwDebug` relies only on its
//! mutexes and condvar (lock = acquire, unlock = release) for correctness, which loom models
//! exactly; its `generation` atomic (`Release` store after publication, `Acquire` load in
//! `Entry::kicked`) is a hint for leaving early. The test's own `returned` flag is a `Release`
//! store after `update` returns, read `Acquire` by the vCPU, so "the update had returned" is a
//! happens-before fact; the `in_guest` monitor's `SeqCst` accesses need no more than the
//! happens-before the update's locks already give. `NaivePool` is all `Relaxed` on purpose:
//! its bugs are interleavings, which loom finds whatever it does not model of `Relaxed`.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hypdbg_host::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering, thread};
use hypdbg_host::{HwDebug, SharedHwDebug};
use hypdbg_model::sync::model;
use hypdbg_model::uapi::KvmGuestDebugArch;

/// The preemption bound of every model here.
const BOUND: usize = 3;

const A: u64 = 0x1000;
const B: u64 = 0x2000;

/// The pool of a CPU with 2 breakpoints and 2 watchpoints, breakpoints at `addrs` in order.
fn pool(addrs: &[u64]) -> HwDebug {
    let mut hw = HwDebug::new(2, 2).unwrap();
    for a in addrs {
        hw.insert_breakpoint(*a).unwrap();
    }
    hw
}

fn set(addrs: &[u64]) -> KvmGuestDebugArch {
    pool(addrs).arch()
}

/// One vCPU thread: enter; check the set; if kicked, leave and enter again.
fn vcpu(shared: &SharedHwDebug, returned: &AtomicBool, i: usize) {
    let (old, new) = (set(&[]), set(&[A, B]));
    let had_returned = returned.load(Ordering::Acquire);
    let e = shared.enter(i).unwrap();
    let arch = e.published().arch;
    assert!(
        arch == old || arch == new,
        "vCPU {i} entered with a torn set: {arch:x?}"
    );
    if e.generation() == 0 {
        assert!(
            !had_returned,
            "vCPU {i} entered with the old set after the update returned"
        );
        assert_eq!(arch, old);
        // In the guest with the old set: the update cannot have returned.
        assert!(
            !returned.load(Ordering::Acquire),
            "the update returned while vCPU {i} ran the old set"
        );
        if e.kicked() {
            drop(e);
            let again = shared.enter(i).unwrap();
            assert_eq!(
                (again.generation(), again.published().arch),
                (1, new),
                "kicked vCPU {i} re-entered with the old set"
            );
        }
    } else {
        assert_eq!((e.generation(), arch), (1, new));
    }
}

#[test]
fn one_debugger_two_vcpus() {
    model::check("vmm/one_debugger_two_vcpus", BOUND, 1000, || {
        let shared = SharedHwDebug::new(pool(&[]), 2);
        let returned = Arc::new(AtomicBool::new(false));
        let vcpus: Vec<_> = (0..2)
            .map(|i| {
                let (s, r) = (shared.clone(), returned.clone());
                thread::spawn(move || vcpu(&s, &r, i))
            })
            .collect();
        let (generation, ()) = shared
            .update(|hw| {
                hw.insert_breakpoint(A)?;
                hw.insert_breakpoint(B)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(generation, 1);
        returned.store(true, Ordering::Release);
        for v in vcpus {
            v.join().unwrap();
        }
    });
}

#[test]
fn two_debuggers_never_interleave() {
    model::check("vmm/two_debuggers_never_interleave", BOUND, 500, || {
        let shared = SharedHwDebug::new(pool(&[]), 1);
        // 0: the vCPU is out of the guest; g + 1: in the guest with generation g.
        let in_guest = Arc::new(AtomicUsize::new(0));
        let debugger = |addr: u64| {
            let (s, watch) = (shared.clone(), in_guest.clone());
            move || {
                let (generation, before) = s
                    .update(|hw| {
                        // Runs at publication time, under the update's locks: the pool holds
                        // one breakpoint per earlier update, so this is the current generation.
                        let current = hw.breakpoints().count();
                        let v = watch.load(Ordering::SeqCst);
                        assert!(
                            v == 0 || v > current,
                            "interleaved updates: publishing over generation {current} while the vCPU is still in the guest with generation {}",
                            v - 1
                        );
                        hw.insert_breakpoint(addr)?;
                        Ok(current)
                    })
                    .unwrap();
                assert_eq!(
                    generation,
                    before as u64 + 1,
                    "generation skipped or reused"
                );
                generation
            }
        };
        let d1 = thread::spawn(debugger(A));
        let d2 = thread::spawn(debugger(B));
        {
            let e = shared.enter(0).unwrap();
            in_guest.store(e.generation() as usize + 1, Ordering::SeqCst);
            let arch = e.published().arch;
            let ok = match e.generation() {
                0 => arch == set(&[]),
                1 => arch == set(&[A]) || arch == set(&[B]),
                2 => arch == set(&[A, B]) || arch == set(&[B, A]),
                _ => false,
            };
            assert!(
                ok,
                "vCPU entered generation {} with {arch:x?}",
                e.generation()
            );
            in_guest.store(0, Ordering::SeqCst);
        }
        let mut gens = [d1.join().unwrap(), d2.join().unwrap()];
        gens.sort_unstable();
        assert_eq!(gens, [1, 2], "updates did not get distinct generations");
        let last = shared.snapshot();
        assert_eq!(last.generation, 2);
        assert!(
            last.arch == set(&[A, B]) || last.arch == set(&[B, A]),
            "an update was lost: {:x?}",
            last.arch
        );
    });
}

/// The broken design, for model checking to catch: QEMU's global arrays copied register by
/// register by each vcpu thread (`kvm_arm_copy_hw_debug_data`) while the debugger thread
/// rewrites them in place, with no lock and no kick. Every register is a separate
/// `AtomicU64` accessed `Relaxed`, so the race is well defined in Rust and
/// visible to loom as interleavings: a copy can be torn (part old set, part new), and a vcpu
/// can enter with the old set after the debugger's update returned.
struct NaivePool {
    bcr: Vec<AtomicU64>,
    bvr: Vec<AtomicU64>,
    wcr: Vec<AtomicU64>,
    wvr: Vec<AtomicU64>,
}

impl NaivePool {
    /// A pool of `bps` breakpoint and `wps` watchpoint register pairs (each at most 16), all
    /// zero.
    fn new(bps: usize, wps: usize) -> Self {
        let bank = |n: usize| {
            (0..n.min(16))
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>()
        };
        NaivePool {
            bcr: bank(bps),
            bvr: bank(bps),
            wcr: bank(wps),
            wvr: bank(wps),
        }
    }

    /// Debugger thread: overwrite the registers one by one (value, then control).
    fn publish(&self, arch: &KvmGuestDebugArch) {
        for (n, (c, v)) in self.bcr.iter().zip(&self.bvr).enumerate() {
            v.store(arch.dbg_bvr[n], Ordering::Relaxed);
            c.store(arch.dbg_bcr[n], Ordering::Relaxed);
        }
        for (n, (c, v)) in self.wcr.iter().zip(&self.wvr).enumerate() {
            v.store(arch.dbg_wvr[n], Ordering::Relaxed);
            c.store(arch.dbg_wcr[n], Ordering::Relaxed);
        }
    }

    /// Vcpu thread: `kvm_arm_copy_hw_debug_data`, zero the block then copy the registers
    /// one by one.
    fn copy_hw_debug_data(&self) -> KvmGuestDebugArch {
        let mut a = KvmGuestDebugArch::default();
        for (n, (c, v)) in self.bcr.iter().zip(&self.bvr).enumerate() {
            a.dbg_bcr[n] = c.load(Ordering::Relaxed);
            a.dbg_bvr[n] = v.load(Ordering::Relaxed);
        }
        for (n, (c, v)) in self.wcr.iter().zip(&self.wvr).enumerate() {
            a.dbg_wcr[n] = c.load(Ordering::Relaxed);
            a.dbg_wvr[n] = v.load(Ordering::Relaxed);
        }
        a
    }
}

/// The broken pool's vCPU: copy the registers one by one and run with them.
fn naive_vcpu(pool: &NaivePool, returned: &AtomicBool, check_torn: bool, i: usize) {
    let (old, new) = (set(&[]), set(&[A, B]));
    let a = pool.copy_hw_debug_data();
    if check_torn {
        assert!(a == old || a == new, "vCPU {i}: torn copy {a:x?}");
    } else if a == old {
        // Nothing kicks this vCPU: it may still be running the old set.
        assert!(
            !returned.load(Ordering::Acquire),
            "vCPU {i} still ran the old set after the update returned"
        );
    }
}

fn naive_model(check_torn: bool) -> impl Fn() + Sync + Send + 'static {
    move || {
        let pool = Arc::new(NaivePool::new(2, 2));
        let returned = Arc::new(AtomicBool::new(false));
        let vcpus: Vec<_> = (0..2)
            .map(|i| {
                let (p, r) = (pool.clone(), returned.clone());
                thread::spawn(move || naive_vcpu(&p, &r, check_torn, i))
            })
            .collect();
        pool.publish(&set(&[A, B]));
        returned.store(true, Ordering::Release);
        for v in vcpus {
            v.join().unwrap();
        }
    }
}

#[test]
fn naive_pool_is_caught_tearing() {
    model::expect_caught(
        "vmm/naive_pool_tearing (broken)",
        BOUND,
        "torn copy",
        naive_model(true),
    );
}

#[test]
fn naive_pool_is_caught_running_stale() {
    model::expect_caught(
        "vmm/naive_pool_stale (broken)",
        BOUND,
        "still ran the old set after the update returned",
        naive_model(false),
    );
}
