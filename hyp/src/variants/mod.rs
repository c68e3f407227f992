//! The catalog of flows the validator runs: each era's reference, the historical defects of
//! docs/variants.md and the generic slips, each written as the kernel
//! function it changes, plus the user's own variants ([`user`]).
//!
//! A variant is a type implementing an era's traits with one function overridden; the
//! catalog builds a fresh instance for every simulation (a variant may keep state, like the
//! "global" slot of [`generic::HostStateSharedSlot`]).

pub mod generic;
pub mod historical;
pub mod user;

use std::sync::Arc;

use hypdbg_model::DebugFeatures;

use crate::flow::{
    DynFlow, Era, Era1Engine, Era1Reference, Era2Engine, Era2PercpuEngine, Era2Reference,
    Era3Engine, Era3Protected, Era3Reference, HostMode,
};

/// Builds a fresh instance of a variant's flow. A closure rather than a `fn` pointer, so that a
/// variant made at run time (a kernel tree's own C, loaded from a shared object) can capture
/// what it needs.
pub type MakeFlow = Arc<dyn Fn() -> Box<dyn DynFlow> + Send + Sync>;

/// A [`MakeFlow`] from a plain function (what every built-in variant uses).
pub fn make_fn(f: fn() -> Box<dyn DynFlow>) -> MakeFlow {
    Arc::new(f)
}

/// What a variant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantKind {
    /// A correct flow: must violate nothing.
    Reference,
    /// A defect that shipped: must be caught.
    Historical,
    /// An obvious slip: must be caught.
    Generic,
    /// A user's own variant (a patch under test): its verdict is the answer.
    User,
}

/// A named flow.
#[derive(Clone)]
pub struct Variant {
    /// The name on the command line.
    pub name: &'static str,
    /// Reference, historical, generic or user.
    pub kind: VariantKind,
    /// What it changes, in one line.
    pub description: &'static str,
    /// For historical defects: shipped / posted / hypothetical, with the source (kernel
    /// versions and the fix).
    pub fix: Option<&'static str>,
    /// A fresh instance.
    pub make: MakeFlow,
    /// When the change cannot be seen on CPUs of these features, why (a slip in how the
    /// counts are read makes no difference where the slip reads the same counts).
    pub hidden_on: Option<fn(&DebugFeatures) -> Option<&'static str>>,
    /// The host it runs on: nVHE (the catalog's), or VHE (`NAME@vhe`, eras 2 and 3).
    pub host: HostMode,
}

impl std::fmt::Debug for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variant")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("description", &self.description)
            .field("fix", &self.fix)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl VariantKind {
    /// `reference`, `historical`, `generic` or `user`.
    pub const fn name(self) -> &'static str {
        match self {
            VariantKind::Reference => "reference",
            VariantKind::Historical => "historical",
            VariantKind::Generic => "generic",
            VariantKind::User => "user",
        }
    }

    /// Whether the validator expects violations (historical and generic mutants).
    pub const fn is_mutant(self) -> bool {
        matches!(self, VariantKind::Historical | VariantKind::Generic)
    }
}

impl Variant {
    /// Whether the validator expects violations (historical and generic mutants).
    pub fn is_mutant(&self) -> bool {
        self.kind.is_mutant()
    }

    /// The era it modifies (its flow's).
    pub fn era(&self) -> Era {
        (self.make)().era()
    }

    /// Why this variant cannot be told apart from its era's reference on a CPU of `f`, if it
    /// cannot.
    pub fn hidden(&self, f: &DebugFeatures) -> Option<&'static str> {
        self.hidden_on.and_then(|h| h(f))
    }

    /// The same flow on a VHE host, where the kernels of its era have one (eras 2 and 3,
    /// outside pKVM's protected mode); `None` for a variant already on VHE.
    pub fn on_vhe(&self) -> Option<Variant> {
        let flow = (self.make)();
        let has_vhe = flow.era() != Era::One && !flow.protected_mode();
        (has_vhe && self.host == HostMode::Nvhe).then(|| Variant {
            host: HostMode::Vhe,
            ..self.clone()
        })
    }

    /// The name with its host: `era3`, or `era3@vhe`.
    pub fn label(&self) -> String {
        match self.host {
            HostMode::Nvhe => self.name.to_string(),
            HostMode::Vhe => format!("{}@vhe", self.name),
        }
    }
}

