use super::*;
use crate::wcr::encode_range;
use proptest::prelude::*;

fn a57() -> DebugFeatures {
    DebugFeatures::new(0x1030_5106).unwrap()
}

fn bp(bcr: u64, bvr: u64, pc: u64, el: El) -> MatchResult {
    match_single_breakpoint(&a57(), 0, bcr, bvr, 0, pc, el)
}

fn wp(wcr: u64, wvr: u64, addr: u64, size: u8, store: bool, el: El) -> MatchResult {
    let a = DataAccess {
        address: addr,
        size,
        is_store: store,
        rmw: false,
        el,
    };
    match_single_watchpoint(&a57(), 0, wcr, wvr, &a)
}

fn is_cu(r: MatchResult, name: &str) -> bool {
    matches!(r, MatchResult::Unpredictable { rule } if rule.arm_name() == name)
}

#[test]
fn breakpoint_address_match() {
    assert_eq!(
        bp(0x1e7, 0x1000, 0x1000, El::El1),
        MatchResult::Hit { address: 0x1000 }
    );
    assert_eq!(bp(0x1e7, 0x1000, 0x1004, El::El1), MatchResult::Miss);
    assert_eq!(
        bp(0x1e6, 0x1000, 0x1000, El::El1),
        MatchResult::Miss,
        "E = 0"
    );
    // RES0 bits in [12:9] are tolerated (debug-exceptions.c writes 0x1fe3).
    assert!(bp(0x1fe3, 0x1000, 0x1000, El::El1).is_hit());
    // DBGBVR bits [1:0] are ignored.
    assert!(bp(0x1e7, 0x1003, 0x1000, El::El1).is_hit());
    // Kernel addresses, sign extended.
    assert!(bp(0x1e7, 0xffff_8000_0000_1000, 0xffff_8000_0000_1000, El::El1).is_hit());
}

#[test]
fn breakpoint_pmc_el0_el1() {
    for (pmc, el1, el0) in [(1u64, true, false), (2, false, true), (3, true, true)] {
        let bcr = 1 | pmc << 1 | 0xf << 5;
        assert_eq!(bp(bcr, 0x40, 0x40, El::El1).is_hit(), el1, "pmc {pmc} EL1");
        assert_eq!(bp(bcr, 0x40, 0x40, El::El0).is_hit(), el0, "pmc {pmc} EL0");
    }
    // PMC = 0b00 with HMC = 0 is the AArch32-only encoding: no AArch64 match.
    assert_eq!(bp(1 | 0xf << 5, 0x40, 0x40, El::El1), MatchResult::Miss);
}

#[test]
fn breakpoint_unpredictable_cases() {
    // Masked (not sign-extended) DBGBVR for a kernel address.
    let r = bp(
        0x1e7,
        0x0000_8000_0000_1000 | 1 << 48,
        0xffff_8000_0000_1000,
        El::El1,
    );
    assert!(is_cu(r, "Unpredictable_DBGxVR_RESS"), "{r:?}");
    // Non-sign-extended but different address: neither choice matches.
    assert_eq!(
        bp(0x1e7, 0x1_0000_0000_2000, 0xffff_0000_0000_1000, El::El1),
        MatchResult::Miss
    );
    // BAS = 0b1100: second halfword only.
    assert!(is_cu(
        bp(0x187, 0x40, 0x40, El::El1),
        "Unpredictable_BPMATCHHALF"
    ));
    assert!(
        bp(0x067, 0x40, 0x40, El::El1).is_hit(),
        "BAS = 0b0011 matches an A64 instruction"
    );
    assert!(is_cu(
        bp(0x027, 0x40, 0x40, El::El1),
        "Unpredictable_RESBPBAS"
    ));
    assert!(is_cu(
        bp(0x007, 0x40, 0x40, El::El1),
        "Unpredictable_RESBPBAS"
    ));
    // Context type on a non-context-aware unit, mismatch and VMID types.
    assert!(is_cu(
        bp(0x20_01e7, 0x40, 0x40, El::El1),
        "Unpredictable_RESBPTYPE"
    ));
    assert!(is_cu(
        bp(0x40_01e7, 0x40, 0x40, El::El1),
        "Unpredictable_RESBPTYPE"
    ));
    assert!(is_cu(
        bp(0x80_01e7, 0x40, 0x40, El::El1),
        "Unpredictable_RESBPTYPE"
    ));
    // Reserved state combination: HMC = 1, SSC = 0b00, PMC = 0b00.
    assert!(is_cu(
        bp(0x2000 | 0x1e1, 0x40, 0x40, El::El1),
        "Unpredictable_RESERVEDSTATEMATCH"
    ));
    // SSC = 0b10 (Secure only) never matches a Non-secure guest.
    assert_eq!(bp(0x8000 | 0x1e7, 0x40, 0x40, El::El1), MatchResult::Miss);
    // A linked address breakpoint whose LBN is not context-aware.
    assert!(is_cu(
        bp(0x10_01e7 | 1 << 16, 0x40, 0x40, El::El1),
        "Unpredictable_BPNOTCTXCMP"
    ));
}

