//! What a scenario says: the VM, the guest, the userspace actions.

use serde::{Deserialize, Serialize};

/// A number, or a label of the guest program (`"label"` or `"label+8"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number.
    Num(u64),
    /// A label, optionally `+offset`.
    Label(String),
}

/// One userspace action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// KVM_RUN until the guest executes `hvc #imm`; debug exits on the way are handled as a
    /// debugger would (its own breakpoints stepped over, steps continued, others reinjected).
    RunUntilHvc {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// The HVC immediate that ends this action.
        imm: u16,
    },
    /// KVM_SET_GUEST_DEBUG with raw values (index, value) per bank.
    SetGuestDebug {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// KVM_GUESTDBG_* bits.
        control: u32,
        /// DBGBCR<n> values.
        #[serde(default)]
        bcr: Vec<(usize, Value)>,
        /// DBGBVR<n> values.
        #[serde(default)]
        bvr: Vec<(usize, Value)>,
        /// DBGWCR<n> values.
        #[serde(default)]
        wcr: Vec<(usize, Value)>,
        /// DBGWVR<n> values.
        #[serde(default)]
        wvr: Vec<(usize, Value)>,
    },
    /// The vcpu runs on physical CPU `cpu` from its next KVM_RUN.
    Migrate {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// Physical CPU.
        cpu: usize,
    },
    /// A host interrupt every `every` guest instructions (none: no interrupts).
    Irq {
        /// vcpu.
        #[serde(default)]
        vcpu: usize,
        /// Period.
        every: Option<u64>,
    },
    /// Each vcpu makes one KVM_RUN, all entering their guests before any exits (SMP).
    RunConcurrently {
        /// The vcpus, on distinct physical CPUs.
        vcpus: Vec<usize>,
    },
}

/// A scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it exercises, in words.
    #[serde(default)]
    pub description: String,
    /// The variant (flow) to run, by name (`era1`, `era2`, `era3`, `seed-v2`, ...); the
    /// command line may override it.
    #[serde(default)]
    pub flow: Option<String>,
    /// The physical CPUs: profile names or raw ID_AA64DFR0_EL1 values.
    pub cpus: Vec<String>,
    /// Number of vcpus (vcpu i starts on CPU i modulo the number of CPUs).
    #[serde(default = "one")]
    pub vcpus: usize,
    /// The guest program (assembly; every vcpu starts at its first instruction).
    pub code: String,
    /// What userspace does.
    pub ops: Vec<Op>,
}

fn one() -> usize {
    1
}