/// The references: one per era, and era 3 under pKVM.
pub fn references() -> Vec<Variant> {
    vec![
        Variant {
            name: "era1",
            kind: VariantKind::Reference,
            description: "v4.5 structure (KVM_ARM64_DEBUG_DIRTY decided in the world switch from KDE || MDE) with later stepping, OS lock and MDCR_EL2 fixes applied",
            fix: None,
            make: make_fn(|| Box::new(Era1Engine(Era1Reference))),
            host: HostMode::Nvhe,
            hidden_on: None,
        },
        Variant {
            name: "era2",
            kind: VariantKind::Reference,
            description: "v4.17..v6.9 (v6.9 names): DIRTY decided in kvm_arm_setup_debug, __debug_switch_to_guest/host gated on it, the host's debug registers and MDCR_EL2 kept in the vcpu",
            fix: None,
            make: make_fn(|| Box::new(Era2Engine(Era2Reference))),
            host: HostMode::Nvhe,
            hidden_on: None,
        },
        Variant {
            name: "era2-percpu",
            kind: VariantKind::Reference,
            description: "v6.10..v6.13: era 2 with the host's debug registers and MDCR_EL2 per CPU in kvm_host_data.host_debug_state",
            fix: None,
            make: make_fn(|| Box::new(Era2PercpuEngine(Era2Reference))),
            host: HostMode::Nvhe,
            hidden_on: None,
        },
        Variant {
            name: "era3",
            kind: VariantKind::Reference,
            description: "v6.14+: debug owner decided at vcpu_load, per-CPU host_data, external_mdscr_el1",
            fix: None,
            make: make_fn(|| Box::new(Era3Engine(Era3Reference))),
            host: HostMode::Nvhe,
            hidden_on: None,
        },
        Variant {
            name: "era3-pkvm",
            kind: VariantKind::Reference,
            description: "v7.3 in protected mode (hVHE or nVHE): pKVM's hyp vcpu receives the owner, the owned block and external_mdscr_el1 (flush/sync_debug_state)",
            fix: None,
            make: make_fn(|| Box::new(Era3Engine(Era3Protected))),
            host: HostMode::Nvhe,
            hidden_on: None,
        },
    ]
}

/// Every variant: references, historical, generic, user.
pub fn all() -> Vec<Variant> {
    let mut v = references();
    v.extend(historical::variants());
    v.extend(generic::variants());
    v.extend(user::variants());
    v
}

/// A variant by name; `NAME@vhe` is the variant on a VHE host.
pub fn by_name(name: &str) -> Option<Variant> {
    let (base, vhe) = match name.rsplit_once('@') {
        Some((b, h)) if h.eq_ignore_ascii_case("vhe") => (b, true),
        Some((b, h)) if h.eq_ignore_ascii_case("nvhe") => (b, false),
        _ => (name, false),
    };
    let v = all()
        .into_iter()
        .find(|v| v.name.eq_ignore_ascii_case(base))?;
    if vhe { v.on_vhe() } else { Some(v) }
}

/// The bug-catalog rows the modelled flows cannot express, and why.
pub const NOT_EXPRESSIBLE: &[(&str, &str)] = &[
    (
        "aarch32-dbgdscr",
        "the guest model executes AArch64 only: there is no cp14 DBGDSCRext/DBGDCCINT view to drop",
    ),
    (
        "spe-drain-late",
        "the Statistical Profiling Extension (PMSCR_EL1, the host buffer drain) is not modelled",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_instances_build() {
        let all = all();
        let mut names: Vec<_> = all.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for v in &all {
            assert_eq!(
                v.fix.is_some(),
                v.kind == VariantKind::Historical,
                "{}",
                v.name
            );
        }
        // Issue 15 row 14: every historical variant says whether its form shipped, was only
        // posted, or is hypothetical, and where it comes from.
        for v in all.iter().filter(|v| v.kind == VariantKind::Historical) {
            let fix = v.fix.unwrap_or("");
            assert!(
                ["shipped", "posted", "hypothetical"]
                    .iter()
                    .any(|l| fix.starts_with(l)),
                "{}: {fix}",
                v.name
            );
        }
        assert!(by_name("SEED-V2").is_some());
        assert!(by_name("nope").is_none());
    }
}
