//! Breakpoint and watchpoint matching for a Non-secure guest at EL0/EL1, after the Arm ARM
//! shared pseudocode (AArch64.BreakpointMatch, AArch64.BreakpointValueMatch,
//! AArch64.WatchpointMatch, AArch64.WatchpointByteMatch, AArch64.StateMatch).
//!
//! Where the architecture leaves the outcome CONSTRAINED UNPREDICTABLE the model answers
//! [`MatchResult::Unpredictable`] with the rule, instead of picking one of the permitted
//! behaviours. Outcomes combine in three-valued logic: a definite match of one byte or unit
//! wins over an unpredictable one, a definite "no" (disabled, wrong state, wrong direction)
//! wins over everything.

use serde::{Serialize, Serializer};

use crate::El;
use crate::bcr::{BreakpointType, Dbgbcr};
use crate::bits::is_contiguous;
use crate::dfr0::DebugFeatures;
use crate::va::{compare_bits, is_sign_extended};
use crate::wcr::{Dbgwcr, Lsc};

/// A CONSTRAINED UNPREDICTABLE rule of the Arm ARM (named as its `Unpredictable_*` enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CuRule {
    /// Unpredictable_RESBPTYPE: a reserved DBGBCR.BT for this breakpoint and guest.
    ReservedBreakpointType {
        /// Breakpoint number.
        n: u8,
        /// BT.
        bt: u8,
    },
    /// Unpredictable_BPMATCHHALF: BAS = 0b1100 selects only the second halfword of an A64
    /// instruction.
    BreakpointHalfword {
        /// Breakpoint number.
        n: u8,
    },
    /// A reserved DBGBCR.BAS value (valid: 0b0011, 0b1100, 0b1111).
    ReservedBas {
        /// Breakpoint number.
        n: u8,
        /// BAS.
        bas: u8,
    },
    /// DBGxVR_RESS: DBGBVR<63:48> neither all zeros nor all ones.
    BvrNotSignExtended {
        /// Breakpoint number.
        n: u8,
    },
    /// Unpredictable_BPNOTCTXCMP: LBN names a breakpoint that is not context-aware.
    LbnNotContextAware {
        /// LBN.
        lbn: u8,
    },
    /// A reserved (HMC, SSC, PxC) combination (CheckValidStateMatch).
    ReservedStateMatch {
        /// HMC.
        hmc: bool,
        /// SSC.
        ssc: u8,
        /// PMC or PAC.
        pxc: u8,
    },
    /// Unpredictable_WPMASKANDBAS: MASK != 0 with BAS != 0xff.
    MaskWithPartialBas {
        /// Watchpoint number.
        n: u8,
        /// BAS.
        bas: u8,
    },
    /// Unpredictable_WPBASCONTIGUOUS: the BAS bits are not one contiguous run.
    NonContiguousBas {
        /// Watchpoint number.
        n: u8,
        /// BAS.
        bas: u8,
    },
    /// Unpredictable_RESWPMASK: MASK = 1 or 2.
    ReservedMask {
        /// Watchpoint number.
        n: u8,
        /// MASK.
        mask: u8,
    },
    /// Unpredictable_WPMASKEDBITS: DBGWVR bits below MASK are not zero.
    MaskedBitsSet {
        /// Watchpoint number.
        n: u8,
        /// MASK.
        mask: u8,
    },
    /// DBGxVR_RESS: DBGWVR<63:48> neither all zeros nor all ones.
    WvrNotSignExtended {
        /// Watchpoint number.
        n: u8,
    },
}

impl CuRule {
    /// The Arm ARM's name of the rule.
    pub const fn arm_name(self) -> &'static str {
        match self {
            CuRule::ReservedBreakpointType { .. } => "Unpredictable_RESBPTYPE",
            CuRule::BreakpointHalfword { .. } => "Unpredictable_BPMATCHHALF",
            CuRule::ReservedBas { .. } => "Unpredictable_RESBPBAS",
            CuRule::BvrNotSignExtended { .. } | CuRule::WvrNotSignExtended { .. } => {
                "Unpredictable_DBGxVR_RESS"
            }
            CuRule::LbnNotContextAware { .. } => "Unpredictable_BPNOTCTXCMP",
            CuRule::ReservedStateMatch { .. } => "Unpredictable_RESERVEDSTATEMATCH",
            CuRule::MaskWithPartialBas { .. } => "Unpredictable_WPMASKANDBAS",
            CuRule::NonContiguousBas { .. } => "Unpredictable_WPBASCONTIGUOUS",
            CuRule::ReservedMask { .. } => "Unpredictable_RESWPMASK",
            CuRule::MaskedBitsSet { .. } => "Unpredictable_WPMASKEDBITS",
        }
    }
}

