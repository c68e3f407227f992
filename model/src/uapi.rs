//! `#[repr(C)]` mirrors of the arm64 KVM debug UAPI (arch/arm64/include/uapi/asm/kvm.h,
//! include/uapi/linux/kvm.h), with their layout pinned at compile time.
//!
//! `kvm-bindings` exposes these structs only when compiling for an Arm target; the mirrors
//! work everywhere and convert to the real ones on aarch64.

use bitflags::bitflags;
use serde::{Deserialize, Serialize};
use static_assertions::{assert_eq_align, assert_eq_size, const_assert_eq};

use crate::KVM_ARM_MAX_DBG_REGS;
use crate::sysreg::DbgBank;

/// `struct kvm_guest_debug_arch`: what userspace hands to KVM_SET_GUEST_DEBUG with USE_HW.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvmGuestDebugArch {
    /// DBGBCR\<n>_EL1.
    pub dbg_bcr: [u64; KVM_ARM_MAX_DBG_REGS],
    /// DBGBVR\<n>_EL1.
    pub dbg_bvr: [u64; KVM_ARM_MAX_DBG_REGS],
    /// DBGWCR\<n>_EL1.
    pub dbg_wcr: [u64; KVM_ARM_MAX_DBG_REGS],
    /// DBGWVR\<n>_EL1.
    pub dbg_wvr: [u64; KVM_ARM_MAX_DBG_REGS],
}

impl KvmGuestDebugArch {
    /// One bank of the block.
    #[inline(always)]
    pub fn bank(&self, bank: DbgBank) -> &[u64; KVM_ARM_MAX_DBG_REGS] {
        match bank {
            DbgBank::Bcr => &self.dbg_bcr,
            DbgBank::Bvr => &self.dbg_bvr,
            DbgBank::Wcr => &self.dbg_wcr,
            DbgBank::Wvr => &self.dbg_wvr,
        }
    }
    /// One bank of the block, mutable.
    #[inline(always)]
    pub fn bank_mut(&mut self, bank: DbgBank) -> &mut [u64; KVM_ARM_MAX_DBG_REGS] {
        match bank {
            DbgBank::Bcr => &mut self.dbg_bcr,
            DbgBank::Bvr => &mut self.dbg_bvr,
            DbgBank::Wcr => &mut self.dbg_wcr,
            DbgBank::Wvr => &mut self.dbg_wvr,
        }
    }
}

/// `struct kvm_guest_debug`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvmGuestDebug {
    /// KVM_GUESTDBG_* bits ([`GuestDebugControl`]).
    pub control: u32,
    /// Padding.
    pub pad: u32,
    /// The hardware breakpoints and watchpoints.
    pub arch: KvmGuestDebugArch,
}

/// `struct kvm_debug_exit_arch`, in `kvm_run.debug.arch` on KVM_EXIT_DEBUG.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvmDebugExitArch {
    /// ESR_EL2 bits \[31:0\].
    pub hsr: u32,
    /// ESR_EL2 bits \[63:32\], valid when `kvm_run.flags` has KVM_DEBUG_ARCH_HSR_HIGH_VALID.
    pub hsr_high: u32,
    /// FAR_EL2, valid for watchpoints only.
    pub far: u64,
}

assert_eq_size!(KvmGuestDebugArch, [u8; 512]);
assert_eq_align!(KvmGuestDebugArch, u64);
const_assert_eq!(core::mem::offset_of!(KvmGuestDebugArch, dbg_bcr), 0);
const_assert_eq!(core::mem::offset_of!(KvmGuestDebugArch, dbg_bvr), 128);
const_assert_eq!(core::mem::offset_of!(KvmGuestDebugArch, dbg_wcr), 256);
const_assert_eq!(core::mem::offset_of!(KvmGuestDebugArch, dbg_wvr), 384);
assert_eq_size!(KvmGuestDebug, [u8; 520]);
assert_eq_align!(KvmGuestDebug, u64);
const_assert_eq!(core::mem::offset_of!(KvmGuestDebug, control), 0);
const_assert_eq!(core::mem::offset_of!(KvmGuestDebug, pad), 4);
const_assert_eq!(core::mem::offset_of!(KvmGuestDebug, arch), 8);
assert_eq_size!(KvmDebugExitArch, [u8; 16]);
assert_eq_align!(KvmDebugExitArch, u64);
const_assert_eq!(core::mem::offset_of!(KvmDebugExitArch, hsr), 0);
const_assert_eq!(core::mem::offset_of!(KvmDebugExitArch, hsr_high), 4);
const_assert_eq!(core::mem::offset_of!(KvmDebugExitArch, far), 8);

