//! `hypdbg check`: the main job.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use hypdbg::validate::check::{CheckError, CheckOptions, VariantReport, check, jobs};
use hypdbg::validate::report::{json_lines, table};
use hypdbg_hyp::variants::{self, Variant};
use hypdbg_model::profiles::{CpuSpec, parse_cpu};

use super::{num_arg, usage_error};

/// Random sequences per variant one check may ask for (`--random`).
pub const MAX_RANDOM: u64 = 10_000;

/// The exit status of a run stopped by its wall-clock limit (`--timeout`).
pub const EXIT_TIMEOUT: i32 = 3;

/// `hypdbg check` options.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A variant name, or `all` (see --list).
    #[arg(long, default_value = "all")]
    pub variant: String,
    /// A CPU profile name, `all`, or a raw ID_AA64DFR0_EL1 value (0x...).
    #[arg(long, default_value = "all")]
    pub cpu: String,
    /// One JSON object per variant (with --list: per catalog entry).
    #[arg(long)]
    pub json: bool,
    /// List the variants and exit.
    #[arg(long)]
    pub list: bool,
    /// Write each counterexample as a replayable scenario file (`hypdbg run FILE --trace`).
    #[arg(long, value_name = "DIR")]
    pub write_counterexamples: Option<PathBuf>,
    /// Random operation sequences per variant (proptest; shrunk on failure), at most 10000.
    #[arg(long, default_value = "48", value_parser = num_arg::<u32>)]
    pub random: u32,
    /// Stop after this many seconds (exit status 3); no limit by default.
    #[arg(long, value_name = "SECONDS", value_parser = num_arg::<u64>)]
    pub timeout: Option<u64>,
    /// A kernel tree (or its debug-sr.h / debug-sr.c): compile its own hyp debug save/restore
    /// C against hypdbg's shim and check it as the variant `kernel-c`.
    #[arg(long, value_name = "PATH")]
    pub kernel_source: Option<PathBuf>,
    /// A unified diff applied to a scratch copy of --kernel-source first.
    #[arg(long, value_name = "FILE", requires = "kernel_source")]
    pub patch: Option<PathBuf>,
    /// The era of --kernel-source instead of detecting it: 1, 2, 2-percpu or 3.
    #[arg(long, value_name = "ERA", requires = "kernel_source")]
    pub era: Option<String>,
}

impl Default for CheckArgs {
    /// What `cargo run --release` (no subcommand) runs: every variant, every CPU.
    fn default() -> Self {
        CheckArgs {
            variant: "all".into(),
            cpu: "all".into(),
            json: false,
            list: false,
            write_counterexamples: None,
            random: 48,
            timeout: None,
            kernel_source: None,
            patch: None,
            era: None,
        }
    }
}

/// `--list`: every variant, and the catalog rows no flow can express.
fn list(all: &[Variant], json: bool) -> i32 {
    for v in all {
        if json {
            let row = serde_json::json!({
                "variant": v.name,
                "flow": v.era().to_string(),
                "kind": v.kind.name(),
                "description": v.description,
                "fix": v.fix,
            });
            println!("{row}");
            continue;
        }
        let fix = v.fix.map(|f| format!(" [fix: {f}]")).unwrap_or_default();
        println!(
            "{:<32} {:<5} {:<10} {}{fix}",
            v.name,
            v.era().to_string(),
            v.kind.name(),
            v.description
        );
    }
    for (name, why) in variants::NOT_EXPRESSIBLE {
        if json {
            let row = serde_json::json!({"variant": name, "kind": "not_expressible", "why": why});
            println!("{row}");
        } else {
            println!("{name:<32} -     not expressible: {why}");
        }
    }
    0
}

/// The variants `--variant` selects from `all` (with a kernel source, `all` means its
/// variant alone).
fn select(name: &str, all: &[Variant], kernel: Option<&Variant>) -> Result<Vec<Variant>, String> {
    if name.eq_ignore_ascii_case("all") {
        return Ok(match kernel {
            Some(k) => vec![k.clone()],
            None => all.to_vec(),
        });
    }
    all.iter()
        .find(|v| v.name.eq_ignore_ascii_case(name))
        .map(|v| vec![v.clone()])
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|v| v.name).collect();
            format!(
                "--variant {name}: unknown; known: all, {}",
                names.join(", ")
            )
        })
}

/// `--kernel-source [--patch] [--era]`: the tree's C, compiled and loaded.
fn load_kernel(
    source: &Path,
    a: &CheckArgs,
) -> Result<hypdbg_kernelc::KernelSource, hypdbg_kernelc::KernelCError> {
    let era = a.era.as_deref().map(str::parse).transpose()?;
    hypdbg_kernelc::load(&hypdbg_kernelc::LoadOptions {
        source: source.to_path_buf(),
        patch: a.patch.clone(),
        era,
        cc: None,
    })
}