impl std::fmt::Display for CuRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.arm_name();
        match *self {
            CuRule::ReservedBreakpointType { n, bt } => write!(
                f,
                "{name}: DBGBCR{n}.BT = {bt:#06b} is reserved here ({})",
                BreakpointType::from_bt(bt).describe()
            ),
            CuRule::BreakpointHalfword { n } => write!(
                f,
                "{name}: DBGBCR{n}.BAS = 0b1100 matches only the second halfword of an A64 instruction"
            ),
            CuRule::ReservedBas { n, bas } => write!(
                f,
                "{name}: DBGBCR{n}.BAS = {bas:#06b} is reserved (0b0011, 0b1100 or 0b1111)"
            ),
            CuRule::BvrNotSignExtended { n } => write!(
                f,
                "{name}: DBGBVR{n}_EL1<63:48> is not a sign extension (RESS); it may or may not take part in the comparison"
            ),
            CuRule::LbnNotContextAware { lbn } => write!(
                f,
                "{name}: LBN = {lbn} is not an implemented context-aware breakpoint"
            ),
            CuRule::ReservedStateMatch { hmc, ssc, pxc } => write!(
                f,
                "{name}: HMC = {}, SSC = {ssc:#04b}, PxC = {pxc:#04b} is a reserved combination",
                hmc as u8
            ),
            CuRule::MaskWithPartialBas { n, bas } => write!(
                f,
                "{name}: DBGWCR{n}.MASK != 0 requires BAS = 0xff, BAS = {bas:#04x}"
            ),
            CuRule::NonContiguousBas { n, bas } => {
                write!(f, "{name}: DBGWCR{n}.BAS = {bas:#010b} is not contiguous")
            }
            CuRule::ReservedMask { n, mask } => write!(
                f,
                "{name}: DBGWCR{n}.MASK = {mask} is reserved (0 or 3..=31)"
            ),
            CuRule::MaskedBitsSet { n, mask } => write!(
                f,
                "{name}: DBGWVR{n}_EL1 has non-zero bits below MASK = {mask}"
            ),
            CuRule::WvrNotSignExtended { n } => write!(
                f,
                "{name}: DBGWVR{n}_EL1<63:48> is not a sign extension (RESS); it may or may not take part in the comparison"
            ),
        }
    }
}

/// Three-valued outcome of a pseudocode predicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    No,
    Yes,
    Maybe(CuRule),
}

impl Tri {
    const fn of(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }
    const fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Maybe(r), _) | (_, Tri::Maybe(r)) => Tri::Maybe(r),
            _ => Tri::Yes,
        }
    }
    const fn or(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::Maybe(r), _) | (_, Tri::Maybe(r)) => Tri::Maybe(r),
            _ => Tri::No,
        }
    }
}

/// The answer of a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchResult {
    /// A debug event is generated; `address` is the PC or the first watched byte accessed.
    Hit {
        /// The matching address (what FAR reports for a watchpoint).
        address: u64,
    },
    /// No event.
    Miss,
    /// The architecture permits both: the model does not guess.
    Unpredictable {
        /// The rule.
        rule: CuRule,
    },
}

impl MatchResult {
    /// Whether this is a hit.
    pub const fn is_hit(&self) -> bool {
        matches!(self, MatchResult::Hit { .. })
    }
}

impl Serialize for MatchResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self {
            MatchResult::Hit { address } => {
                m.serialize_entry("result", "hit")?;
                m.serialize_entry("address", &format!("{address:#x}"))?;
            }
            MatchResult::Miss => m.serialize_entry("result", "miss")?,
            MatchResult::Unpredictable { rule } => {
                m.serialize_entry("result", "unpredictable")?;
                m.serialize_entry("rule", &rule.to_string())?;
            }
        }
        m.end()
    }
}

/// A data access the guest makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataAccess {
    /// The lowest byte accessed.
    pub address: u64,
    /// Bytes accessed, 1..=64.
    pub size: u8,
    /// A store (true) or a load.
    pub is_store: bool,
    /// A read-modify-write (an atomic): a load and a store at once, so a watchpoint on
    /// either direction matches it (Arm ARM AArch64.WatchpointMatch with both read and write).
    pub rmw: bool,
    /// The EL the access is checked for (EL0 for unprivileged accesses).
    pub el: El,
}

