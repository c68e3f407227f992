//! Run a kernel tree's own arm64 KVM hyp debug save/restore C inside the hypdbg simulator.
//!
//! `hypdbg check --kernel-source PATH [--patch FILE] [--era 1|2|2-percpu|3]` ([`load`]):
//!
//! 1. [`source`]: find the code (eras 2 and 3: `arch/arm64/kvm/hyp/include/hyp/debug-sr.h`
//!    with the tree's `nvhe/debug-sr.c` and `vhe/debug-sr.c`; era 1:
//!    `arch/arm64/kvm/hyp/debug-sr.c`; or the one file given) and copy it to a scratch
//!    directory; [`patch`] applies `--patch` there. Nothing is written into the user's tree.
//! 2. [`era`]: decide the era from what the source defines (overridable).
//! 3. [`compile`]: compile it with the system C compiler (`cc -shared -fPIC -O2`, or `$CC`)
//!    against the shim this crate ships (`shim/`: kernel-like headers written for hypdbg, in
//!    which `read_sysreg(r)` / `write_sysreg(v, r)` are routed by register name), plus the
//!    shim's glue that calls the kernel's functions in the world switch's order.
//! 4. `ffi`: load the shared object in-process (`libloading`) and call it; every register
//!    access of the C comes back through an `extern "C"` callback to the simulator's
//!    [`RegAccess`](hypdbg_hyp::access::RegAccess), so the checking access records and checks
//!    each one exactly as for the Rust flows ([`route`]).
//! 5. [`engine`]: the variant is the era's reference engine with its hyp debug switch
//!    (`__debug_switch_to_guest/host`; era 1 `__debug_cond_save_host_state`,
//!    `__debug_restore_state`, `__debug_save_state`, `__debug_cond_restore_host_state`)
//!    replaced by the C; debug.c's decisions, the traps and the guest stay the reference.
//!
//! Why in-process: a world switch is two calls of about seventy register accesses each, and
//! the sweep makes hundreds of thousands of them; a callback costs a few nanoseconds, a
//! message to a subprocess microseconds, which would make the C variant's sweep many times
//! the Rust reference's. The price is `unsafe`, confined to the `ffi` module (this crate's
//! lint is `deny`, allowed there alone; the rest of the workspace forbids it).

pub mod compile;
pub mod engine;
pub mod era;
pub mod error;
mod ffi;
pub mod patch;
pub mod route;
pub mod source;

use std::path::PathBuf;
use std::sync::Arc;

use hypdbg_hyp::flow::{
    DynFlow, Era1Engine, Era1Reference, Era2Engine, Era2Reference, Era3Engine, Era3Reference,
};
use hypdbg_hyp::variants::{Variant, VariantKind};

pub use era::KernelEra;
pub use error::KernelCError;

use engine::KernelEngine;
use ffi::CLib;
use source::{Shape, Sources};

/// What `--kernel-source`, `--patch` and `--era` ask for.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A kernel tree, or the debug-sr file itself.
    pub source: PathBuf,
    /// A unified diff to apply to a scratch copy first.
    pub patch: Option<PathBuf>,
    /// The era, instead of detecting it.
    pub era: Option<KernelEra>,
    /// The C compiler, instead of `$CC` or `cc`.
    pub cc: Option<String>,
}

