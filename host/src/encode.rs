//! Pure encoders: the DBGBCR/DBGBVR pair of a hardware breakpoint and the fewest
//! DBGWCR/DBGWVR pairs that watch exactly a byte range (what the CLI's `hypdbg encode` prints).
//!
//! A watchpoint slot watches either a contiguous run of bytes inside one doubleword (BAS,
//! MASK = 0) or an aligned power-of-two block of 8 bytes to 2 GiB (MASK = log2 size,
//! BAS = 0xff). A range that is neither is split into:
//!
//! - a *head*: the bytes before the first doubleword boundary, one BAS slot (any slot that
//!   covers the first byte of an unaligned range is a BAS slot of that doubleword, since a
//!   MASK block would include the bytes before it);
//! - a *body*: the doubleword-aligned middle, cut greedily into the largest aligned
//!   power-of-two blocks that fit (at most 2 GiB each);
//! - a *tail*: the bytes after the last doubleword boundary, one BAS slot.
//!
//! Head and tail are forced, and the greedy cut of an aligned interval into aligned
//! power-of-two blocks is the minimum (any aligned block of the body is inside one greedy
//! block, because aligned power-of-two blocks nest), so the total is the fewest slots that
//! cover exactly the range. `tests/encode.rs` checks this against a dynamic programme over
//! every possible slot, overlaps included.

use std::fmt;
use std::str::FromStr;

use hypdbg_model::bcr::Dbgbcr;
use hypdbg_model::va::is_sign_extended;
use hypdbg_model::wcr::{Dbgwcr, Lsc, encode_range};
use serde::{Deserialize, Serialize};

use crate::error::HwDebugError;

/// The longest range a watchpoint request may cover: 2 GiB, the largest MASK block.
pub const MAX_WATCH_LEN: u64 = 1 << 31;

/// DBGBCR of a VMM breakpoint: E = 1, PMC = 0b11 (EL1 and EL0), BAS = 0b1111, unlinked
/// address match, no RES0 bits: 0x1e7.
pub const BREAKPOINT_BCR: u64 = Dbgbcr::address_match(0b11).bits();

/// Which accesses a watchpoint stops on (gdb's `rwatch`, `watch`, `awatch`).
///
/// The words for a direction are one set everywhere hypdbg takes one (`encode watch`,
/// `match watch`, a scenario's `watch`): [`WatchAccess::WORDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchAccess {
    /// Loads only (LSC = 0b01).
    Read,
    /// Stores only (LSC = 0b10).
    Write,
    /// Loads and stores (LSC = 0b11).
    Access,
}

impl WatchAccess {
    /// Every word accepted for each direction (case-insensitive): gdb's single letters,
    /// the Arm ARM's load/store, and both-direction synonyms.
    pub const WORDS: [(WatchAccess, &'static [&'static str]); 3] = [
        (WatchAccess::Read, &["read", "load", "r"]),
        (WatchAccess::Write, &["write", "store", "w"]),
        (
            WatchAccess::Access,
            &["access", "rw", "a", "both", "read-write", "load-store"],
        ),
    ];

    /// All three.
    pub const ALL: [WatchAccess; 3] = [WatchAccess::Read, WatchAccess::Write, WatchAccess::Access];

    /// DBGWCR.LSC.
    pub const fn lsc(self) -> Lsc {
        match self {
            WatchAccess::Read => Lsc::Load,
            WatchAccess::Write => Lsc::Store,
            WatchAccess::Access => Lsc::Both,
        }
    }

    /// Whether an access in this direction (`is_write`: a store, ESR.WnR = 1) is watched.
    pub const fn matches(self, is_write: bool) -> bool {
        self.lsc().matches(is_write)
    }

    /// `read`, `write` or `access`.
    pub const fn name(self) -> &'static str {
        match self {
            WatchAccess::Read => "read",
            WatchAccess::Write => "write",
            WatchAccess::Access => "access",
        }
    }
}