bitflags! {
    /// `kvm_guest_debug.control` (KVM_GUESTDBG_*); any other bit is -EINVAL on arm64.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct GuestDebugControl: u32 {
        /// KVM_GUESTDBG_ENABLE.
        const ENABLE = 1 << 0;
        /// KVM_GUESTDBG_SINGLESTEP.
        const SINGLESTEP = 1 << 1;
        /// KVM_GUESTDBG_USE_SW_BP.
        const USE_SW_BP = 1 << 16;
        /// KVM_GUESTDBG_USE_HW.
        const USE_HW = 1 << 17;
    }
}

/// The bits arm64 KVM accepts (KVM_GUESTDBG_VALID_MASK).
pub const KVM_GUESTDBG_VALID_MASK: u32 = GuestDebugControl::all().bits();

const_assert_eq!(
    GuestDebugControl::ENABLE.bits(),
    kvm_bindings::KVM_GUESTDBG_ENABLE
);
const_assert_eq!(
    GuestDebugControl::SINGLESTEP.bits(),
    kvm_bindings::KVM_GUESTDBG_SINGLESTEP
);
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
const_assert_eq!(
    GuestDebugControl::USE_SW_BP.bits(),
    kvm_bindings::KVM_GUESTDBG_USE_SW_BP
);
// arm64's KVM_GUESTDBG_USE_HW is bit 17, the same bit as x86's KVM_GUESTDBG_USE_HW_BP.
#[cfg(target_arch = "aarch64")]
const_assert_eq!(
    GuestDebugControl::USE_HW.bits(),
    kvm_bindings::KVM_GUESTDBG_USE_HW
);
#[cfg(target_arch = "x86_64")]
const_assert_eq!(
    GuestDebugControl::USE_HW.bits(),
    kvm_bindings::KVM_GUESTDBG_USE_HW_BP
);

/// KVM_EXIT_DEBUG.
pub const KVM_EXIT_DEBUG: u32 = kvm_bindings::KVM_EXIT_DEBUG;
/// `kvm_run.flags` bit: `hsr_high` is valid.
pub const KVM_DEBUG_ARCH_HSR_HIGH_VALID: u32 = 1;
#[cfg(target_arch = "aarch64")]
const_assert_eq!(
    KVM_DEBUG_ARCH_HSR_HIGH_VALID,
    kvm_bindings::KVM_DEBUG_ARCH_HSR_HIGH_VALID
);
/// KVM_CAP_SET_GUEST_DEBUG.
pub const KVM_CAP_SET_GUEST_DEBUG: u32 = kvm_bindings::KVM_CAP_SET_GUEST_DEBUG;
/// KVM_CAP_GUEST_DEBUG_HW_BPS: the number of hardware breakpoints.
pub const KVM_CAP_GUEST_DEBUG_HW_BPS: u32 = kvm_bindings::KVM_CAP_GUEST_DEBUG_HW_BPS;
/// KVM_CAP_GUEST_DEBUG_HW_WPS: the number of hardware watchpoints.
pub const KVM_CAP_GUEST_DEBUG_HW_WPS: u32 = kvm_bindings::KVM_CAP_GUEST_DEBUG_HW_WPS;
/// KVM_CAP_SET_GUEST_DEBUG2: the control bits supported.
pub const KVM_CAP_SET_GUEST_DEBUG2: u32 = kvm_bindings::KVM_CAP_SET_GUEST_DEBUG2;

#[cfg(target_arch = "aarch64")]
mod conv {
    //! The mirrors and kvm-bindings' arm64 structs are interchangeable.
    use super::*;

