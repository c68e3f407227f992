//! Shared helpers of the integration tests: simulator VMs, programs, probes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hypdbg_host::{DebugVcpu, RunExit};
use hypdbg_hyp::guest::Program;
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_hyp::{Vm, VmConfig};
use hypdbg_model::DebugFeatures;
use hypdbg_model::uapi::core_reg;

/// The reference flows and CPU profiles the end-to-end tests run on.
pub const VARIANTS: [&str; 2] = ["era3", "era2"];
/// Profiles: 6/4 breakpoints/watchpoints, and the minimum 2/2.
pub const PROFILES: [&str; 2] = ["cortex-a57", "min"];

/// A profile's features.
pub fn features(profile: &str) -> DebugFeatures {
    hypdbg_model::profiles::by_name(profile)
        .unwrap()
        .features()
        .unwrap()
}

/// A VM of one vcpu on `pcpus` physical CPUs of `profile`, running the reference `variant`.
pub fn vm_on(variant: &str, profile: &str, pcpus: usize) -> Vm {
    let v = hypdbg_hyp::variants::by_name(variant).unwrap();
    let mut cfg = VmConfig::new(features(profile));
    cfg.pcpus = vec![features(profile); pcpus];
    Vm::new((v.make)(), cfg).unwrap()
}

/// A VM of one vcpu on one physical CPU.
pub fn vm(variant: &str, profile: &str) -> Vm {
    vm_on(variant, profile, 1)
}

/// Assemble and load a program at 0x1000.
pub fn load(vm: &mut Vm, text: &str) -> Program {
    let p = Program::assemble(0x1000, text).unwrap();
    vm.load_program(&p);
    p
}

/// A label's address.
pub fn at(p: &Program, label: &str) -> u64 {
    p.label(label).unwrap_or_else(|| panic!("no label {label}"))
}

/// The vcpu's PC.
pub fn pc(v: &mut VmVcpu<'_>) -> u64 {
    v.get_one_reg(core_reg::PC).unwrap()
}

/// X<n>.
pub fn x(v: &mut VmVcpu<'_>, n: u8) -> u64 {
    v.get_one_reg(core_reg::x(n)).unwrap()
}

/// The exit of `stop #n`.
pub fn stop(n: u16) -> RunExit {
    RunExit::Stop { n }
}

/// Assemble `text` whose `{label}` placeholders stand for label addresses (each used as a
/// `mov` immediate below 0x10000): a first pass with zeros finds the labels.
pub fn load_with_labels(vm: &mut Vm, text: &str, names: &[&str]) -> Program {
    let mut first = text.to_string();
    for n in names {
        first = first.replace(&format!("{{{n}}}"), "0");
    }
    let p = Program::assemble(0x1000, &first).unwrap();
    let mut second = text.to_string();
    for n in names {
        second = second.replace(&format!("{{{n}}}"), &format!("{:#x}", at(&p, n)));
    }
    load(vm, &second)
}

/// The exceptions the guest's EL1 handler took: (EC, ELR, FAR).
pub fn guest_exceptions(vm: &Vm) -> Vec<(u8, u64, Option<u64>)> {
    vm.vcpu(0)
        .unwrap()
        .exceptions
        .iter()
        .filter_map(|e| match e {
            hypdbg_hyp::events::GuestEvent::Exception { esr, elr, far, .. } => {
                Some((esr.ec(), *elr, *far))
            }
            _ => None,
        })
        .collect()
}
