//! The kernel's debug logic, era by era, as traits whose default methods are the reference
//! code and whose every method is a kernel function a variant (a patch under test, or a
//! mutant from the bug catalog) may override.
//!
//! - [`Common`]: what every era shares: the debug-sr.h save/restore core, the MDCR_EL2
//!   save/restore around a run, the sys_regs.c accessors and `kvm_skip_instr`.
//! - [`DebugDirty`]: eras 1 and 2 (DEBUG_DIRTY, `debug_ptr`, per-vcpu host save area).
//! - [`Era1`] (v4.5..v4.16), [`Era2`] (v4.17..v6.13), [`Era3`] (v6.14+, debug owner).
//!
//! The simulator drives a flow through [`EraEngine`] (one adapter per era) and, behind a
//! `dyn`, through [`DynFlow`].

pub mod common;
mod engine;
pub mod era1;
pub mod era2;
pub mod era3;

pub use common::{Common, DebugCounts, SysRegParams, TrapOutcome, mdcr_el2_base, valid_control};
pub use engine::{
    AnyAccess, DynFlow, Era1Engine, Era2Engine, Era2PercpuEngine, Era3Engine, EraEngine,
};
pub use era1::{DebugDirty, Era1, Era1Reference};
pub use era2::{Era2, Era2Reference};
pub use era3::{Era3, Era3Protected, Era3Reference};

use serde::Serialize;

/// The three eras of the kernel's logic.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub enum Era {
    /// v4.5..v4.16: DEBUG_DIRTY decided in the world switch (the seed patch).
    #[serde(rename = "era1")]
    One,
    /// v4.17..v6.13: DEBUG_DIRTY decided in `kvm_arm_setup_debug`.
    #[serde(rename = "era2")]
    Two,
    /// v6.14+: debug owner decided at vcpu_load.
    #[serde(rename = "era3")]
    Three,
}

impl Era {
    /// `era1`, `era2`, `era3`.
    pub const fn name(self) -> &'static str {
        match self {
            Era::One => "era1",
            Era::Two => "era2",
            Era::Three => "era3",
        }
    }
    /// The name of the DEBUG_DIRTY flag in the kernels the era's reference reads:
    /// `KVM_ARM64_DEBUG_DIRTY` (v4.5..v5.19), `DEBUG_DIRTY` in `iflags` (v6.0+, era 2's
    /// v6.13); era 3 has none.
    pub const fn dirty_flag_name(self) -> &'static str {
        match self {
            Era::One => "KVM_ARM64_DEBUG_DIRTY",
            Era::Two => "DEBUG_DIRTY",
            Era::Three => "",
        }
    }
    /// The kernel versions.
    pub const fn kernels(self) -> &'static str {
        match self {
            Era::One => "v4.5..v4.16",
            Era::Two => "v4.17..v6.13",
            Era::Three => "v6.14+",
        }
    }
}

/// How the host kernel runs KVM: the hyp's world switch at EL2 under an EL1 host (nVHE,
/// `nvhe/switch.c`; also pKVM's protected hVHE and nVHE) or the host itself at EL2 (VHE,
/// `vhe/switch.c`, eras 2 and 3, v4.17+).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostMode {
    /// EL1 system registers and MDCR_EL2 switched on every entry and exit.
    #[default]
    Nvhe,
    /// EL1 system registers (but MDSCR_EL1) loaded at `vcpu_load` and saved at `vcpu_put`;
    /// MDCR_EL2 written at load, when `kvm_arm_setup_debug` changes it (era 2) or an access
    /// promotes ownership (era 3), and given back at put.
    Vhe,
}

impl HostMode {
    /// `nvhe` or `vhe`.
    pub const fn name(self) -> &'static str {
        match self {
            HostMode::Nvhe => "nvhe",
            HostMode::Vhe => "vhe",
        }
    }
}

impl std::fmt::Display for Era {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Era {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "era1" | "1" => Ok(Era::One),
            "era2" | "2" => Ok(Era::Two),
            "era3" | "3" => Ok(Era::Three),
            other => Err(format!("unknown era '{other}': use era1, era2 or era3")),
        }
    }
}