/// The comparators one match sees: the implemented banks of a CPU and CONTEXTIDR_EL1.
#[derive(Clone, Copy, Debug)]
pub struct MatchEnv<'a> {
    /// The CPU's debug features (counts, context-aware units).
    pub features: &'a DebugFeatures,
    /// DBGBCR\<n>_EL1, n < BRPs + 1.
    pub bcr: &'a [u64],
    /// DBGBVR\<n>_EL1.
    pub bvr: &'a [u64],
    /// DBGWCR\<n>_EL1, n < WRPs + 1.
    pub wcr: &'a [u64],
    /// DBGWVR\<n>_EL1.
    pub wvr: &'a [u64],
    /// CONTEXTIDR_EL1.
    pub contextidr: u64,
}

/// The control fields AArch64.StateMatch reads from DBGBCR/DBGWCR.
#[derive(Clone, Copy, Debug)]
struct StateFields {
    hmc: bool,
    ssc: u8,
    pxc: u8,
    linked: bool,
    lbn: u8,
}

/// CheckValidStateMatch for a PE with EL2 and EL3, no Secure EL2, AArch32 at EL1.
const fn check_valid_state_match(hmc: bool, ssc: u8, pxc: u8, is_breakpoint: bool) -> bool {
    let reserved = match (hmc, ssc, pxc) {
        (false, 0b11, 0b10) => true,
        (true, 0b00, 0b00 | 0b10) => true,
        (true, 0b01, 0b10) => true,
        (true, 0b10 | 0b11, 0b10) => true,
        // No Secure EL2: {HMC,SSC,PxC} = 0 11 00, 1 01 00, x 11 x1.
        (false, 0b11, 0b00) | (true, 0b01, 0b00) => true,
        (_, 0b11, 0b01 | 0b11) => true,
        // PxC = 0b00 with HMC = 0: only the AArch32 breakpoint encoding.
        (false, 0b00..=0b10, 0b00) => !is_breakpoint,
        _ => false,
    };
    !reserved
}