impl fmt::Display for WatchAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WatchAccess {
    type Err = HwDebugError;

    /// One of [`WatchAccess::WORDS`], in any case.
    fn from_str(s: &str) -> Result<Self, HwDebugError> {
        let w = s.trim().to_ascii_lowercase();
        WatchAccess::WORDS
            .iter()
            .find(|(_, words)| words.contains(&w.as_str()))
            .map(|(a, _)| *a)
            .ok_or_else(|| HwDebugError::BadAccess {
                text: s.to_string(),
            })
    }
}

impl<'de> Deserialize<'de> for WatchAccess {
    /// The same words as [`WatchAccess::from_str`].
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A watchpoint as the debugger asked for it: exactly the bytes `addr .. addr + len`, for
/// `access`. Removal and hit reports use the same request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The first byte.
    #[serde(with = "crate::hex")]
    pub addr: u64,
    /// The number of bytes, 1..=2 GiB.
    #[serde(with = "crate::hex")]
    pub len: u64,
    /// The directions watched.
    pub access: WatchAccess,
}

impl WatchRequest {
    /// A request (not validated until encoded).
    pub const fn new(addr: u64, len: u64, access: WatchAccess) -> Self {
        WatchRequest { addr, len, access }
    }

    /// The last byte (`addr + len - 1`, wrapping for an invalid request).
    pub const fn last(&self) -> u64 {
        self.addr.wrapping_add(self.len.wrapping_sub(1))
    }

    /// Whether `addr` is one of the requested bytes.
    pub const fn contains(&self, addr: u64) -> bool {
        self.len != 0 && addr >= self.addr && addr - self.addr < self.len
    }

    /// How far `addr` is from the requested bytes (0 inside), as Linux's
    /// `get_distance_from_watchpoint` measures it.
    pub const fn distance(&self, addr: u64) -> u64 {
        distance(addr, self.addr, self.last())
    }
}

impl fmt::Display for WatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#x}+{:#x}", self.access, self.addr, self.len)
    }
}

/// The distance from `addr` to the inclusive range `[low, high]`.
pub(crate) const fn distance(addr: u64, low: u64, high: u64) -> u64 {
    if addr < low {
        low - addr
    } else {
        addr.saturating_sub(high)
    }
}

/// One hardware breakpoint slot: `{"bcr":"0x1e7","bvr":"0x…"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BpSlot {
    /// `DBGBCR<n>_EL1`.
    #[serde(with = "crate::hex")]
    pub bcr: u64,
    /// `DBGBVR<n>_EL1`.
    #[serde(with = "crate::hex")]
    pub bvr: u64,
}

impl BpSlot {
    /// Whether DBGBCR.E is set.
    pub const fn enabled(&self) -> bool {
        self.bcr & 1 != 0
    }
}

/// One hardware watchpoint slot: `{"wcr":"0x…","wvr":"0x…"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WpSlot {
    /// `DBGWCR<n>_EL1`.
    #[serde(with = "crate::hex")]
    pub wcr: u64,
    /// `DBGWVR<n>_EL1`.
    #[serde(with = "crate::hex")]
    pub wvr: u64,
}

impl WpSlot {
    /// Whether DBGWCR.E is set.
    pub const fn enabled(&self) -> bool {
        self.wcr & 1 != 0
    }

