//! The guest: A64 instructions ([`insn`]), memory ([`memory`]), programs with labels
//! ([`program`]) and execution against the live physical registers ([`cpu`]), with an EL1
//! exception handler policy like the kernel selftest's.

pub mod cpu;
pub mod insn;
pub mod memory;
pub mod program;

pub use cpu::{GUEST_VBAR, GuestRun};
pub use insn::Insn;
pub use memory::GuestMemory;
pub use program::Program;
