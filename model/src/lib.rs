//! The AArch64 self-hosted debug architecture, as the KVM arm64 world switch and a VMM see it.
//!
//! This crate is the foundation of hypdbg. It knows nothing about KVM's logic; it states what
//! the architecture (Arm ARM DDI 0487) and the KVM UAPI define:
//!
//! - [`dfr0`]: ID_AA64DFR0_EL1 and the "count minus one" fields (decoded with `arm-sysregs`);
//! - [`profiles`]: real CPUs' ID_AA64DFR0_EL1 values and the synthetic `min`/`max`;
//! - [`bcr`], [`wcr`]: DBGBCR\<n>_EL1 / DBGWCR\<n>_EL1 control words, builders and decoders;
//! - [`va`]: the VA-size sign-extension (RESS) rule of DBGBVR/DBGWVR;
//! - [`matching`]: AArch64.BreakpointMatch / WatchpointMatch / StateMatch, reporting
//!   CONSTRAINED UNPREDICTABLE cases instead of guessing;
//! - [`gating`]: AArch64.GenerateDebugExceptionsFrom and routing to EL1 or EL2;
//! - [`insn`]: the A64 encodings a debugger writes (BRK);
//! - [`guest_abi`]: the memory map, exception runtime and doorbell stops every hypdbg guest
//!   shares with both backends;
//! - [`esr`]: exception classes and syndromes (ESR_ELx), decoded with `arm-sysregs`;
//! - [`sysreg`]: the debug system registers by name and encoding, ONE_REG ids;
//! - [`regfile`]: a physical CPU's debug register file with only the implemented registers;
//! - [`ctrl`]: MDSCR_EL1 and MDCR_EL2 helpers;
//! - [`uapi`]: `#[repr(C)]` mirrors of the arm64 KVM structs, layout pinned;
//! - [`words`]: MDSCR_EL1, MDCR_EL2 and KVM_GUESTDBG_* in one line of words;
//! - [`explain`]: every register value explained in words (the CLI's `decode`);
//! - [`vcpu`]: the vcpu operations a debugger needs ([`vcpu::DebugVcpu`]), the seam between
//!   the VMM side and a simulator or real kernel;
//! - [`sync`]: the synchronisation types shared state uses (`std`, or `loom` under
//!   `--cfg loom`), so the loom models explore the exact code.

pub mod bcr;
pub mod bits;
pub mod ctrl;
pub mod dfr0;
pub mod error;
pub mod esr;
pub mod explain;
pub mod gating;
pub mod guest_abi;
pub mod insn;
pub mod matching;
pub mod profiles;
pub mod regfile;
pub mod sync;
pub mod sysreg;
pub mod uapi;
pub mod va;
pub mod vcpu;
pub mod wcr;
pub mod words;

pub use bcr::Dbgbcr;
pub use dfr0::DebugFeatures;
pub use error::ModelError;
pub use regfile::DebugRegFile;
pub use sysreg::{DbgBank, SysReg};
pub use wcr::Dbgwcr;

/// The maximum number of breakpoint or watchpoint register pairs (KVM_ARM_MAX_DBG_REGS).
pub const KVM_ARM_MAX_DBG_REGS: usize = 16;

/// An exception level a guest runs at (the guest never runs at EL2 or EL3 in this model).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum El {
    /// EL0, unprivileged.
    El0,
    /// EL1, the guest kernel.
    El1,
    /// EL2, the hypervisor (debug exceptions routed here when MDCR_EL2.TDE is set).
    El2,
}

impl El {
    /// The numeric exception level.
    pub const fn number(self) -> u8 {
        match self {
            El::El0 => 0,
            El::El1 => 1,
            El::El2 => 2,
        }
    }

    /// Parse 0, 1 or 2.
    pub fn from_number(n: u64) -> Result<Self, ModelError> {
        match n {
            0 => Ok(El::El0),
            1 => Ok(El::El1),
            2 => Ok(El::El2),
            _ => Err(ModelError::BadField {
                what: "exception level",
                value: n,
                rule: "a guest runs at EL0 or EL1 (EL2 is the hypervisor)",
            }),
        }
    }
}

impl std::fmt::Display for El {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EL{}", self.number())
    }
}

/// Parse a number written as 0x-hex, 0b-binary or decimal (underscores allowed), as the CLI
/// and scenario files accept it.
///
/// ```
/// assert_eq!(hypdbg_model::parse_u64("0x1e7").unwrap(), 0x1e7);
/// assert_eq!(hypdbg_model::parse_u64("4_096").unwrap(), 4096);
/// assert!(hypdbg_model::parse_u64("0xzz").is_err());
/// ```
pub fn parse_u64(text: &str) -> Result<u64, ModelError> {
    let t = text.trim().replace('_', "");
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        (b, 2)
    } else {
        (t.as_str(), 10)
    };
    if digits.is_empty() {
        return Err(ModelError::BadNumber {
            text: text.to_string(),
        });
    }
    u64::from_str_radix(digits, radix).map_err(|_| ModelError::BadNumber {
        text: text.to_string(),
    })
}