fn linked_env(bcr0: u64, bcr5: u64, bvr5: u64, ctx: u64) -> [u64; 4] {
    [bcr0, bcr5, bvr5, ctx]
}

#[test]
fn linked_context_breakpoints() {
    let f = a57();
    let run = |[bcr0, bcr5, bvr5, ctx]: [u64; 4], pc| {
        let bcr = [bcr0, 0, 0, 0, 0, bcr5];
        let bvr = [0x2000, 0, 0, 0, 0, bvr5];
        let env = MatchEnv {
            features: &f,
            bcr: &bcr,
            bvr: &bvr,
            wcr: &[],
            wvr: &[],
            contextidr: ctx,
        };
        env.check_breakpoint(pc, El::El1)
    };
    // debug-exceptions.c case 11: ctx bp 5 (BT = 0b0011, BVR = 0xabcdef), address bp 0
    // linked to it (BT = 0b0001, LBN = 5), CONTEXTIDR_EL1 = 0xabcdef.
    let good = linked_env(0x10_1fe3 | 5 << 16, 0x30_1fe3, 0xabcdef, 0xabcdef);
    assert_eq!(
        run(good, 0x2000),
        (MatchResult::Hit { address: 0x2000 }, vec![0])
    );
    assert_eq!(run(good, 0x2004).0, MatchResult::Miss);
    // Wrong CONTEXTIDR: no match.
    let mut other = good;
    other[3] = 0x1234;
    assert_eq!(run(other, 0x2000).0, MatchResult::Miss);
    // The linked context unit alone never fires, even for its own context.
    assert_eq!(
        run(linked_env(0, 0x30_1fe3, 0xabcdef, 0xabcdef), 0x2000).0,
        MatchResult::Miss
    );
    // An unlinked context breakpoint fires on any PC in that context.
    assert!(
        run(linked_env(0, 0x20_1fe3, 0xabcdef, 0xabcdef), 0x9999_0000)
            .0
            .is_hit()
    );
    // Linked to a disabled context unit: disabled (architected, not unpredictable).
    assert_eq!(
        run(linked_env(good[0], 0x30_1fe2, 0xabcdef, 0xabcdef), 0x2000).0,
        MatchResult::Miss
    );
    // Linked to an unlinked-context unit: not a linking target (unit 5 fires on its own).
    assert_eq!(
        run(linked_env(good[0], 0x20_1fe3, 0xabcdef, 0xabcdef), 0x2000).1,
        vec![5]
    );
}

#[test]
fn watchpoint_bas_every_offset_and_length() {
    for off in 0..8u64 {
        for len in 1..=(8 - off) {
            let bas = ((1u64 << len) - 1) << off;
            let wcr = 1 | 1 << 1 | 3 << 3 | bas << 5;
            for byte in 0..16u64 {
                let want = byte >= off && byte < off + len;
                let r = wp(wcr, 0x100, 0x100 + byte, 1, true, El::El1);
                assert_eq!(r.is_hit(), want, "off {off} len {len} byte {byte}");
                if want {
                    assert_eq!(
                        r,
                        MatchResult::Hit {
                            address: 0x100 + byte
                        }
                    );
                } else {
                    assert_eq!(r, MatchResult::Miss);
                }
            }
        }
    }
}

