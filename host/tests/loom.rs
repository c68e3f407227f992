//! Loom models of the SMP protocol (run with
//! `RUSTFLAGS="--cfg loom" cargo test -p hypdbg-host --test loom --release`): the shared pool
//! never hands out a torn set and an update that returned is seen by the next entry; the
//! naive register-by-register pool is caught tearing.
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hypdbg_host::sync::{Arc, AtomicBool, Ordering, thread};
use hypdbg_host::{HwDebug, NaivePool, SharedHwDebug};
use hypdbg_model::uapi::KvmGuestDebugArch;

fn two_breakpoints() -> KvmGuestDebugArch {
    let mut hw = HwDebug::new(2, 1).unwrap();
    hw.insert_breakpoint(0x1000).unwrap();
    hw.insert_breakpoint(0x2000).unwrap();
    hw.arch()
}

#[test]
fn shared_pool_is_never_torn_and_updates_are_seen() {
    loom::model(|| {
        let shared = SharedHwDebug::new(HwDebug::new(2, 1).unwrap(), 2);
        let returned = Arc::new(AtomicBool::new(false));
        let (s2, r2) = (shared.clone(), returned.clone());
        let vcpu = thread::spawn(move || {
            let seen_returned = r2.load(Ordering::Acquire);
            let e = s2.enter(0).unwrap();
            let a = e.published().arch;
            match e.generation() {
                0 => {
                    assert!(
                        !seen_returned,
                        "entered with the old set after the update returned"
                    );
                    assert_eq!(a, KvmGuestDebugArch::default());
                    assert!(
                        !r2.load(Ordering::Acquire),
                        "update returned while a vcpu ran the old set"
                    );
                }
                _ => assert_eq!(a, two_breakpoints()),
            }
        });
        shared
            .update(|hw| {
                hw.insert_breakpoint(0x1000)?;
                hw.insert_breakpoint(0x2000)?;
                Ok(())
            })
            .unwrap();
        returned.store(true, Ordering::Release);
        let e = shared.enter(1).unwrap();
        assert_eq!((e.generation(), e.published().arch), (1, two_breakpoints()));
        drop(e);
        vcpu.join().unwrap();
    });
}

#[test]
#[should_panic(expected = "torn")]
fn naive_pool_is_caught_tearing() {
    loom::model(|| {
        let pool = Arc::new(NaivePool::new(2, 0));
        let p2 = pool.clone();
        let vcpu = thread::spawn(move || {
            let a = p2.copy_hw_debug_data();
            assert!(
                a == KvmGuestDebugArch::default() || a == two_breakpoints(),
                "torn copy: {a:x?}"
            );
        });
        pool.publish(&two_breakpoints());
        vcpu.join().unwrap();
    });
}
