//! Virtual-address size rules for DBGBVR\<n>_EL1 / DBGWVR\<n>_EL1.
//!
//! Without FEAT_LVA the debug comparators hold VA bits \[48:2\]; bits \[63:49\] are RESS, a sign
//! extension of bit 48 (Arm ARM pseudocode `DebugAddrTop()` = 48, `BreakpointValueMatch`:
//! "DBGBVR<63:dbgtop> is neither all zeros nor all ones" is CONSTRAINED UNPREDICTABLE).

/// The top VA bit the comparators use without FEAT_LVA (Arm ARM `DebugAddrTop()`).
pub const DEBUG_ADDR_TOP: u32 = 48;

/// Bits [63:DEBUG_ADDR_TOP], the RESS sign bits plus the top VA bit they must copy.
const RESS_MASK: u64 = !((1u64 << DEBUG_ADDR_TOP) - 1);

/// Whether `value`'s bits \[63:48\] are all zeros or all ones, as RESS requires
/// (Arm ARM `BreakpointValueMatch`, DBGxVR_RESS).
///
/// ```
/// use hypdbg_model::va::is_sign_extended;
/// assert!(is_sign_extended(0xffff_8000_0000_1000));
/// assert!(is_sign_extended(0x0000_7fff_0000_1000));
/// assert!(!is_sign_extended(0x0000_ffff_0000_1000 | 1 << 48)); // masked kernel address
/// ```
pub const fn is_sign_extended(value: u64) -> bool {
    let top = value & RESS_MASK;
    top == 0 || top == RESS_MASK
}

/// Sign-extend bit 48 of `addr` into bits \[63:49\]: the value a debugger writes to DBGxVR
/// (never a mask, which would turn a kernel address into an unmatched or UNPREDICTABLE one).
pub const fn sign_extend(addr: u64) -> u64 {
    let shift = 63 - DEBUG_ADDR_TOP;
    (((addr << shift) as i64) >> shift) as u64
}

/// Bits \[top:lsb\] of `value`, the part of an address the comparators see.
pub const fn compare_bits(value: u64, lsb: u32) -> u64 {
    let width = DEBUG_ADDR_TOP + 1 - lsb;
    (value >> lsb) & ((1u64 << width) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_extension_is_idempotent_and_canonical() {
        for a in [
            0u64,
            0x1000,
            0x0000_ffff_ffff_fffc,
            0xffff_0000_0000_0000,
            0x0001_0000_0000_0000,
        ] {
            let s = sign_extend(a);
            assert!(is_sign_extended(s));
            assert_eq!(sign_extend(s), s);
        }
        assert_eq!(sign_extend(0x0001_0000_0000_0000), 0xffff_0000_0000_0000);
        assert_eq!(sign_extend(0x0000_8000_0000_0000), 0x0000_8000_0000_0000);
    }

    #[test]
    fn compare_bits_drop_ress_and_low_bits() {
        assert_eq!(
            compare_bits(0xffff_0000_0000_0004, 2),
            (0x1_0000_0000_0004u64 >> 2)
        );
        assert_eq!(compare_bits(0x7, 3), 0);
    }
}
