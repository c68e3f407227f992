//! [`HwDebug`]: the VMM's pool of hardware breakpoints and watchpoints (QEMU's
//! `hw_breakpoints` / `hw_watchpoints` arrays in target/arm/kvm64.c, without their bugs).
//!
//! Capacities come from KVM_CAP_GUEST_DEBUG_HW_BPS / _WPS. Each breakpoint takes one slot;
//! each watch request takes the fewest slots that cover exactly its bytes
//! ([`crate::encode`]). Slots are numbered as in `struct kvm_guest_debug_arch`; a freed slot
//! is zeroed at once, so the block handed to KVM never holds a stale enabled entry.

use hypdbg_model::KVM_ARM_MAX_DBG_REGS;
use hypdbg_model::uapi::{
    GuestDebugControl, KVM_CAP_GUEST_DEBUG_HW_BPS, KVM_CAP_GUEST_DEBUG_HW_WPS, KvmGuestDebug,
    KvmGuestDebugArch,
};
use serde::Serialize;

use crate::encode::{
    BREAKPOINT_BCR, WatchRequest, WpSlot, check_breakpoint_addr, distance, encode_watchpoint,
};
use crate::error::HwDebugError;
use crate::vcpu::DebugVcpu;

/// One watch request and the slots that implement it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatchEntry {
    /// The request.
    pub request: WatchRequest,
    /// Its slots (indices into the watchpoint bank), in address order.
    pub slots: Vec<usize>,
}

/// Which watch request a watchpoint exit belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WatchHit {
    /// The request.
    pub request: WatchRequest,
    /// The slot of the request nearest to the reported address (the one containing it, if
    /// any).
    pub slot: usize,
    /// Whether the reported address is one of the requested bytes (false: attributed to the
    /// nearest request, as Linux's `watchpoint_handler` does when the FAR of a wide access
    /// or a pair lies outside every watchpoint).
    pub exact: bool,
}

/// The hardware breakpoints and watchpoints one debugger has inserted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwDebug {
    max_bps: usize,
    max_wps: usize,
    /// Breakpoint slot n: the address it stops at.
    bps: [Option<u64>; KVM_ARM_MAX_DBG_REGS],
    /// Watchpoint slot n: its registers while a request uses it.
    wps: [Option<WpSlot>; KVM_ARM_MAX_DBG_REGS],
    /// Requests in insertion order.
    watches: Vec<WatchEntry>,
}

fn capacity(cap: &'static str, value: i64) -> Result<usize, HwDebugError> {
    match usize::try_from(value) {
        Ok(n) if n <= KVM_ARM_MAX_DBG_REGS => Ok(n),
        _ => Err(HwDebugError::BadCapacity { cap, value }),
    }
}

impl HwDebug {
    /// An empty pool of `max_bps` breakpoints and `max_wps` watchpoints (each at most 16).
    pub fn new(max_bps: usize, max_wps: usize) -> Result<Self, HwDebugError> {
        let max_bps = capacity("KVM_CAP_GUEST_DEBUG_HW_BPS", max_bps as i64)?;
        let max_wps = capacity("KVM_CAP_GUEST_DEBUG_HW_WPS", max_wps as i64)?;
        Ok(HwDebug {
            max_bps,
            max_wps,
            bps: [None; KVM_ARM_MAX_DBG_REGS],
            wps: [None; KVM_ARM_MAX_DBG_REGS],
            watches: Vec::new(),
        })
    }

    /// An empty pool sized by the vcpu's KVM_CAP_GUEST_DEBUG_HW_BPS / _WPS (0 when the kernel
    /// does not report them: then every insert fails with ENOBUFS).
    pub fn from_vcpu<V: DebugVcpu + ?Sized>(vcpu: &V) -> Result<Self, HwDebugError> {
        let bps = capacity(
            "KVM_CAP_GUEST_DEBUG_HW_BPS",
            vcpu.check_extension(KVM_CAP_GUEST_DEBUG_HW_BPS),
        )?;
        let wps = capacity(
            "KVM_CAP_GUEST_DEBUG_HW_WPS",
            vcpu.check_extension(KVM_CAP_GUEST_DEBUG_HW_WPS),
        )?;
        Self::new(bps, wps)
    }

    /// KVM_CAP_GUEST_DEBUG_HW_BPS.
    pub const fn max_breakpoints(&self) -> usize {
        self.max_bps
    }

