//! Patch validation: run every selected variant of the kernel's logic over every profile and
//! every scenario of the sweep through the [`crate::driver`], with the [`crate::checker`] as
//! the observer, and report a verdict with a minimal counterexample in the kernel's words.
//!
//! - [`sweep`]: the exhaustive sweep's scenarios;
//! - [`random`]: random operation sequences, shrunk (proptest);
//! - [`run`]: one scenario on the simulator, checked;
//! - [`check`]: every variant over every job, in parallel, and the verdicts;
//! - [`report`]: the table and the JSON.

pub mod check;
pub mod random;
pub mod report;
pub mod run;
pub mod sweep;
