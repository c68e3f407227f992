//! Built-in CPU profiles: real ID_AA64DFR0_EL1 values (QEMU's CPU models and public dumps),
//! plus the synthetic extremes `min` (2 breakpoints, 2 watchpoints) and `max` (16/16).

use crate::dfr0::DebugFeatures;
use crate::error::ModelError;
use crate::parse_u64;

/// A named CPU and its ID_AA64DFR0_EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuProfile {
    /// The name used on the command line.
    pub name: &'static str,
    /// ID_AA64DFR0_EL1.
    pub dfr0: u64,
    /// Where the value comes from.
    pub source: &'static str,
}

/// The built-in table.
pub const PROFILES: &[CpuProfile] = &[
    CpuProfile {
        name: "min",
        dfr0: 0x0010_1006,
        source: "synthetic: 2 breakpoints, 2 watchpoints, 1 context-aware",
    },
    CpuProfile {
        name: "cortex-a53",
        dfr0: 0x1030_5106,
        source: "QEMU cortex-a53",
    },
    CpuProfile {
        name: "cortex-a57",
        dfr0: 0x1030_5106,
        source: "QEMU cortex-a57",
    },
    CpuProfile {
        name: "cortex-a72",
        dfr0: 0x1030_5106,
        source: "QEMU cortex-a72",
    },
    CpuProfile {
        name: "cortex-a55",
        dfr0: 0x1030_5408,
        source: "QEMU cortex-a55",
    },
    CpuProfile {
        name: "cortex-a76",
        dfr0: 0x1030_5408,
        source: "QEMU cortex-a76",
    },
    CpuProfile {
        name: "neoverse-n1",
        dfr0: 0x1_1030_5408,
        source: "QEMU neoverse-n1",
    },
    CpuProfile {
        name: "neoverse-v1",
        dfr0: 0x1f2_1030_5519,
        source: "QEMU neoverse-v1",
    },
    CpuProfile {
        name: "cortex-a710",
        dfr0: 0x11f0_1030_5619,
        source: "QEMU cortex-a710",
    },
    CpuProfile {
        name: "max",
        dfr0: 0x10f0_f006,
        source: "synthetic: 16 breakpoints (the top 2 context-aware), 16 watchpoints",
    },
];

impl CpuProfile {
    /// The decoded features (every built-in value is valid).
    pub fn features(&self) -> Result<DebugFeatures, ModelError> {
        DebugFeatures::new(self.dfr0)
    }
}

/// A profile by name.
pub fn by_name(name: &str) -> Result<&'static CpuProfile, ModelError> {
    PROFILES
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| ModelError::UnknownCpu {
            name: name.to_string(),
            known: PROFILES
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Parse a `--cpu` argument: a profile name, `all`, or a raw ID_AA64DFR0_EL1 value.
/// Returns (label, features) pairs.
///
/// ```
/// use hypdbg_model::profiles::parse_cpu;
/// assert_eq!(parse_cpu("all").unwrap().len(), 10);
/// let raw = parse_cpu("0x10305106").unwrap();
/// assert_eq!(raw[0].1.num_brps(), 6);
/// assert!(parse_cpu("0x5106").is_err()); // WRPs = 0
/// assert!(parse_cpu("pentium").is_err());
/// ```
pub fn parse_cpu(spec: &str) -> Result<Vec<(String, DebugFeatures)>, ModelError> {
    let spec = spec.trim();
    if spec.eq_ignore_ascii_case("all") {
        return PROFILES
            .iter()
            .map(|p| Ok((p.name.to_string(), p.features()?)))
            .collect();
    }
    if spec.starts_with(|c: char| c.is_ascii_digit()) {
        let raw = parse_u64(spec)?;
        return Ok(vec![(format!("{raw:#x}"), DebugFeatures::new(raw)?)]);
    }
    let p = by_name(spec)?;
    Ok(vec![(p.name.to_string(), p.features()?)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_is_valid_and_has_the_published_counts() {
        for p in PROFILES {
            let f = p.features().unwrap();
            let want = match p.name {
                "min" => (2, 2),
                "max" => (16, 16),
                _ => (6, 4),
            };
            assert_eq!((f.num_brps(), f.num_wrps()), want, "{}", p.name);
            if !matches!(p.name, "min" | "max") {
                assert_eq!(f.num_ctx_cmps(), 2, "{}", p.name);
            }
        }
        assert_eq!(by_name("Cortex-A57").unwrap().dfr0, 0x1030_5106);
        let e = by_name("m1").unwrap_err().to_string();
        assert!(e.contains("cortex-a710") && e.contains("m1"), "{e}");
    }
}