    /// KVM_CAP_GUEST_DEBUG_HW_WPS.
    pub const fn max_watchpoints(&self) -> usize {
        self.max_wps
    }

    /// Insert a breakpoint at `addr` (canonical, word aligned) in the lowest free slot;
    /// returns the slot.
    pub fn insert_breakpoint(&mut self, addr: u64) -> Result<usize, HwDebugError> {
        check_breakpoint_addr(addr)?;
        if let Some(slot) = self.find_breakpoint(addr) {
            return Err(HwDebugError::DuplicateBreakpoint { addr, slot });
        }
        let slot = self.bps[..self.max_bps]
            .iter()
            .position(Option::is_none)
            .ok_or(HwDebugError::NoBreakpointSlot {
                addr,
                capacity: self.max_bps,
            })?;
        self.bps[slot] = Some(addr);
        Ok(slot)
    }

    /// Remove the breakpoint at `addr`; returns the slot it used (now zero).
    pub fn remove_breakpoint(&mut self, addr: u64) -> Result<usize, HwDebugError> {
        let slot = self
            .find_breakpoint(addr)
            .ok_or(HwDebugError::BreakpointNotFound { addr })?;
        self.bps[slot] = None;
        Ok(slot)
    }

    /// The slot of our breakpoint at `pc`, if any.
    pub fn find_breakpoint(&self, pc: u64) -> Option<usize> {
        self.bps[..self.max_bps].iter().position(|b| *b == Some(pc))
    }

    /// The breakpoints as `(slot, address)`.
    pub fn breakpoints(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.bps[..self.max_bps]
            .iter()
            .enumerate()
            .filter_map(|(n, b)| b.map(|a| (n, a)))
    }

    /// Insert a watch request: the fewest slots that fire on exactly its bytes. If the free
    /// slots cannot hold them, nothing changes. Returns the slots used.
    pub fn insert_watchpoint(&mut self, request: WatchRequest) -> Result<Vec<usize>, HwDebugError> {
        let encoded = encode_watchpoint(request.addr, request.len, request.access)?;
        if self.watches.iter().any(|w| w.request == request) {
            return Err(HwDebugError::DuplicateWatchpoint { request });
        }
        let free: Vec<usize> = (0..self.max_wps)
            .filter(|&n| self.wps[n].is_none())
            .collect();
        if encoded.len() > free.len() {
            return Err(HwDebugError::NoWatchpointSlots {
                request,
                needed: encoded.len(),
                free: free.len(),
                capacity: self.max_wps,
            });
        }
        let slots: Vec<usize> = free.into_iter().take(encoded.len()).collect();
        for (&n, s) in slots.iter().zip(encoded) {
            self.wps[n] = Some(s);
        }
        self.watches.push(WatchEntry {
            request,
            slots: slots.clone(),
        });
        Ok(slots)
    }

    /// Remove the watch request that was inserted with exactly this (address, length,
    /// access); returns the slots it freed (now zero).
    pub fn remove_watchpoint(&mut self, request: WatchRequest) -> Result<Vec<usize>, HwDebugError> {
        let i = self
            .watches
            .iter()
            .position(|w| w.request == request)
            .ok_or(HwDebugError::WatchpointNotFound { request })?;
        let entry = self.watches.remove(i);
        for &n in &entry.slots {
            self.wps[n] = None;
        }
        Ok(entry.slots)
    }

    /// The watch requests, in insertion order.
    pub fn watchpoints(&self) -> &[WatchEntry] {
        &self.watches
    }

    /// Remove every breakpoint and watchpoint: every slot is zero afterwards.
    pub fn remove_all(&mut self) {
        self.bps = [None; KVM_ARM_MAX_DBG_REGS];
        self.wps = [None; KVM_ARM_MAX_DBG_REGS];
        self.watches.clear();
    }

    /// Whether any hardware slot is live.
    pub fn is_active(&self) -> bool {
        self.bps.iter().any(Option::is_some) || self.wps.iter().any(Option::is_some)
    }

    /// Slots in use: (breakpoints, watchpoints).
    pub fn used(&self) -> (usize, usize) {
        (
            self.bps.iter().filter(|b| b.is_some()).count(),
            self.wps.iter().filter(|w| w.is_some()).count(),
        )
    }

