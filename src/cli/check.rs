//! `hypdbg check`: the main job.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use hypdbg_hyp::variants::{self, VariantKind};
use hypdbg_model::profiles::parse_cpu;

use super::usage_error;
use hypdbg::validate::check::{CheckOptions, Verdict, check, jobs};
use hypdbg::validate::report::{json_lines, table};

/// `hypdbg check` options.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A variant name, or `all` (see --list).
    #[arg(long, default_value = "all")]
    pub variant: String,
    /// A CPU profile name, `all`, or a raw ID_AA64DFR0_EL1 value (0x...).
    #[arg(long, default_value = "all")]
    pub cpu: String,
    /// One JSON object per variant.
    #[arg(long)]
    pub json: bool,
    /// List the variants and exit.
    #[arg(long)]
    pub list: bool,
    /// Write each counterexample as a replayable scenario file (`hypdbg run FILE --trace`).
    #[arg(long, value_name = "DIR")]
    pub write_counterexamples: Option<PathBuf>,
    /// Random operation sequences per variant (proptest; shrunk on failure).
    #[arg(long, default_value_t = 48)]
    pub random: u32,
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
            kernel_source: None,
            patch: None,
            era: None,
        }
    }
}

/// Run the check; 0 when every reference is clean and every mutant caught (or, for one
/// selected reference or user variant, when it is clean), 1 otherwise, 2 for bad arguments.
pub fn run(a: &CheckArgs) -> i32 {
    // --kernel-source: compile and load the tree's C first; any problem is one line, exit 2.
    let kernel = match &a.kernel_source {
        Some(source) => match load_kernel(source, a) {
            Ok(k) => Some(k),
            Err(e) => return usage_error(e),
        },
        None => None,
    };
    let mut all = variants::all();
    all.extend(kernel.as_ref().map(|k| k.variant()));
    if a.list {
        for v in all {
            let fix = v.fix.map(|f| format!(" [fix: {f}]")).unwrap_or_default();
            let kind = match v.kind {
                VariantKind::Reference => "reference",
                VariantKind::Historical => "historical",
                VariantKind::Generic => "generic",
                VariantKind::User => "user",
            };
            println!(
                "{:<32} {:<5} {kind:<10} {}{fix}",
                v.name,
                v.era.to_string(),
                v.description
            );
        }
        for (name, why) in variants::NOT_EXPRESSIBLE {
            println!("{name:<32} -     not expressible: {why}");
        }
        return 0;
    }
    let selected = if let (Some(k), true) = (&kernel, a.variant.eq_ignore_ascii_case("all")) {
        vec![k.variant()]
    } else if a.variant.eq_ignore_ascii_case("all") {
        all
    } else {
        match all.iter().find(|v| v.name.eq_ignore_ascii_case(&a.variant)) {
            Some(v) => vec![v.clone()],
            None => {
                let names: Vec<&str> = all.iter().map(|v| v.name).collect();
                return usage_error(format!(
                    "--variant {}: unknown; known: all, {}",
                    a.variant,
                    names.join(", ")
                ));
            }
        }
    };
    let cpus = match parse_cpu(&a.cpu) {
        Ok(c) => c,
        Err(e) => return usage_error(format!("--cpu {}: {e}", a.cpu)),
    };
    let opts = CheckOptions {
        variants: selected.clone(),
        cpus,
        count_sweep: a.cpu.eq_ignore_ascii_case("all"),
        random_cases: a.random,
    };
    let total = match jobs(&opts) {
        Ok(j) => (j.len() * selected.len()) as u64,
        Err(e) => {
            eprintln!("hypdbg: error: {e}");
            return 1;
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} scenario runs {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let start = Instant::now();
    let progress = |n: u64| {
        if let Some(b) = &bar
            && (n.is_multiple_of(256) || n == total)
        {
            b.set_position(n);
        }
    };
    let reports = match check(&opts, &progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hypdbg: error: {e}");
            return 1;
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
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
        print!("{}", table(&reports, elapsed, total));
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
    let single = selected.len() == 1;
    let ok = reports.iter().all(|r| match r.kind {
        VariantKind::Reference => r.verdict == Verdict::Ok,
        VariantKind::Historical | VariantKind::Generic => r.verdict == Verdict::Caught,
        VariantKind::User => !single || r.verdict == Verdict::Ok,
    });
    if ok { 0 } else { 1 }
}

/// `--kernel-source [--patch] [--era]`: the tree's C, compiled and loaded.
fn load_kernel(
    source: &std::path::Path,
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

fn write_counterexamples(
    dir: &std::path::Path,
    reports: &[hypdbg::validate::check::VariantReport],
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
