//! The hardware pool: capacity from the capabilities, no stale slot ever handed to KVM,
//! inserts that do not fit change nothing, removal by exact request; random operation
//! sequences checked against a reference list and the model's matcher.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hypdbg_host::{DebugVcpu, Errno, HwDebug, HwDebugError, WatchAccess, WatchRequest};
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_model::matching::{DataAccess, MatchEnv, MatchResult};
use hypdbg_model::uapi::{GuestDebugControl, KvmGuestDebugArch};
use hypdbg_model::{DebugFeatures, El};
use proptest::prelude::*;

#[test]
fn capacity_comes_from_the_capabilities() {
    for (profile, bps, wps) in [("cortex-a57", 6, 4), ("min", 2, 2), ("max", 16, 16)] {
        let mut vm = vm("era3", profile);
        let v = VmVcpu::new(&mut vm, 0).unwrap();
        let hw = HwDebug::from_vcpu(&v).unwrap();
        assert_eq!(
            (hw.max_breakpoints(), hw.max_watchpoints()),
            (bps, wps),
            "{profile}"
        );
        assert_eq!(
            v.check_extension(hypdbg_model::uapi::KVM_CAP_GUEST_DEBUG_HW_BPS),
            bps as i64
        );
    }
}

#[test]
fn remove_all_then_insert_leaves_no_stale_slot() {
    let mut hw = HwDebug::new(6, 4).unwrap();
    for i in 0..6 {
        hw.insert_breakpoint(0x1000 + 4 * i).unwrap();
    }
    hw.insert_watchpoint(WatchRequest::new(0x8001, 28, WatchAccess::Access))
        .unwrap();
    assert_eq!(hw.used(), (6, 4));
    hw.remove_all();
    assert_eq!(hw.arch(), KvmGuestDebugArch::default());
    assert_eq!(hw.guest_debug(false, false).control, 0);
    hw.insert_breakpoint(0x2000).unwrap();
    hw.insert_watchpoint(WatchRequest::new(0x9000, 4, WatchAccess::Read))
        .unwrap();
    let a = hw.arch();
    assert_eq!((a.dbg_bcr[0], a.dbg_bvr[0]), (0x1e7, 0x2000));
    assert!(
        a.dbg_bcr[1..]
            .iter()
            .chain(&a.dbg_bvr[1..])
            .all(|&r| r == 0),
        "{a:x?}"
    );
    assert!(
        a.dbg_wcr[1..]
            .iter()
            .chain(&a.dbg_wvr[1..])
            .all(|&r| r == 0),
        "{a:x?}"
    );
    let dbg = hw.guest_debug(false, false);
    assert_eq!(
        dbg.control,
        (GuestDebugControl::ENABLE | GuestDebugControl::USE_HW).bits()
    );
    assert_eq!(dbg.arch, a);
}

