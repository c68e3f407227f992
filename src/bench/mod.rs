//! `hypdbg bench`: what the debug world switch costs, without criterion.
//!
//! - [`setup`]: the workloads: a round trip through the real flow code
//!   ([`hypdbg_hyp::flow::EraEngine::switch_to_guest`] then `switch_to_host`, with
//!   [`hypdbg_hyp::PlainAccess`]), clean or dirty, with the kernel's fall-through copy or a
//!   loop; the `copy_from_slice` baseline moving the same bytes; a tiny VM for whole runs;
//! - [`measure`]: interleaved batches timed with `std::time::Instant`, medians;
//! - [`cost`]: THE per-access cost table (cycles of MRS/MSR, ISB, ...; estimates marked)
//!   and the published world-switch costs it is compared with;
//! - [`stats`]: median, quantiles, least squares;
//! - [`svg`]: the hand-written SVG chart of `--plot`;
//! - [`real`]: `--kernel`: instructions per KVM_RUN round trip of real kernels under QEMU's
//!   icount, per mode and debug state ([`hypdbg_real::measure_states`]), with intervals;
//! - [`predict`]: the simulator's register moves per state for the kernel's era, and the
//!   instruction cost model fitted on 6.1 nVHE;
//! - [`report`]: the tables, the targets, JSON.
//!
//! The criterion benches in `benches/` use [`setup`] too, so both measure the same code.

pub mod cost;
pub mod measure;
pub mod predict;
pub mod real;
pub mod real_view;
pub mod report;
pub mod setup;
pub mod stats;
pub mod svg;

pub use report::{Options, Report, run};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The world switch faulted (a setup error: every benchmarked state is valid).
    #[error("the world switch faulted: {0}")]
    Hyp(#[from] hypdbg_hyp::HypFault),
    /// Building the VM failed.
    #[error("setting up the VM: {0}")]
    Kvm(#[from] hypdbg_hyp::KvmError),
    /// A built-in profile or count is invalid.
    #[error("CPU profile: {0}")]
    Model(#[from] hypdbg_model::error::ModelError),
    /// The guest program does not assemble.
    #[error("guest program: {0}")]
    Program(#[from] hypdbg_hyp::guest::program::ProgramError),
    /// The simulator did not run a debug state as the real-kernel benchmark does.
    #[error("simulating the real-kernel benchmark: {0}")]
    Simulation(String),
    /// A workload produced no timing samples.
    #[error("a workload produced no timing samples")]
    NoSamples,
    /// A fit or ratio could not be computed.
    #[error("cannot compute {0}")]
    Statistic(&'static str),
    /// The chart could not be drawn.
    #[error("plot: {0}")]
    Svg(#[from] svg::SvgError),
    /// Writing the plot failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Serialising the report failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}
