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

/// One physical CPU as a scenario or the command line names it: a profile name or a raw
/// ID_AA64DFR0_EL1 value, parsed once into its label and decoded features. Written back as
/// the label (a string in scenario files).
///
/// ```
/// use hypdbg_model::profiles::CpuSpec;
/// let a57: CpuSpec = "cortex-a57".parse().unwrap();
/// assert_eq!((a57.label(), a57.features().num_brps()), ("cortex-a57", 6));
/// let raw: CpuSpec = "0x10305106".parse().unwrap();
/// assert_eq!(raw.to_string(), "0x10305106");
/// assert!("0x5106".parse::<CpuSpec>().is_err()); // WRPs = 0
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSpec {
    label: String,
    features: DebugFeatures,
}

impl CpuSpec {
    /// A CPU known by its features only, labelled with its raw ID_AA64DFR0_EL1 value.
    pub fn from_features(features: DebugFeatures) -> Self {
        CpuSpec {
            label: format!("{:#x}", features.raw()),
            features,
        }
    }

    /// A built-in profile.
    pub fn from_profile(p: &CpuProfile) -> Result<Self, ModelError> {
        Ok(CpuSpec {
            label: p.name.to_string(),
            features: p.features()?,
        })
    }

    /// The name as written (a profile name, or the raw value in hex).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The decoded ID_AA64DFR0_EL1.
    pub const fn features(&self) -> &DebugFeatures {
        &self.features
    }
}

impl std::str::FromStr for CpuSpec {
    type Err = ModelError;

    /// A profile name or a raw ID_AA64DFR0_EL1 value (`all` names several: see [`parse_cpu`]).
    fn from_str(spec: &str) -> Result<Self, ModelError> {
        let spec = spec.trim();
        if spec.starts_with(|c: char| c.is_ascii_digit()) {
            return DebugFeatures::new(parse_u64(spec)?).map(CpuSpec::from_features);
        }
        CpuSpec::from_profile(by_name(spec)?)
    }
}

impl std::fmt::Display for CpuSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl serde::Serialize for CpuSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label)
    }
}

impl<'de> serde::Deserialize<'de> for CpuSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("cpu '{text}': {e}")))
    }
}

/// Parse a `--cpu` argument: a profile name, `all` (every built-in profile), or a raw
/// ID_AA64DFR0_EL1 value.
///
/// ```
/// use hypdbg_model::profiles::parse_cpu;
/// assert_eq!(parse_cpu("all").unwrap().len(), 10);
/// let raw = parse_cpu("0x10305106").unwrap();
/// assert_eq!(raw[0].features().num_brps(), 6);
/// assert!(parse_cpu("0x5106").is_err()); // WRPs = 0
/// assert!(parse_cpu("pentium").is_err());
/// ```
pub fn parse_cpu(spec: &str) -> Result<Vec<CpuSpec>, ModelError> {
    if spec.trim().eq_ignore_ascii_case("all") {
        return PROFILES.iter().map(CpuSpec::from_profile).collect();
    }
    Ok(vec![spec.parse()?])
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
