//! The watchpoint encoder fires on exactly the requested bytes (checked with the model's
//! matcher, AArch64.WatchpointMatch), in every direction, with the fewest slots (checked
//! against a dynamic programme over every possible slot for small ranges, and against the
//! canonical segment-tree cover for large ones).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hypdbg_host::encode::{MAX_WATCH_LEN, watch_slots_needed};
use hypdbg_host::{WatchAccess, WpSlot, encode_watchpoint};
use hypdbg_model::matching::{DataAccess, MatchEnv, MatchResult};
use hypdbg_model::{DebugFeatures, El};
use proptest::prelude::*;

/// Whether the bank holding just `slots` fires for a `size`-byte access at `addr`.
fn fires(slots: &[WpSlot], addr: u64, size: u8, is_store: bool, el: El) -> Option<u64> {
    let features = DebugFeatures::from_counts(16, 16, 1).unwrap();
    let wcr: Vec<u64> = slots.iter().map(|s| s.wcr).collect();
    let wvr: Vec<u64> = slots.iter().map(|s| s.wvr).collect();
    let env = MatchEnv {
        features: &features,
        bcr: &[],
        bvr: &[],
        wcr: &wcr,
        wvr: &wvr,
        contextidr: 0,
    };
    let access = DataAccess {
        address: addr,
        size,
        is_store,
        rmw: false,
        el,
    };
    match env.check_watchpoint(&access).0 {
        MatchResult::Hit { address } => Some(address),
        MatchResult::Miss => None,
        MatchResult::Unpredictable { rule } => panic!("CONSTRAINED UNPREDICTABLE slot: {rule}"),
    }
}

/// Probe one byte in both directions at EL1 and EL0.
fn check_byte(slots: &[WpSlot], addr: u64, len: u64, access: WatchAccess, b: u64) {
    let inside = b >= addr && b - addr < len;
    for is_store in [false, true] {
        let want = inside && access.matches(is_store);
        for el in [El::El1, El::El0] {
            let got = fires(slots, b, 1, is_store, el);
            assert_eq!(
                got,
                want.then_some(b),
                "{access} {addr:#x}+{len:#x}: byte {b:#x} store={is_store} {el}: slots {slots:x?}"
            );
        }
    }
}

/// Every byte from 16 below to 16 above the range (small ranges).
fn check_exact_small(addr: u64, len: u64, access: WatchAccess) {
    let slots = encode_watchpoint(addr, len, access).unwrap();
    for b in addr.saturating_sub(16)..addr + len + 16 {
        check_byte(&slots, addr, len, access, b);
    }
    // Wider accesses: an aligned doubleword fires iff it overlaps the range.
    for dw in (addr.saturating_sub(16) & !7..addr + len + 16).step_by(8) {
        let overlap = dw < addr + len && dw + 8 > addr;
        let got = fires(&slots, dw, 8, true, El::El1);
        let want = overlap && access.matches(true);
        assert_eq!(
            got.is_some(),
            want,
            "{access} {addr:#x}+{len:#x}: dword {dw:#x}"
        );
        if let Some(far) = got {
            assert_eq!(
                far,
                dw.max(addr),
                "reported address is the first watched byte"
            );
        }
    }
}

/// Boundaries of the range and of every slot, plus a sample (large ranges).
fn check_exact_large(addr: u64, len: u64, access: WatchAccess, samples: &[u64]) {
    let slots = encode_watchpoint(addr, len, access).unwrap();
    let last = addr + (len - 1);
    let mut probes = vec![
        addr.wrapping_sub(1),
        addr,
        addr + 1,
        last - 1,
        last,
        last.wrapping_add(1),
    ];
    for s in &slots {
        if let Some((lo, hi)) = s.watched() {
            probes.extend([lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)]);
        }
    }
    probes.extend(
        samples
            .iter()
            .map(|x| addr.wrapping_add(x % (len + 64)).wrapping_sub(32)),
    );
    for b in probes {
        check_byte(&slots, addr, len, access, b);
    }
}

#[test]
fn every_offset_and_length_up_to_64_is_exact_in_every_direction() {
    for off in 0..8u64 {
        for len in 1..=64u64 {
            for access in WatchAccess::ALL {
                check_exact_small(0x4_0000 + off, len, access);
            }
        }
    }
}

#[test]
fn high_half_addresses_are_exact() {
    for off in [0u64, 3, 7] {
        for len in [1u64, 5, 8, 9, 24, 64] {
            check_exact_small(0xffff_8000_0000_1000 + off, len, WatchAccess::Access);
        }
    }
}