impl MatchEnv<'_> {
    /// AArch64.StateMatch for a Non-secure access at `el`.
    fn state_match(&self, s: StateFields, is_bp: bool, el: El) -> Tri {
        let StateFields {
            hmc,
            ssc,
            pxc,
            linked,
            lbn,
        } = s;
        if !check_valid_state_match(hmc, ssc, pxc, is_bp) {
            return Tri::Maybe(CuRule::ReservedStateMatch { hmc, ssc, pxc });
        }
        let priv_match = match el {
            El::El1 => pxc & 1 != 0,
            El::El0 => pxc & 2 != 0,
            El::El2 => hmc && !(ssc == 0b10 && pxc == 0b00),
        };
        let security_state_match = match ssc {
            0b00 | 0b01 => true,
            0b10 => false,
            _ => hmc,
        };
        let own = Tri::of(priv_match && security_state_match);
        if !linked {
            return own;
        }
        if !self.features.is_context_aware(lbn as usize) {
            return own.and(Tri::Maybe(CuRule::LbnNotContextAware { lbn }));
        }
        own.and(self.breakpoint_value_match(lbn as usize, 0, true, el))
    }

    /// AArch64.BreakpointValueMatch(n, vaddress, linked_to).
    fn breakpoint_value_match(&self, n: usize, pc: u64, linked_to: bool, el: El) -> Tri {
        let (Some(&bcr), Some(&bvr)) = (self.bcr.get(n), self.bvr.get(n)) else {
            return Tri::No;
        };
        let bcr = Dbgbcr::from_bits(bcr);
        if !bcr.enabled() {
            return Tri::No;
        }
        let num = n as u8;
        let bt = bcr.bt();
        let context_aware = self.features.is_context_aware(n);
        // (match_addr, linked); the other valid types match CONTEXTIDR_EL1.
        let (match_addr, linked) = match bt {
            BreakpointType::UnlinkedAddress => (true, false),
            BreakpointType::LinkedAddress => (true, true),
            BreakpointType::UnlinkedContext if context_aware => (false, false),
            BreakpointType::LinkedContext if context_aware => (false, true),
            _ => {
                return Tri::Maybe(CuRule::ReservedBreakpointType {
                    n: num,
                    bt: bt.bt(),
                });
            }
        };
        // The target of a link must be a linking-enabled context breakpoint.
        if linked_to && (!linked || match_addr) {
            return Tri::No;
        }
        // A linking-enabled context breakpoint never fires on its own.
        if !linked_to && linked && !match_addr {
            return Tri::No;
        }
        if match_addr {
            let byte_select = match bcr.bas() {
                0b1111 | 0b0011 => Tri::Yes,
                0b1100 => Tri::Maybe(CuRule::BreakpointHalfword { n: num }),
                bas => Tri::Maybe(CuRule::ReservedBas { n: num, bas }),
            };
            let same = compare_bits(pc, 2) == compare_bits(bvr, 2);
            let bvr_match = if is_sign_extended(bvr) {
                Tri::of(same)
            } else if same {
                Tri::Maybe(CuRule::BvrNotSignExtended { n: num })
            } else {
                Tri::No
            };
            bvr_match.and(byte_select)
        } else {
            let cid = self.contextidr as u32 == bvr as u32;
            Tri::of(cid && matches!(el, El::El0 | El::El1))
        }
    }

    /// AArch64.BreakpointMatch(n, pc) at `el`: enabled, state and value.
    fn breakpoint_unit(&self, n: usize, pc: u64, el: El) -> Tri {
        let Some(&bcr) = self.bcr.get(n) else {
            return Tri::No;
        };
        let bcr = Dbgbcr::from_bits(bcr);
        if !bcr.enabled() {
            return Tri::No;
        }
        let linked = bcr.bt() == BreakpointType::LinkedAddress;
        let fields = StateFields {
            hmc: bcr.hmc(),
            ssc: bcr.ssc(),
            pxc: bcr.pmc(),
            linked,
            lbn: bcr.lbn(),
        };
        let state = self.state_match(fields, true, el);
        state.and(self.breakpoint_value_match(n, pc, false, el))
    }

    /// Whether breakpoint `n` fires for an A64 instruction at `pc` executed at `el`
    /// (AArch64.BreakpointMatch; MDSCR/gating is [`crate::gating`]'s business).
    pub fn breakpoint_match(&self, n: usize, pc: u64, el: El) -> MatchResult {
        finish(self.breakpoint_unit(n, pc, el), pc)
    }

    /// Whether any implemented breakpoint fires (AArch64.CheckBreakpoint), and which ones.
    pub fn check_breakpoint(&self, pc: u64, el: El) -> (MatchResult, Vec<usize>) {
        let mut acc = Tri::No;
        let mut hits = Vec::new();
        for n in 0..self.bcr.len().min(self.bvr.len()) {
            let t = self.breakpoint_unit(n, pc, el);
            if t == Tri::Yes {
                hits.push(n);
            }
            acc = acc.or(t);
        }
        (finish(acc, pc), hits)
    }

    /// AArch64.WatchpointByteMatch(n, vaddress).
    fn watchpoint_byte_match(&self, n: usize, wcr: Dbgwcr, wvr: u64, va: u64) -> Tri {
        let num = n as u8;
        let mut bottom: u32 = if wvr & 4 != 0 { 2 } else { 3 };
        let bas = wcr.bas();
        let mask = wcr.mask();
        let sel = va & ((1 << bottom) - 1);
        let mut byte_select = Tri::of((bas >> sel) & 1 != 0);
        if mask > 0 && bas != 0xff {
            byte_select = Tri::Maybe(CuRule::MaskWithPartialBas { n: num, bas });
        } else if !is_contiguous(bas.into()) {
            byte_select = Tri::Maybe(CuRule::NonContiguousBas { n: num, bas });
            bottom = 3;
        }
        if matches!(mask, 1 | 2) {
            return byte_select.and(Tri::Maybe(CuRule::ReservedMask { n: num, mask }));
        }
        let lsb = if u32::from(mask) > bottom {
            u32::from(mask)
        } else {
            bottom
        };
        let same = compare_bits(va, lsb) == compare_bits(wvr, lsb);
        let mut wvr_match = if is_sign_extended(wvr) {
            Tri::of(same)
        } else if same {
            Tri::Maybe(CuRule::WvrNotSignExtended { n: num })
        } else {
            Tri::No
        };
        if u32::from(mask) > bottom && wvr_match != Tri::No {
            let below = wvr & ((1u64 << mask) - 1) & !((1u64 << bottom) - 1);
            if below != 0 {
                wvr_match = Tri::Maybe(CuRule::MaskedBitsSet { n: num, mask });
            }
        }
        wvr_match.and(byte_select)
    }

    /// AArch64.WatchpointMatch(n, access): (outcome, first matching byte).
    fn watchpoint_unit(&self, n: usize, access: &DataAccess) -> (Tri, u64) {
        let (Some(&wcr), Some(&wvr)) = (self.wcr.get(n), self.wvr.get(n)) else {
            return (Tri::No, 0);
        };
        let wcr = Dbgwcr::from_bits(wcr);
        if !wcr.enabled()
            || wcr.lsc() == Lsc::Reserved
            || !(wcr.lsc().matches(access.is_store)
                || (access.rmw && wcr.lsc().matches(!access.is_store)))
        {
            return (Tri::No, 0);
        }
        let fields = StateFields {
            hmc: wcr.hmc(),
            ssc: wcr.ssc(),
            pxc: wcr.pac(),
            linked: wcr.linked(),
            lbn: wcr.lbn(),
        };
        let state = self.state_match(fields, false, access.el);
        if state == Tri::No {
            return (Tri::No, 0);
        }
        let mut value = Tri::No;
        let mut first = access.address;
        for b in 0..u64::from(access.size) {
            let va = access.address.wrapping_add(b);
            let t = self.watchpoint_byte_match(n, wcr, wvr, va);
            if t == Tri::Yes && value != Tri::Yes {
                first = va;
            }
            value = value.or(t);
        }
        (state.and(value), first)
    }

    /// Whether watchpoint `n` fires for `access`.
    pub fn watchpoint_match(&self, n: usize, access: &DataAccess) -> MatchResult {
        let (t, first) = self.watchpoint_unit(n, access);
        finish(t, first)
    }

    /// Whether any implemented watchpoint fires (AArch64.CheckWatchpoint), the reported
    /// address (the lowest matching byte) and the units that match.
    pub fn check_watchpoint(&self, access: &DataAccess) -> (MatchResult, Vec<usize>) {
        let mut acc = Tri::No;
        let mut hits = Vec::new();
        let mut address = u64::MAX;
        for n in 0..self.wcr.len().min(self.wvr.len()) {
            let (t, first) = self.watchpoint_unit(n, access);
            if t == Tri::Yes {
                hits.push(n);
                address = address.min(first);
            }
            acc = acc.or(t);
        }
        (finish(acc, address), hits)
    }
}