#[test]
fn watchpoint_wide_access_reports_first_watched_byte() {
    // BAS = byte 5 only; an 8-byte store at the doubleword hits at byte 5.
    let wcr = 1 | 1 << 1 | 3 << 3 | 0x20 << 5;
    assert_eq!(
        wp(wcr, 0x100, 0x100, 8, true, El::El1),
        MatchResult::Hit { address: 0x105 }
    );
    // A 16-byte STP starting below the doubleword.
    assert_eq!(
        wp(wcr, 0x100, 0xf8, 16, true, El::El1),
        MatchResult::Hit { address: 0x105 }
    );
    assert_eq!(wp(wcr, 0x100, 0x106, 2, true, El::El1), MatchResult::Miss);
    // A 64-byte DC ZVA-sized access.
    assert_eq!(
        wp(wcr, 0x100, 0x100, 64, true, El::El1),
        MatchResult::Hit { address: 0x105 }
    );
    assert_eq!(wp(wcr, 0x100, 0xc0, 64, true, El::El1), MatchResult::Miss);
}

#[test]
fn watchpoint_lsc_and_pac() {
    let w = |lsc: u64, pac: u64| 1 | pac << 1 | lsc << 3 | 0xff << 5;
    assert!(wp(w(1, 3), 0x100, 0x100, 4, false, El::El1).is_hit());
    assert!(!wp(w(1, 3), 0x100, 0x100, 4, true, El::El1).is_hit());
    assert!(wp(w(2, 3), 0x100, 0x100, 4, true, El::El1).is_hit());
    assert!(!wp(w(2, 3), 0x100, 0x100, 4, false, El::El1).is_hit());
    assert_eq!(
        wp(w(0, 3), 0x100, 0x100, 4, true, El::El1),
        MatchResult::Miss,
        "LSC 00 never fires"
    );
    assert!(wp(w(3, 1), 0x100, 0x100, 1, true, El::El1).is_hit());
    assert!(!wp(w(3, 1), 0x100, 0x100, 1, true, El::El0).is_hit());
    assert!(wp(w(3, 2), 0x100, 0x100, 1, true, El::El0).is_hit());
    assert!(!wp(w(3, 2), 0x100, 0x100, 1, true, El::El1).is_hit());
    assert!(is_cu(
        wp(w(3, 0), 0x100, 0x100, 1, true, El::El1),
        "Unpredictable_RESERVEDSTATEMATCH"
    ));
}

#[test]
fn watchpoint_mask_3_and_31() {
    let m = |mask: u64| 1 | 3 << 1 | 3 << 3 | 0xff << 5 | mask << 24;
    assert!(wp(m(3), 0x1000, 0x1007, 1, false, El::El1).is_hit());
    assert!(!wp(m(3), 0x1000, 0x1008, 1, false, El::El1).is_hit());
    assert!(!wp(m(3), 0x1000, 0xfff, 1, false, El::El1).is_hit());
    let base = 0x8000_0000u64;
    assert!(wp(m(31), base, base, 1, false, El::El1).is_hit());
    assert!(wp(m(31), base, base + 0x7fff_ffff, 1, false, El::El1).is_hit());
    assert!(!wp(m(31), base, base + 0x8000_0000, 1, false, El::El1).is_hit());
    assert!(!wp(m(31), base, base - 1, 1, false, El::El1).is_hit());
}