    /// The watchpoint slot `n`, if a request uses it.
    pub fn watch_slot(&self, n: usize) -> Option<WpSlot> {
        self.wps.get(n).copied().flatten()
    }

    /// Attribute a watchpoint exit: among the requests that watch the direction (`is_write`:
    /// ESR.WnR), the first whose bytes contain `far`; else the one nearest to `far`
    /// (Linux's `get_distance_from_watchpoint`: FAR may lie below the watched bytes for a
    /// wide access, a pair or DC ZVA). `None` when no request watches that direction.
    pub fn find_watchpoint(&self, far: u64, is_write: bool) -> Option<WatchHit> {
        let mut best: Option<(u64, &WatchEntry)> = None;
        for w in self
            .watches
            .iter()
            .filter(|w| w.request.access.matches(is_write))
        {
            let d = w.request.distance(far);
            if best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, w));
            }
        }
        let (d, entry) = best?;
        let slot = entry
            .slots
            .iter()
            .copied()
            .min_by_key(|&n| {
                self.wps[n]
                    .and_then(|s| s.watched())
                    .map_or(u64::MAX, |(lo, hi)| distance(far, lo, hi))
            })
            .unwrap_or(0);
        Some(WatchHit {
            request: entry.request,
            slot,
            exact: d == 0,
        })
    }

    /// The block handed to KVM: live slots only, zeros everywhere else.
    pub fn arch(&self) -> KvmGuestDebugArch {
        let mut a = KvmGuestDebugArch::default();
        for (n, addr) in self.breakpoints() {
            a.dbg_bcr[n] = BREAKPOINT_BCR;
            a.dbg_bvr[n] = addr;
        }
        for (n, s) in self.wps.iter().enumerate() {
            if let Some(s) = s {
                a.dbg_wcr[n] = s.wcr;
                a.dbg_wvr[n] = s.wvr;
            }
        }
        a
    }

    /// KVM_SET_GUEST_DEBUG's argument for this pool: ENABLE whenever anything is on, USE_HW
    /// only when a hardware slot is live, USE_SW_BP when `sw_breakpoints`, SINGLESTEP when
    /// `stepping`. With nothing on, `control` is 0 (debugging off: the guest gets its own
    /// debug registers back).
    pub fn guest_debug(&self, sw_breakpoints: bool, stepping: bool) -> KvmGuestDebug {
        guest_debug_for(self.arch(), sw_breakpoints, stepping)
    }
}

