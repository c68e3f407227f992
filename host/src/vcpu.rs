//! The vcpu seam: [`DebugVcpu`], [`RunExit`] and [`VcpuError`] live in `hypdbg-model` (so
//! that the simulator and a real-kernel backend implement them without depending on this
//! crate) and are re-exported here, where the debugger uses them.
//!
//! The simulator's implementation is `hypdbg_hyp::vcpu::VmVcpu`; see
//! [`hypdbg_model::vcpu`] for the mapping onto a real `kvm_ioctls::VcpuFd`.

pub use hypdbg_model::vcpu::{DebugVcpu, RunExit, VcpuError};