#[test]
fn watchpoint_unpredictable_cases() {
    let w = |bas: u64, mask: u64| 1 | 3 << 1 | 3 << 3 | bas << 5 | mask << 24;
    assert!(is_cu(
        wp(w(0x5, 0), 0x100, 0x100, 1, true, El::El1),
        "Unpredictable_WPBASCONTIGUOUS"
    ));
    assert!(is_cu(
        wp(w(0x0f, 4), 0x100, 0x100, 1, true, El::El1),
        "Unpredictable_WPMASKANDBAS"
    ));
    for mask in [1, 2] {
        assert!(is_cu(
            wp(w(0xff, mask), 0x100, 0x100, 1, true, El::El1),
            "Unpredictable_RESWPMASK"
        ));
    }
    // MASK with non-zero DBGWVR bits below it.
    assert!(is_cu(
        wp(w(0xff, 4), 0x108, 0x100, 1, true, El::El1),
        "Unpredictable_WPMASKEDBITS"
    ));
    // Not sign extended.
    let r = wp(
        w(0xff, 0),
        0x1_0000_0000_0100,
        0xffff_0000_0000_0100,
        1,
        true,
        El::El1,
    );
    assert!(is_cu(r, "Unpredictable_DBGxVR_RESS"), "{r:?}");
    // A definite match of one byte wins over an unpredictable one; a wrong direction wins over all.
    assert_eq!(
        wp(
            w(0x5, 0) & !(3 << 3) | 1 << 3,
            0x100,
            0x100,
            1,
            true,
            El::El1
        ),
        MatchResult::Miss
    );
    // Deprecated word-aligned DBGWVR (bit 2 set): only BAS[3:0] count.
    assert!(wp(w(0x1, 0), 0x104, 0x104, 1, true, El::El1).is_hit());
    assert!(!wp(w(0x1, 0), 0x104, 0x100, 1, true, El::El1).is_hit());
}

#[test]
fn linked_watchpoint() {
    let f = a57();
    let bcr = [0, 0, 0, 0, 0x30_1fe3, 0];
    let bvr = [0, 0, 0, 0, 0xabcdef, 0];
    let wcr = [0x10_1ffb | 4 << 16, 0, 0, 0];
    let wvr = [0x3000, 0, 0, 0];
    for (ctx, want) in [(0xabcdef, true), (0x1, false)] {
        let env = MatchEnv {
            features: &f,
            bcr: &bcr,
            bvr: &bvr,
            wcr: &wcr,
            wvr: &wvr,
            contextidr: ctx,
        };
        let a = DataAccess {
            address: 0x3002,
            size: 1,
            is_store: true,
            rmw: false,
            el: El::El1,
        };
        assert_eq!(env.check_watchpoint(&a).0.is_hit(), want);
    }
}

#[test]
fn serialises_like_the_cli_promises() {
    let hit = serde_json::to_string(&MatchResult::Hit { address: 0x1000 }).unwrap();
    assert_eq!(hit, r#"{"result":"hit","address":"0x1000"}"#);
    assert_eq!(
        serde_json::to_string(&MatchResult::Miss).unwrap(),
        r#"{"result":"miss"}"#
    );
    let cu = MatchResult::Unpredictable {
        rule: CuRule::ReservedMask { n: 0, mask: 1 },
    };
    assert!(
        serde_json::to_string(&cu)
            .unwrap()
            .starts_with(r#"{"result":"unpredictable","rule":"Unpredictable_RESWPMASK"#)
    );
}

proptest! {
    /// A watchpoint built for a byte range matches exactly the bytes in it.
    #[test]
    fn single_slot_watchpoint_matches_exactly_its_bytes(
        base in 0u64..0x1_0000,
        shape in prop_oneof![
            (0u64..8, 1u64..=8).prop_map(|(off, len)| (off, len.min(8 - off))),
            (3u32..=12).prop_map(|k| (0, 1u64 << k)),
        ],
        store in any::<bool>(),
    ) {
        let (off, len) = shape;
        let addr = if len >= 8 { (base << 3) & !(len - 1) } else { (base << 3) + off };
        let (wcr, wvr) = encode_range(addr, len, Lsc::Both).unwrap();
        // Probe every byte around the range, and a few beyond.
        let lo = addr.saturating_sub(16);
        for byte in lo..addr + len + 16 {
            let r = wp(wcr.bits(), wvr, byte, 1, store, El::El1);
            prop_assert_eq!(r.is_hit(), byte >= addr && byte < addr + len, "byte {:#x}", byte);
        }
    }

    /// Control words built from fields never panic the matcher.
    #[test]
    fn matcher_is_total(bcr in any::<u64>(), bvr in any::<u64>(), pc in any::<u64>(),
                        wcr in any::<u64>(), addr in any::<u64>(), size in 1u8..=64) {
        let _ = bp(bcr, bvr, pc, El::El1);
        let _ = wp(wcr, bvr, addr, size, true, El::El0);
    }
}
