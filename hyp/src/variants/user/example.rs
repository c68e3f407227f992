//! A worked example: the mid-series form of the 6.14 rework, which read ID_AA64DFR0_EL1 on
//! every switch instead of using the counts cached in `kvm_host_data` (what "KVM: arm64:
//! Avoid reading ID_AA64DFR0 for save/restore" removed). It is correct, and costs one MRS
//! per switch direction: `hypdbg check --variant example-dfr0-per-switch` says OK.

use crate::access::RegAccess;
use crate::context::KvmHostData;
use crate::flow::{Common, DebugCounts, Era3, Era3Engine};
use crate::variants::{Variant, VariantKind, make_fn};

/// Era 3 with the counts read from the CPU on every switch.
#[derive(Default)]
pub struct Dfr0PerSwitch;

impl Common for Dfr0PerSwitch {}

impl Era3 for Dfr0PerSwitch {
    fn host_debug_counts<A: RegAccess>(&self, a: &mut A, _host: &KvmHostData) -> DebugCounts {
        self.read_debug_counts(a.read_id_aa64dfr0())
    }
}

/// The catalog entry.
pub fn variant() -> Variant {
    Variant {
        name: "example-dfr0-per-switch",
        kind: VariantKind::User,
        description: "worked example: era 3 reading ID_AA64DFR0_EL1 on every switch (mid-series 6.14 form)",
        fix: None,
        make: make_fn(|| Box::new(Era3Engine(Dfr0PerSwitch))),
        hidden_on: None,
        host: crate::flow::HostMode::Nvhe,
    }
}
