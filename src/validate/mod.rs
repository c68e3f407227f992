//! Patch validation: run every selected variant of the kernel's logic over every profile and
//! every scenario of the sweep, check the nine invariants, and report a verdict with a
//! minimal counterexample in the kernel's words.

pub mod check;
pub mod invariants;
pub mod random;
pub mod report;
pub mod sweep;

pub use invariants::{Checker, Invariant, Violation};