#[test]
fn power_of_two_lengths_up_to_2gib_aligned_and_unaligned() {
    let samples: Vec<u64> = (0..32u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    for k in 0..=31u32 {
        let len = 1u64 << k;
        let aligned = 0x1_0000_0000u64; // aligned to 4 GiB
        for (addr, what) in [
            (aligned, "aligned"),
            (aligned + 4, "unaligned +4"),
            (aligned + 3, "odd"),
            (aligned + len / 2 + 8, "half"),
        ] {
            for access in WatchAccess::ALL {
                if len <= 64 {
                    check_exact_small(addr, len, access);
                } else {
                    check_exact_large(addr, len, access, &samples);
                }
            }
            let n = encode_watchpoint(addr, len, WatchAccess::Write)
                .unwrap()
                .len();
            if what == "aligned" {
                assert_eq!(n, 1, "aligned 2^{k} is one slot");
            }
        }
    }
    // Aligned power of two >= 8: MASK with BAS = 0xff.
    for k in 3..=31u32 {
        let s = encode_watchpoint(1 << 31, 1 << k, WatchAccess::Read).unwrap();
        let mask = (s[0].wcr >> 24) & 0x1f;
        let bas = (s[0].wcr >> 5) & 0xff;
        assert_eq!(bas, 0xff);
        assert_eq!(
            mask,
            if k == 3 { 0 } else { u64::from(k) },
            "2^{k}: MASK (8 bytes is one doubleword: BAS)"
        );
    }
}

// ---- minimality ----

/// Every single slot that covers `p` and lies inside `[a, b)`: BAS runs of p's doubleword
/// and aligned 2^k blocks (k = 3..=31). Returns their exclusive ends.
fn candidate_ends(a: u64, b: u64, p: u64) -> Vec<u64> {
    let mut ends = Vec::new();
    let dw = p & !7;
    for s in dw.max(a)..=p {
        for e in p + 1..=(dw + 8).min(b) {
            if s <= p {
                ends.push(e);
            }
        }
    }
    for k in 3..=31u32 {
        let size = 1u64 << k;
        let base = p & !(size - 1);
        if base >= a && base + size <= b {
            ends.push(base + size);
        }
    }
    ends
}

/// The fewest slots whose union is exactly `[a, b)`, overlaps allowed: cover the first
/// uncovered byte with any slot inside the range that contains it.
fn dp_min(a: u64, b: u64) -> usize {
    let n = (b - a) as usize;
    let mut best = vec![usize::MAX; n + 1];
    best[n] = 0;
    for i in (0..n).rev() {
        let p = a + i as u64;
        for e in candidate_ends(a, b, p) {
            let j = (e - a) as usize;
            if best[j] != usize::MAX {
                best[i] = best[i].min(1 + best[j]);
            }
        }
    }
    best[0]
}

#[test]
fn fewest_slots_matches_a_dp_over_every_possible_slot() {
    for off in 0..64u64 {
        for len in 1..=160u64 {
            let a = 0x10_0000 + off;
            assert_eq!(
                watch_slots_needed(a, len).unwrap(),
                dp_min(a, a + len),
                "{a:#x}+{len}"
            );
        }
    }
}

/// The canonical segment-tree cover of `[lo, hi)` by aligned power-of-two blocks of at most
/// 2^31 bytes and at least 8, plus the sub-doubleword head and tail.
fn segment_tree_count(lo: u128, hi: u128) -> usize {
    fn rec(lo: u128, hi: u128, node: u128, size: u128) -> usize {
        let end = node + size;
        if end <= lo || node >= hi {
            0
        } else if lo <= node && end <= hi && size <= 1 << 31 {
            1
        } else {
            rec(lo, hi, node, size / 2) + rec(lo, hi, node + size / 2, size / 2)
        }
    }
    let head_end = (lo + 7) & !7;
    let tail_start = hi & !7;
    if lo >> 3 == (hi - 1) >> 3 {
        return 1;
    }
    usize::from(lo != head_end)
        + usize::from(hi != tail_start)
        + rec(head_end, tail_start, 0, 1 << 64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_ranges_are_exact_and_minimal(
        addr in prop_oneof![0u64..(1 << 40), (0xffff_0000_0000_0000u64..=0xffff_ffff_0000_0000)],
        len in prop_oneof![1u64..=256, 1u64..=MAX_WATCH_LEN],
        access in prop_oneof![Just(WatchAccess::Read), Just(WatchAccess::Write), Just(WatchAccess::Access)],
        samples in proptest::collection::vec(any::<u64>(), 16),
    ) {
        let n = watch_slots_needed(addr, len).unwrap();
        prop_assert_eq!(n, segment_tree_count(u128::from(addr), u128::from(addr) + u128::from(len)));
        if len <= 256 {
            prop_assert_eq!(n, dp_min(addr, addr + len));
            check_exact_small(addr, len, access);
        } else {
            check_exact_large(addr, len, access, &samples);
        }
    }
}
