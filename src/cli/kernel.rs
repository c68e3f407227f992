//! `--kernel KERNEL [--mode MODE]`, one spelling for every subcommand that runs a real
//! kernel: the user's own arm64 `Image` (gzip'd or not), or `debian:SERIES` (`6.1`, `6.12`,
//! `6.18`, `7.3`, ..., `latest`) fetched into the cache with apt.

use clap::Args;
use hypdbg::real::session::RealSuite;
use hypdbg_real::{Cache, KernelImage, KernelSpec, Mode, fetch};

/// The real kernel to run on.
#[derive(Args, Debug, Clone)]
pub struct KernelArgs {
    /// Run on a real arm64 kernel nested in qemu-system-aarch64: a path to an arm64 `Image`
    /// (gzip'd or not), or `debian:SERIES` (6.1, 6.12, 6.18, 7.3, ..., or latest), fetched
    /// with apt into the cache ($HYPDBG_CACHE, else $XDG_CACHE_HOME/hypdbg, else
    /// ~/.cache/hypdbg).
    #[arg(long, value_name = "KERNEL")]
    pub kernel: Option<String>,
    /// The KVM mode to boot it in: vhe (default), nvhe, protected, protected-nvhe.
    #[arg(long, value_name = "MODE", requires = "kernel")]
    pub mode: Option<String>,
}

impl KernelArgs {
    /// The mode asked for (vhe when none), or a one-line error.
    pub fn mode(&self) -> Result<Mode, String> {
        match &self.mode {
            None => Ok(Mode::Vhe),
            Some(m) => Mode::parse(m).ok_or_else(|| {
                format!("--mode {m}: unknown KVM mode; known: vhe, nvhe, protected, protected-nvhe")
            }),
        }
    }

    /// Check the spelling of `--kernel` and `--mode` without fetching anything.
    pub fn validate(&self) -> Result<Option<(KernelSpec, Mode)>, String> {
        let Some(k) = &self.kernel else {
            return Ok(None);
        };
        let spec = KernelSpec::parse(k).map_err(|e| e.to_string())?;
        Ok(Some((spec, self.mode()?)))
    }

    /// Fetch the kernel (from the cache when it is there).
    pub fn fetch(spec: &KernelSpec) -> Result<(KernelImage, Cache), String> {
        let cache = Cache::from_env().map_err(|e| e.to_string())?;
        let image = fetch(spec, &cache).map_err(|e| e.to_string())?;
        Ok((image, cache))
    }

    /// Fetch and boot: the suite, or a one-line error naming the kernel and the stage.
    pub fn boot(spec: &KernelSpec, mode: Mode) -> Result<RealSuite, String> {
        let (image, cache) = Self::fetch(spec)?;
        RealSuite::boot(&image, mode, cache).map_err(|e| e.to_string())
    }
}