fn finish(t: Tri, address: u64) -> MatchResult {
    match t {
        Tri::Yes => MatchResult::Hit { address },
        Tri::No => MatchResult::Miss,
        Tri::Maybe(rule) => MatchResult::Unpredictable { rule },
    }
}

/// Match one breakpoint in isolation, as unit `unit` of a CPU with `features` whose other
/// units are disabled (the CLI's `hypdbg match break`).
pub fn match_single_breakpoint(
    features: &DebugFeatures,
    unit: usize,
    bcr: u64,
    bvr: u64,
    contextidr: u64,
    pc: u64,
    el: El,
) -> MatchResult {
    let mut bcrs = vec![0; features.num_brps()];
    let mut bvrs = vec![0; features.num_brps()];
    if let (Some(c), Some(v)) = (bcrs.get_mut(unit), bvrs.get_mut(unit)) {
        *c = bcr;
        *v = bvr;
    }
    let env = MatchEnv {
        features,
        bcr: &bcrs,
        bvr: &bvrs,
        wcr: &[],
        wvr: &[],
        contextidr,
    };
    env.breakpoint_match(unit, pc, el)
}

/// Match one watchpoint in isolation, as unit `unit` (the CLI's `hypdbg match watch`).
pub fn match_single_watchpoint(
    features: &DebugFeatures,
    unit: usize,
    wcr: u64,
    wvr: u64,
    access: &DataAccess,
) -> MatchResult {
    let mut wcrs = vec![0; features.num_wrps()];
    let mut wvrs = vec![0; features.num_wrps()];
    if let (Some(c), Some(v)) = (wcrs.get_mut(unit), wvrs.get_mut(unit)) {
        *c = wcr;
        *v = wvr;
    }
    let bcrs = vec![0; features.num_brps()];
    let env = MatchEnv {
        features,
        bcr: &bcrs,
        bvr: &bcrs,
        wcr: &wcrs,
        wvr: &wvrs,
        contextidr: 0,
    };
    env.watchpoint_match(unit, access)
}

#[cfg(test)]
mod tests;