    impl From<KvmGuestDebugArch> for kvm_bindings::kvm_guest_debug_arch {
        fn from(a: KvmGuestDebugArch) -> Self {
            kvm_bindings::kvm_guest_debug_arch {
                dbg_bcr: a.dbg_bcr,
                dbg_bvr: a.dbg_bvr,
                dbg_wcr: a.dbg_wcr,
                dbg_wvr: a.dbg_wvr,
            }
        }
    }
    impl From<kvm_bindings::kvm_guest_debug_arch> for KvmGuestDebugArch {
        fn from(a: kvm_bindings::kvm_guest_debug_arch) -> Self {
            KvmGuestDebugArch {
                dbg_bcr: a.dbg_bcr,
                dbg_bvr: a.dbg_bvr,
                dbg_wcr: a.dbg_wcr,
                dbg_wvr: a.dbg_wvr,
            }
        }
    }
    impl From<KvmGuestDebug> for kvm_bindings::kvm_guest_debug {
        fn from(d: KvmGuestDebug) -> Self {
            kvm_bindings::kvm_guest_debug {
                control: d.control,
                pad: d.pad,
                arch: d.arch.into(),
            }
        }
    }
    impl From<kvm_bindings::kvm_guest_debug> for KvmGuestDebug {
        fn from(d: kvm_bindings::kvm_guest_debug) -> Self {
            KvmGuestDebug {
                control: d.control,
                pad: d.pad,
                arch: d.arch.into(),
            }
        }
    }
    impl From<kvm_bindings::kvm_debug_exit_arch> for KvmDebugExitArch {
        fn from(e: kvm_bindings::kvm_debug_exit_arch) -> Self {
            KvmDebugExitArch {
                hsr: e.hsr,
                hsr_high: e.hsr_high,
                far: e.far,
            }
        }
    }
    impl From<KvmDebugExitArch> for kvm_bindings::kvm_debug_exit_arch {
        fn from(e: KvmDebugExitArch) -> Self {
            kvm_bindings::kvm_debug_exit_arch {
                hsr: e.hsr,
                hsr_high: e.hsr_high,
                far: e.far,
            }
        }
    }
    static_assertions::assert_eq_size!(KvmGuestDebug, kvm_bindings::kvm_guest_debug);
    static_assertions::assert_eq_size!(KvmDebugExitArch, kvm_bindings::kvm_debug_exit_arch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bits_and_capabilities() {
        assert_eq!(KVM_GUESTDBG_VALID_MASK, 0x3_0003);
        assert_eq!(KVM_EXIT_DEBUG, 4);
        assert_eq!(
            (
                KVM_CAP_SET_GUEST_DEBUG,
                KVM_CAP_GUEST_DEBUG_HW_BPS,
                KVM_CAP_GUEST_DEBUG_HW_WPS
            ),
            (23, 119, 120)
        );
        assert_eq!(KVM_CAP_SET_GUEST_DEBUG2, 195);
        assert!(GuestDebugControl::from_bits(1 << 3).is_none());
    }

    #[test]
    fn sys_reg_ids() {
        assert_eq!(VBAR_EL1_ID, 0x6030_0000_0013_c600);
        assert_eq!(
            sys_reg_id(2, 0, 0, 2, 2),
            crate::SysReg::MdscrEl1.one_reg_id()
        );
        assert_eq!(core_reg::SP_EL1, 0x6030_0000_0010_0044);
    }

    #[test]
    fn banks_address_the_right_arrays() {
        let mut a = KvmGuestDebugArch::default();
        for (i, bank) in DbgBank::ALL.into_iter().enumerate() {
            a.bank_mut(bank)[3] = i as u64 + 1;
        }
        assert_eq!(
            (a.dbg_bcr[3], a.dbg_bvr[3], a.dbg_wcr[3], a.dbg_wvr[3]),
            (1, 2, 3, 4)
        );
        assert_eq!(a.bank(DbgBank::Wvr)[3], 4);
    }
}

/// KVM_REG_ARM_CORE ids (`KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offset/4` into
/// `struct kvm_regs`): the core registers a debugger reads at a debug exit.
pub mod core_reg {
    const PREFIX: u64 = 0x6030_0000_0010_0000;
    /// `regs.regs[n]`, n in 0..=30.
    pub const fn x(n: u8) -> u64 {
        PREFIX | (n as u64 * 2)
    }
    /// `regs.sp`.
    pub const SP: u64 = PREFIX | 62;
    /// `regs.pc`.
    pub const PC: u64 = PREFIX | 64;
    /// `regs.pstate`.
    pub const PSTATE: u64 = PREFIX | 66;
    /// `sp_el1`.
    pub const SP_EL1: u64 = PREFIX | 68;
    /// `elr_el1`.
    pub const ELR_EL1: u64 = PREFIX | 70;
    /// `spsr[KVM_SPSR_EL1]`.
    pub const SPSR_EL1: u64 = PREFIX | 72;
}

/// The ONE_REG id of the AArch64 system register (op0, op1, CRn, CRm, op2)
/// (`ARM64_SYS_REG`), e.g. VBAR_EL1 = (3, 0, 12, 0, 0).
pub const fn sys_reg_id(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> u64 {
    0x6030_0000_0013_0000
        | (op0 as u64) << 14
        | (op1 as u64) << 11
        | (crn as u64) << 7
        | (crm as u64) << 3
        | op2 as u64
}

/// VBAR_EL1's ONE_REG id.
pub const VBAR_EL1_ID: u64 = sys_reg_id(3, 0, 12, 0, 0);