#[test]
fn capacity_exhaustion_changes_nothing() {
    let mut hw = HwDebug::new(2, 2).unwrap();
    hw.insert_breakpoint(0x1000).unwrap();
    hw.insert_breakpoint(0x1004).unwrap();
    hw.insert_watchpoint(WatchRequest::new(0x8000, 8, WatchAccess::Write))
        .unwrap();
    let before = hw.clone();
    let e = hw.insert_breakpoint(0x1008).unwrap_err();
    assert_eq!(e.errno(), Errno::Enobufs);
    // Needs 2 slots (crosses a doubleword), 1 free.
    let e = hw
        .insert_watchpoint(WatchRequest::new(0x9006, 4, WatchAccess::Write))
        .unwrap_err();
    assert!(
        matches!(
            e,
            HwDebugError::NoWatchpointSlots {
                needed: 2,
                free: 1,
                capacity: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("nothing was inserted"), "{e}");
    // Too long for any pool: 2 GiB + 8 unaligned needs dozens of slots.
    let e = hw
        .insert_watchpoint(WatchRequest::new(
            0x1_0000_0004,
            1 << 31,
            WatchAccess::Write,
        ))
        .unwrap_err();
    assert_eq!(e.errno(), Errno::Enobufs);
    assert_eq!(hw, before);
    assert_eq!(hw.arch(), before.arch());
}

/// Whether the block fires for a 1-byte access at `b`.
fn block_fires(a: &KvmGuestDebugArch, b: u64, is_store: bool) -> bool {
    let f = DebugFeatures::from_counts(16, 16, 1).unwrap();
    let env = MatchEnv {
        features: &f,
        bcr: &a.dbg_bcr,
        bvr: &a.dbg_bvr,
        wcr: &a.dbg_wcr,
        wvr: &a.dbg_wvr,
        contextidr: 0,
    };
    let acc = DataAccess {
        address: b,
        size: 1,
        is_store,
        rmw: false,
        el: El::El1,
    };
    match env.check_watchpoint(&acc).0 {
        MatchResult::Hit { .. } => true,
        MatchResult::Miss => false,
        MatchResult::Unpredictable { rule } => panic!("{rule}"),
    }
}

#[derive(Clone, Debug)]
enum Op {
    InsBp(u64),
    RemBp(u64),
    InsWp(WatchRequest),
    RemWp(WatchRequest),
    RemoveAll,
}

fn op() -> impl Strategy<Value = Op> {
    let access = prop_oneof![
        Just(WatchAccess::Read),
        Just(WatchAccess::Write),
        Just(WatchAccess::Access)
    ];
    let req =
        (0x8000u64..0x8040, 1u64..24, access).prop_map(|(a, l, acc)| WatchRequest::new(a, l, acc));
    prop_oneof![
        (0u64..8).prop_map(|i| Op::InsBp(0x1000 + 4 * i)),
        (0u64..8).prop_map(|i| Op::RemBp(0x1000 + 4 * i)),
        req.clone().prop_map(Op::InsWp),
        req.prop_map(Op::RemWp),
        Just(Op::RemoveAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// After any sequence, the block handed to KVM holds exactly the live breakpoints and
    /// fires on exactly the live watch requests' bytes; failed operations change nothing.
    #[test]
    fn random_sequences_keep_the_block_exact(ops in proptest::collection::vec(op(), 1..40)) {
        let mut hw = HwDebug::new(4, 4).unwrap();
        let mut bps: Vec<u64> = Vec::new();
        let mut wps: Vec<WatchRequest> = Vec::new();
        for o in ops {
            let before = hw.clone();
            let ok = match o {
                Op::InsBp(a) => {
                    let r = hw.insert_breakpoint(a);
                    if r.is_ok() { bps.push(a); }
                    r.is_ok()
                }
                Op::RemBp(a) => {
                    let r = hw.remove_breakpoint(a);
                    if r.is_ok() { bps.retain(|&b| b != a); }
                    r.is_ok()
                }
                Op::InsWp(w) => {
                    let r = hw.insert_watchpoint(w);
                    if r.is_ok() { wps.push(w); }
                    r.is_ok()
                }
                Op::RemWp(w) => {
                    let r = hw.remove_watchpoint(w);
                    if r.is_ok() { wps.retain(|&x| x != w); }
                    r.is_ok()
                }
                Op::RemoveAll => { hw.remove_all(); bps.clear(); wps.clear(); true }
            };
            if !ok {
                prop_assert_eq!(&hw, &before);
            }
            let a = hw.arch();
            let mut live: Vec<u64> = (0..16).filter(|&n| a.dbg_bcr[n] & 1 != 0).map(|n| a.dbg_bvr[n]).collect();
            live.sort_unstable();
            let mut want = bps.clone();
            want.sort_unstable();
            prop_assert_eq!(live, want);
            for n in 0..16 {
                if a.dbg_bcr[n] == 0 { prop_assert_eq!(a.dbg_bvr[n], 0); }
                if a.dbg_wcr[n] == 0 { prop_assert_eq!(a.dbg_wvr[n], 0); }
            }
            for b in 0x7ff8u64..0x8060 {
                for is_store in [false, true] {
                    let want = wps.iter().any(|w| w.contains(b) && w.access.matches(is_store));
                    prop_assert_eq!(block_fires(&a, b, is_store), want, "byte {:#x} store {}", b, is_store);
                }
            }
            prop_assert_eq!(hw.watchpoints().len(), wps.len());
        }
    }
}