/// The kernel source, compiled and loaded, ready to run as a variant.
#[derive(Debug)]
pub struct KernelSource {
    lib: Arc<CLib>,
    /// The era it was compiled and runs as.
    pub era: KernelEra,
    /// Why that era: the word that decided it, or `--era`.
    pub era_reason: String,
    /// The files compiled (the user's paths), and whether each runs.
    pub files: Vec<(PathBuf, &'static str)>,
    /// The patch applied, if any.
    pub patch: Option<PathBuf>,
    /// Files the patch changed that are not compiled (the reference stays in effect there).
    pub patched_not_compiled: Vec<String>,
    /// The host-only units the source touches, kept as host-only storage (not modelled).
    pub not_modelled: Vec<String>,
    /// The compiler's warnings about the user's files.
    pub warnings: Vec<String>,
}

/// The variant's name on the command line and in the report.
pub const VARIANT_NAME: &str = "kernel-c";

/// Find, copy, patch, compile and load the kernel's debug save/restore code. Every problem
/// is an error before any simulation starts; the scratch directory is gone when this returns.
pub fn load(opts: &LoadOptions) -> Result<KernelSource, KernelCError> {
    let sources = Sources::locate(&opts.source)?;
    let scratch = tempfile::Builder::new()
        .prefix("hypdbg-kernelc-")
        .tempdir()
        .map_err(|e| KernelCError::Scratch(e.to_string()))?;
    let tree = source::copy_to_scratch(&sources, scratch.path())?;
    let patched_not_compiled = match &opts.patch {
        Some(p) => patch::apply(p, &sources, &tree)?,
        None => Vec::new(),
    };
    let mut text = String::new();
    for (rel, _) in &sources.files {
        let t = std::fs::read_to_string(tree.join(rel)).map_err(|e| KernelCError::Unreadable {
            path: sources.user_path(rel),
            reason: e.to_string(),
        })?;
        text.push_str(&era::strip_comments(&t));
        text.push('\n');
    }
    let (era, era_reason) = match opts.era {
        Some(e) => (e, "--era".to_string()),
        None => match era::detect(&text) {
            Some((e, why)) => (e, format!("detected: {why}")),
            None => {
                return Err(KernelCError::UnknownEra(
                    sources.given.display().to_string(),
                ));
            }
        },
    };
    let cc = opts.cc.clone().unwrap_or_else(compile::compiler);
    let built = compile::compile(
        &cc,
        &sources,
        era,
        scratch.path(),
        &tree,
        opts.patch.is_some(),
    )?;
    let lib = CLib::open(&built.library, &sources.given.display().to_string())?;
    // The library stays mapped; its file and the scratch copy can go.
    scratch
        .close()
        .map_err(|e| KernelCError::Scratch(e.to_string()))?;
    let files = sources
        .files
        .iter()
        .map(|(rel, user)| {
            let role = match (sources.shape, rel.as_str()) {
                (Shape::Header { .. }, source::VHE) => {
                    "compiled only: the VHE wrappers call the same common functions"
                }
                (Shape::Header { nvhe: false, .. }, _) => "run, with hypdbg's nVHE-style wrapper",
                _ => "run",
            };
            (user.clone(), role)
        })
        .collect();
    Ok(KernelSource {
        lib: Arc::new(lib),
        era,
        era_reason,
        files,
        patch: opts.patch.clone(),
        patched_not_compiled,
        not_modelled: not_modelled(&text),
        warnings: built.warnings,
    })
}

/// The host-only units `text` touches (the nVHE host-buffer wrappers).
fn not_modelled(text: &str) -> Vec<String> {
    let units: [(&str, &[&str], &str); 3] = [
        (
            "SPE",
            &["SYS_PMSCR", "SYS_PMBLIMITR_EL1", "psb_csync"],
            "PMSCR_EL1, PMBLIMITR_EL1",
        ),
        (
            "TRBE/self-hosted trace",
            &["SYS_TRFCR", "SYS_TRBLIMITR_EL1", "tsb_csync"],
            "TRFCR_EL1, TRBLIMITR_EL1",
        ),
        ("BRBE", &["SYS_BRBCR"], "BRBCR_EL1"),
    ];
    units
        .iter()
        .filter(|(_, words, _)| words.iter().any(|w| text.contains(w)))
        .map(|(unit, _, regs)| format!("{unit} ({regs})"))
        .collect()
}

impl KernelSource {
    /// A fresh flow: the era's reference engine with the C switch.
    fn make(&self) -> impl Fn() -> Box<dyn DynFlow> + Send + Sync + 'static {
        let lib = self.lib.clone();
        let era = self.era;
        move || -> Box<dyn DynFlow> {
            match era {
                KernelEra::One => {
                    Box::new(KernelEngine::new(Era1Engine(Era1Reference), lib.clone()))
                }
                KernelEra::Two | KernelEra::TwoPerCpu => {
                    Box::new(KernelEngine::new(Era2Engine(Era2Reference), lib.clone()))
                }
                KernelEra::Three => {
                    Box::new(KernelEngine::new(Era3Engine(Era3Reference), lib.clone()))
                }
            }
        }
    }

    /// The variant `hypdbg check` runs (kind [`VariantKind::User`]: its verdict is the answer).
    pub fn variant(&self) -> Variant {
        Variant {
            name: VARIANT_NAME,
            kind: VariantKind::User,
            description: match self.era {
                KernelEra::One => {
                    "the kernel source's own C (era 1), compiled against hypdbg's shim"
                }
                KernelEra::Two => {
                    "the kernel source's own C (era 2), compiled against hypdbg's shim"
                }
                KernelEra::TwoPerCpu => {
                    "the kernel source's own C (era 2, per-CPU layout), compiled against hypdbg's shim"
                }
                KernelEra::Three => {
                    "the kernel source's own C (era 3), compiled against hypdbg's shim"
                }
            },
            fix: None,
            make: Arc::new(self.make()),
            hidden_on: None,
            host: hypdbg_hyp::flow::HostMode::Nvhe,
        }
    }

    /// What was compiled and how it runs, for the report's head.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (path, role) in &self.files {
            s += &format!("kernel source: {} ({role})\n", path.display());
        }
        if let Some(p) = &self.patch {
            s += &format!("patch: {} applied to a scratch copy\n", p.display());
        }
        for f in &self.patched_not_compiled {
            s += &format!(
                "patch also changes {f}: not compiled (the simulator's reference runs there)\n"
            );
        }
        s += &format!("era: {} ({})\n", self.era.words(), self.era_reason);
        if !self.not_modelled.is_empty() {
            s += &format!(
                "not modelled (host-only storage; the modelled host uses none of these units): {}\n",
                self.not_modelled.join(", ")
            );
        }
        for w in &self.warnings {
            s += &format!("compiler: {w}\n");
        }
        s
    }
}

/// A counterexample CPU label (a profile name or a raw ID_AA64DFR0_EL1) with its counts.
pub fn describe_cpu(label: &str) -> Option<String> {
    let cpus = hypdbg_model::profiles::parse_cpu(label).ok()?;
    let f = cpus.first()?.features();
    Some(format!(
        "{label}: ID_AA64DFR0_EL1 {:#x}, {} breakpoints (BRPs = {}), {} watchpoints (WRPs = {})",
        f.raw(),
        f.num_brps(),
        f.brps(),
        f.num_wrps(),
        f.wrps()
    ))
}
