//! Shared set-up for the hyp scenario tests.
#![allow(dead_code)]

use hypdbg_hyp::guest::Program;
use hypdbg_hyp::variants;
use hypdbg_hyp::vm::{AccessMode, Vm, VmConfig};
use hypdbg_model::DebugFeatures;
use hypdbg_model::profiles::by_name;

/// The references the scenarios run against.
pub const REFERENCES: &[&str] = &["era1", "era2", "era2-percpu", "era3", "era3-pkvm"];
/// The profiles: 2/2, 6/4, 16/16.
pub const PROFILES: &[&str] = &["min", "cortex-a57", "max"];

pub fn features(profile: &str) -> DebugFeatures {
    by_name(profile).unwrap().features().unwrap()
}

/// A VM running `variant` on `pcpus` CPUs of `profile`.
pub fn vm_with(variant: &str, profile: &str, pcpus: usize, mode: AccessMode) -> Vm {
    let v = variants::by_name(variant).unwrap_or_else(|| panic!("no variant {variant}"));
    let f = features(profile);
    let config = VmConfig {
        pcpus: vec![f; pcpus],
        vcpus: 1,
        mode,
        trace_instructions: false,
        budget_per_run: 2_000_000,
        host_mode: hypdbg_hyp::HostMode::Nvhe,
    };
    Vm::new((v.make)(), config).unwrap()
}

pub fn vm(variant: &str, profile: &str) -> Vm {
    vm_with(variant, profile, 1, AccessMode::Checking)
}

pub fn load(vm: &mut Vm, text: &str) -> Program {
    let p = Program::assemble(0x1_0000, text).unwrap_or_else(|e| panic!("{e}"));
    vm.load_program(&p);
    p
}