/// A progress bar on a terminal only.
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} sweep scenario runs {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// Every argument checked before any work: the variants, the CPUs, the counts, the output
/// directory.
fn options(
    a: &CheckArgs,
    all: &[Variant],
    kernel: Option<&Variant>,
) -> Result<(CheckOptions, Vec<CpuSpec>), String> {
    let variants = select(&a.variant, all, kernel)?;
    let cpus = parse_cpu(&a.cpu).map_err(|e| format!("--cpu {}: {e}", a.cpu))?;
    let random_cpu = CheckOptions::random_cpu_of(&cpus)
        .ok_or_else(|| format!("--cpu {}: no CPU selected", a.cpu))?;
    if u64::from(a.random) > MAX_RANDOM {
        return Err(format!(
            "--random {}: at most {MAX_RANDOM} random sequences per variant",
            a.random
        ));
    }
    if let Some(dir) = &a.write_counterexamples {
        super::output::writable_dir("--write-counterexamples", dir)?;
    }
    let opts = CheckOptions {
        variants,
        cpus: cpus.clone(),
        count_sweep: a.cpu.eq_ignore_ascii_case("all"),
        random_cases: a.random,
        random_cpu,
        deadline: a.timeout.map(|s| Instant::now() + Duration::from_secs(s)),
    };
    Ok((opts, cpus))
}

/// Run the check; 0 when every reference is clean and every mutant caught (or, for one
/// selected reference or user variant, when it is clean), 1 otherwise, 2 for bad arguments,
/// 3 when stopped by `--timeout`.
pub fn run(a: &CheckArgs) -> i32 {
    // --kernel-source: compile and load the tree's C first; any problem is one line, exit 2.
    let kernel = match &a.kernel_source {
        Some(source) => match load_kernel(source, a) {
            Ok(k) => Some(k),
            Err(e) => return usage_error(e),
        },
        None => None,
    };
    let kernel_variant = kernel.as_ref().map(|k| k.variant());
    let mut all = variants::all();
    all.extend(kernel_variant.clone());
    let (opts, _) = match options(a, &all, kernel_variant.as_ref()) {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    if a.list {
        return list(&all, a.json);
    }
    let total = match jobs(&opts) {
        Ok(j) => (j.len() * opts.variants.len()) as u64,
        Err(e) => {
            eprintln!("hypdbg: error: {e}");
            return 1;
        }
    };
    let bar = progress_bar(total);
    let start = Instant::now();
    let progress = |n: u64| {
        if let Some(b) = &bar
            && (n.is_multiple_of(256) || n == total)
        {
            b.set_position(n);
        }
    };
    let result = check(&opts, &progress);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let reports = match result {
        Ok(r) => r,
        Err(CheckError::Deadline) => {
            eprintln!(
                "hypdbg: error: stopped by --timeout {} after {:.1} s, before the check finished",
                a.timeout.unwrap_or(0),
                start.elapsed().as_secs_f64()
            );
            return EXIT_TIMEOUT;
        }
        Err(e) => {
            eprintln!("hypdbg: error: {e}");
            return 1;
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(k) = &kernel {
        // The kernel source's head: on stderr with --json, so stdout stays JSON lines.
        if a.json {
            eprint!("{}", k.summary());
        } else {
            print!("{}", k.summary());
        }
    }
    if a.json {
        print!("{}", json_lines(&reports));
    } else {
        print!("{}", table(&reports, elapsed));
        if kernel.is_some() {
            let cpus = reports.iter().filter_map(|r| r.counterexample.as_ref());
            for cpu in cpus.filter_map(|c| hypdbg_kernelc::describe_cpu(&c.cpu)) {
                println!("counterexample CPU {cpu}");
            }
        }
    }
    if let Some(dir) = &a.write_counterexamples
        && let Err(e) = write_counterexamples(dir, &reports)
    {
        eprintln!("hypdbg: error: {e}");
        return 1;
    }
    let alone = opts.variants.len() == 1;
    let ok = reports.iter().all(|r| r.verdict.passes(r.kind, alone));
    if ok { 0 } else { 1 }
}

fn write_counterexamples(dir: &Path, reports: &[VariantReport]) -> Result<(), String> {
    for r in reports {
        if let Some(c) = &r.counterexample {
            let text = hypdbg::scenario::to_toml(&c.scenario)
                .map_err(|e| format!("{}: {e}", r.variant))?;
            let path = dir.join(format!("{}.toml", r.variant));
            let body = format!(
                "# {}\n# {}\n# replay: hypdbg run {} --trace\n{text}",
                r.variant,
                c.text(),
                path.display()
            );
            std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {} (replay: hypdbg run {} --trace)",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}