    /// The bytes the slot watches as `(first, last)`, inclusive: the BAS run inside the
    /// doubleword at DBGWVR, or the 2^MASK block. For a non-contiguous BAS (CONSTRAINED
    /// UNPREDICTABLE, never produced here) the span from the lowest to the highest selected
    /// byte; `None` when BAS selects nothing or MASK is reserved.
    pub fn watched(&self) -> Option<(u64, u64)> {
        let w = Dbgwcr::from_bits(self.wcr);
        match w.mask() {
            0 => {
                let bas = w.bas();
                if bas == 0 {
                    return None;
                }
                // Bit 2 of DBGWVR set: the deprecated word-aligned form, only BAS[3:0] count.
                let (base, bas) = if self.wvr & 4 != 0 {
                    (self.wvr & !3, bas & 0xf)
                } else {
                    (self.wvr & !7, bas)
                };
                if bas == 0 {
                    return None;
                }
                let lo = u64::from(bas.trailing_zeros());
                let hi = u64::from(7 - bas.leading_zeros());
                Some((base.wrapping_add(lo), base.wrapping_add(hi)))
            }
            1 | 2 => None,
            m => {
                let size = 1u64 << m;
                let base = self.wvr & !(size - 1);
                Some((base, base.wrapping_add(size - 1)))
            }
        }
    }
}

/// The slots of a request, in the order the CLI prints them: `{"slots":[…]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots<T> {
    /// The slots.
    pub slots: Vec<T>,
}

/// Check a breakpoint address: canonical (bits \[63:48\] a sign extension of bit 48, as
/// DBGBVR's RESS bits must be) and word aligned.
pub fn check_breakpoint_addr(addr: u64) -> Result<(), HwDebugError> {
    if !is_sign_extended(addr) {
        return Err(HwDebugError::NonCanonical { addr });
    }
    if addr & 3 != 0 {
        return Err(HwDebugError::MisalignedBreakpoint { addr });
    }
    Ok(())
}

/// The slot of a hardware breakpoint at `addr`: DBGBCR = 0x1e7 (E, PMC = 0b11,
/// BAS = 0b1111), DBGBVR = `addr` itself (already sign-extended; never masked).
///
/// ```
/// use hypdbg_host::encode::encode_breakpoint;
/// let s = encode_breakpoint(0xffff_8000_0000_1000).unwrap();
/// assert_eq!((s[0].bcr, s[0].bvr), (0x1e7, 0xffff_8000_0000_1000));
/// assert!(encode_breakpoint(0x1002).is_err()); // not word aligned
/// assert!(encode_breakpoint(0x0001_0000_0000_1000).is_err()); // not canonical
/// ```
pub fn encode_breakpoint(addr: u64) -> Result<Vec<BpSlot>, HwDebugError> {
    check_breakpoint_addr(addr)?;
    Ok(vec![BpSlot {
        bcr: BREAKPOINT_BCR,
        bvr: addr,
    }])
}

/// Check a watch request: length 1..=2 GiB, both ends canonical and in the same VA half.
pub fn check_watch_request(req: &WatchRequest) -> Result<(), HwDebugError> {
    let WatchRequest { addr, len, .. } = *req;
    if len == 0 {
        return Err(HwDebugError::ZeroLength { addr });
    }
    if len > MAX_WATCH_LEN {
        return Err(HwDebugError::TooLong { addr, len });
    }
    if !is_sign_extended(addr) {
        return Err(HwDebugError::NonCanonical { addr });
    }
    let last = addr.checked_add(len - 1);
    match last {
        Some(last) if is_sign_extended(last) && (last ^ addr) >> 63 == 0 => Ok(()),
        _ => Err(HwDebugError::RangeNotCanonical {
            addr,
            last: req.last(),
        }),
    }
}

/// One block of a decomposition: `len` bytes at `addr`, encodable by one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub addr: u64,
    pub len: u64,
}

/// Cut a valid range into the fewest single-slot blocks (head, greedy body, tail).
pub(crate) fn decompose(addr: u64, len: u64) -> Vec<Block> {
    // Exclusive end in u128: a range may end at the very top of the address space.
    let end = u128::from(addr) + u128::from(len);
    let mut out = Vec::new();
    let first_dw_end = (u128::from(addr) | 7) + 1;
    if end <= first_dw_end {
        out.push(Block { addr, len });
        return out;
    }
    let mut cur = u128::from(addr);
    if cur & 7 != 0 {
        out.push(Block {
            addr,
            len: (first_dw_end - cur) as u64,
        });
        cur = first_dw_end;
    }
    let body_end = end & !7;
    while cur < body_end {
        let align = cur.trailing_zeros().min(31);
        let room = body_end - cur;
        // Largest power of two that is aligned at `cur`, fits, and is at most 2 GiB.
        let fit = 127 - room.leading_zeros();
        let k = align.min(fit);
        let size = 1u128 << k;
        out.push(Block {
            addr: cur as u64,
            len: size as u64,
        });
        cur += size;
    }
    if cur < end {
        out.push(Block {
            addr: cur as u64,
            len: (end - cur) as u64,
        });
    }
    out
}

