//! The guest: A64 instructions ([`insn`]), memory ([`memory`]), programs with labels
//! ([`program`]), the exception runtime every guest loads at VBAR_EL1 ([`runtime`]) and
//! execution against the live physical registers ([`cpu`]).

pub mod cpu;
pub mod insn;
pub mod memory;
pub mod program;
pub mod runtime;

pub use cpu::{GUEST_VBAR, GuestRun};
pub use insn::Insn;
pub use memory::GuestMemory;
pub use program::Program;