/// `struct kvm_guest_debug` for a block: USE_HW exactly when the block has an enabled slot.
pub fn guest_debug_for(
    arch: KvmGuestDebugArch,
    sw_breakpoints: bool,
    stepping: bool,
) -> KvmGuestDebug {
    let hw = arch.dbg_bcr.iter().chain(&arch.dbg_wcr).any(|c| c & 1 != 0);
    let mut control = GuestDebugControl::empty();
    if hw {
        control |= GuestDebugControl::USE_HW;
    }
    if sw_breakpoints {
        control |= GuestDebugControl::USE_SW_BP;
    }
    if stepping {
        control |= GuestDebugControl::SINGLESTEP;
    }
    if !control.is_empty() {
        control |= GuestDebugControl::ENABLE;
    }
    KvmGuestDebug {
        control: control.bits(),
        pad: 0,
        arch: if hw {
            arch
        } else {
            KvmGuestDebugArch::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::WatchAccess;

    fn req(addr: u64, len: u64) -> WatchRequest {
        WatchRequest::new(addr, len, WatchAccess::Write)
    }

    #[test]
    fn breakpoints_fill_lowest_slots_and_errors_name_the_case() {
        let mut hw = HwDebug::new(2, 2).unwrap();
        assert_eq!(hw.insert_breakpoint(0x1000).unwrap(), 0);
        assert_eq!(hw.insert_breakpoint(0x2000).unwrap(), 1);
        let e = hw.insert_breakpoint(0x3000).unwrap_err();
        assert_eq!(e.errno(), crate::Errno::Enobufs);
        assert!(
            e.to_string().contains("0x3000") && e.to_string().contains("all 2"),
            "{e}"
        );
        let e = hw.insert_breakpoint(0x1000).unwrap_err();
        assert_eq!(e.errno(), crate::Errno::Eexist);
        assert_eq!(hw.remove_breakpoint(0x1000).unwrap(), 0);
        let e = hw.remove_breakpoint(0x1000).unwrap_err();
        assert_eq!(e.errno(), crate::Errno::Enoent);
        assert_eq!(hw.arch().dbg_bcr[0], 0);
        assert_eq!(
            (hw.arch().dbg_bcr[1], hw.arch().dbg_bvr[1]),
            (0x1e7, 0x2000)
        );
        assert_eq!(hw.insert_breakpoint(0x3000).unwrap(), 0);
    }

    #[test]
    fn capacity_is_checked() {
        assert!(HwDebug::new(17, 2).is_err());
        let e = HwDebug::new(2, 99).unwrap_err();
        assert!(e.to_string().contains("99"), "{e}");
        let mut none = HwDebug::new(0, 0).unwrap();
        assert!(none.insert_breakpoint(0x1000).is_err());
        assert!(none.insert_watchpoint(req(0x1000, 1)).is_err());
    }

    #[test]
    fn watch_insert_that_does_not_fit_changes_nothing() {
        let mut hw = HwDebug::new(2, 2).unwrap();
        hw.insert_watchpoint(req(0x1000, 8)).unwrap();
        let before = hw.clone();
        let e = hw.insert_watchpoint(req(0x2004, 8)).unwrap_err();
        assert!(
            matches!(
                e,
                HwDebugError::NoWatchpointSlots {
                    needed: 2,
                    free: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(hw, before);
        assert_eq!(hw.insert_watchpoint(req(0x2000, 8)).unwrap(), vec![1]);
    }

    #[test]
    fn watch_removal_is_by_exact_request() {
        let mut hw = HwDebug::new(2, 4).unwrap();
        hw.insert_watchpoint(req(0x1000, 16)).unwrap();
        assert!(hw.remove_watchpoint(req(0x1004, 1)).is_err());
        assert!(
            hw.remove_watchpoint(WatchRequest::new(0x1000, 16, WatchAccess::Read))
                .is_err()
        );
        assert_eq!(hw.remove_watchpoint(req(0x1000, 16)).unwrap(), vec![0]);
        assert!(!hw.is_active());
        assert_eq!(hw.arch(), KvmGuestDebugArch::default());
    }

    #[test]
    fn guest_debug_control_bits() {
        let mut hw = HwDebug::new(2, 2).unwrap();
        assert_eq!(hw.guest_debug(false, false).control, 0);
        let c = GuestDebugControl::from_bits_retain(hw.guest_debug(true, false).control);
        assert_eq!(c, GuestDebugControl::ENABLE | GuestDebugControl::USE_SW_BP);
        hw.insert_watchpoint(req(0x1000, 2)).unwrap();
        let c = GuestDebugControl::from_bits_retain(hw.guest_debug(false, true).control);
        assert_eq!(
            c,
            GuestDebugControl::ENABLE | GuestDebugControl::USE_HW | GuestDebugControl::SINGLESTEP
        );
    }

    #[test]
    fn hits_are_attributed_by_bytes_then_distance_and_direction() {
        let mut hw = HwDebug::new(2, 4).unwrap();
        hw.insert_watchpoint(req(0x1006, 4)).unwrap(); // slots 0 (0x1006..8) and 1 (0x1008..a)
        hw.insert_watchpoint(WatchRequest::new(0x2000, 8, WatchAccess::Read))
            .unwrap();
        let h = hw.find_watchpoint(0x1009, true).unwrap();
        assert_eq!((h.request, h.slot, h.exact), (req(0x1006, 4), 1, true));
        // Last byte included, one past the end is not "in" (but nearest).
        assert!(hw.find_watchpoint(0x1009, true).unwrap().exact);
        assert!(!hw.find_watchpoint(0x100a, true).unwrap().exact);
        // A 16-byte store reported at its aligned start, below the watched bytes.
        let h = hw.find_watchpoint(0x1000, true).unwrap();
        assert_eq!((h.request, h.slot, h.exact), (req(0x1006, 4), 0, false));
        // Direction filters: a load near 0x1006 belongs to the read watch.
        let h = hw.find_watchpoint(0x1006, false).unwrap();
        assert_eq!(h.request.addr, 0x2000);
        hw.remove_all();
        assert!(hw.find_watchpoint(0x1006, false).is_none());
    }
}
