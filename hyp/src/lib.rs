//! The KVM arm64 EL2 debug-register world switch and its host-side setup, simulated.
//!
//! hypdbg-hyp reproduces what Linux KVM does with the debug registers around each guest entry
//! and exit, in three eras (see [`flow`]), on physical CPUs modelled by `hypdbg-model`:
//!
//! - [`access`]: the register-access trait the switch is generic over (plain and checking);
//! - [`debug_sr`]: the kernel's fall-through `save_debug` / `restore_debug`;
//! - [`context`]: `kvm_vcpu_arch`, `kvm_cpu_context`, `kvm_host_data` with the kernel's names;
//! - [`flow`]: each era's kernel functions as overridable trait methods;
//! - [`guest`]: the guest: A64 instructions, memory, execution against the live registers;
//! - [`vm`]: a KVM-shaped API (`check_extension`, `set_guest_debug`, `run`, ONE_REG, load/put
//!   on a chosen physical CPU) and the run loop;
//! - [`vcpu`]: [`vcpu::VmVcpu`], a simulated vcpu behind the model crate's `DebugVcpu`;
//! - [`events`]: what the simulator records (entries, exits, traps, guest events);
//! - [`sync`]: std or loom synchronisation types, for model checking;
//! - [`smp`]: era 3's per-CPU host save area and the vcpu mutex on state shared between
//!   threads (physical CPUs as locks), for model checking the real switch.

pub mod access;
pub mod context;
pub mod debug_sr;
pub mod events;
pub mod fault;
pub mod flow;
pub mod guest;
pub mod pcpu;
pub mod smccc;
pub mod smp;
pub mod variants;
pub mod vcpu;
pub mod vm;
pub mod workloads;

pub use access::{CheckingAccess, PlainAccess, RegAccess};
pub use fault::{HypFault, KvmError};
pub use flow::{Era, HostMode};
/// The synchronisation types (`std`'s, or `loom`'s under `--cfg loom`), from the model crate.
pub use hypdbg_model::sync;
pub use vm::{VcpuExit, Vm, VmConfig};