/// How many slots [`encode_watchpoint`] needs for a valid request (without building them).
pub fn watch_slots_needed(addr: u64, len: u64) -> Result<usize, HwDebugError> {
    check_watch_request(&WatchRequest::new(addr, len, WatchAccess::Access))?;
    Ok(decompose(addr, len).len())
}

/// The fewest watchpoint slots that fire on exactly the bytes `addr .. addr + len` for
/// `access` (see the module documentation for the decomposition and why it is minimal).
///
/// ```
/// use hypdbg_host::encode::{encode_watchpoint, WatchAccess};
/// // Inside one doubleword: one BAS slot.
/// let s = encode_watchpoint(0x1003, 2, WatchAccess::Write).unwrap();
/// assert_eq!((s.len(), s[0].wvr, (s[0].wcr >> 5) & 0xff), (1, 0x1000, 0b0001_1000));
/// // Aligned power of two: one MASK slot.
/// let s = encode_watchpoint(0x4000, 0x1000, WatchAccess::Access).unwrap();
/// assert_eq!((s.len(), (s[0].wcr >> 24) & 0x1f), (1, 12));
/// // Crossing a doubleword boundary: split, never truncated.
/// assert_eq!(encode_watchpoint(0x1006, 4, WatchAccess::Read).unwrap().len(), 2);
/// assert!(encode_watchpoint(0x1000, 0, WatchAccess::Read).is_err());
/// ```
pub fn encode_watchpoint(
    addr: u64,
    len: u64,
    access: WatchAccess,
) -> Result<Vec<WpSlot>, HwDebugError> {
    check_watch_request(&WatchRequest::new(addr, len, access))?;
    decompose(addr, len)
        .into_iter()
        .map(|b| {
            let (wcr, wvr) = encode_range(b.addr, b.len, access.lsc())?;
            Ok(WpSlot {
                wcr: wcr.bits(),
                wvr,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_parses_and_prints() {
        for a in WatchAccess::ALL {
            assert_eq!(a.to_string().parse::<WatchAccess>().unwrap(), a);
        }
        assert_eq!("RW".parse::<WatchAccess>().unwrap(), WatchAccess::Access);
        for (a, words) in WatchAccess::WORDS {
            for w in words {
                assert_eq!(w.to_uppercase().parse::<WatchAccess>().unwrap(), a, "{w}");
            }
        }
        let e = "modify".parse::<WatchAccess>().unwrap_err().to_string();
        assert!(
            e.contains("'modify'") && e.contains("read (load, r), write (store, w) or access"),
            "{e}"
        );
        assert!(WatchAccess::Read.matches(false) && !WatchAccess::Read.matches(true));
        assert!(WatchAccess::Write.matches(true) && !WatchAccess::Write.matches(false));
    }

    #[test]
    fn breakpoint_encoding_is_0x1e7_with_the_address_verbatim() {
        assert_eq!(BREAKPOINT_BCR, 0x1e7);
        let s = encode_breakpoint(0xffff_0000_0000_0004).unwrap();
        assert_eq!(
            s,
            vec![BpSlot {
                bcr: 0x1e7,
                bvr: 0xffff_0000_0000_0004
            }]
        );
        let e = encode_breakpoint(0x0001_ffff_0000_0000).unwrap_err();
        assert!(matches!(e, HwDebugError::NonCanonical { .. }), "{e}");
        assert!(e.to_string().contains("0x1ffff00000000"), "{e}");
        assert!(encode_breakpoint(0x0000_ffff_0000_0000).is_ok());
        let e = encode_breakpoint(0x1001).unwrap_err();
        assert_eq!(e.errno(), crate::Errno::Einval);
    }

    #[test]
    fn decomposition_examples() {
        let d = |a, l| {
            decompose(a, l)
                .into_iter()
                .map(|b| (b.addr, b.len))
                .collect::<Vec<_>>()
        };
        assert_eq!(d(0x1000, 8), vec![(0x1000, 8)]);
        assert_eq!(d(0x1006, 4), vec![(0x1006, 2), (0x1008, 2)]);
        assert_eq!(
            d(0x1004, 0x20),
            vec![(0x1004, 4), (0x1008, 8), (0x1010, 0x10), (0x1020, 4)]
        );
        assert_eq!(d(0x1008, 0x18), vec![(0x1008, 8), (0x1010, 0x10)]);
        // 2 GiB aligned: one MASK = 31 block.
        assert_eq!(d(0, 1 << 31), vec![(0, 1 << 31)]);
        // Ending at the very top of the address space.
        assert_eq!(d(u64::MAX - 7, 8), vec![(u64::MAX - 7, 8)]);
        assert_eq!(
            d(u64::MAX - 8, 9),
            vec![(u64::MAX - 8, 1), (u64::MAX - 7, 8)]
        );
    }

    #[test]
    fn requests_are_validated_with_the_rule_named() {
        let e = encode_watchpoint(0x1000, 0, WatchAccess::Write).unwrap_err();
        assert!(e.to_string().contains("length 0"), "{e}");
        let e = encode_watchpoint(0x1000, MAX_WATCH_LEN + 1, WatchAccess::Write).unwrap_err();
        assert!(e.to_string().contains("2 GiB"), "{e}");
        let e = encode_watchpoint(0x0000_ffff_ffff_fff0, 0x20, WatchAccess::Write).unwrap_err();
        assert!(matches!(e, HwDebugError::RangeNotCanonical { .. }), "{e}");
        let e = encode_watchpoint(u64::MAX, 2, WatchAccess::Write).unwrap_err();
        assert!(matches!(e, HwDebugError::RangeNotCanonical { .. }), "{e}");
        assert!(encode_watchpoint(0x1234_0000_0000_0000, 1, WatchAccess::Read).is_err());
        assert_eq!(watch_slots_needed(0x1001, 0x7fff_ffff).unwrap(), 29);
    }

    #[test]
    fn slots_serialise_as_hex_strings() {
        let s = Slots {
            slots: encode_watchpoint(0x1003, 2, WatchAccess::Write).unwrap(),
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"slots":[{"wcr":"0x317","wvr":"0x1000"}]}"#);
        let back: Slots<WpSlot> = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        let b = serde_json::to_string(&encode_breakpoint(0x4000).unwrap()).unwrap();
        assert_eq!(b, r#"[{"bcr":"0x1e7","bvr":"0x4000"}]"#);
    }

    #[test]
    fn watched_bytes_of_slots() {
        let s = encode_watchpoint(0x1003, 2, WatchAccess::Write).unwrap()[0];
        assert_eq!(s.watched(), Some((0x1003, 0x1004)));
        let s = encode_watchpoint(0x4000, 0x1000, WatchAccess::Write).unwrap()[0];
        assert_eq!(s.watched(), Some((0x4000, 0x4fff)));
        assert_eq!(WpSlot { wcr: 1, wvr: 0 }.watched(), None);
        // Word-aligned legacy form: DBGWVR bit 2, BAS[3:0].
        let w = WpSlot {
            wcr: 0x1f | 0x3 << 5,
            wvr: 0x1004,
        };
        assert_eq!(w.watched(), Some((0x1004, 0x1005)));
    }
}
