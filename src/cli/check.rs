//! `hypdbg check`: the main job.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use hypdbg::validate::check::{CheckOptions, VariantReport, check, jobs};
use hypdbg::validate::report::{json_lines, table};
use hypdbg_hyp::variants::{self, Variant};
use hypdbg_model::profiles::parse_cpu;

use super::usage_error;

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
        }
    }
}

/// `--list`: every variant, and the catalog rows no flow can express.
fn list() -> i32 {
    for v in variants::all() {
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
        println!("{name:<32} -     not expressible: {why}");
    }
    0
}

/// The variants `--variant` selects.
fn select(name: &str) -> Result<Vec<Variant>, String> {
    if name.eq_ignore_ascii_case("all") {
        return Ok(variants::all());
    }
    variants::by_name(name).map(|v| vec![v]).ok_or_else(|| {
        let names: Vec<&str> = variants::all().iter().map(|v| v.name).collect();
        format!(
            "--variant {name}: unknown; known: all, {}",
            names.join(", ")
        )
    })
}

/// A progress bar on a terminal only.
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} scenario runs {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// Run the check; 0 when every reference is clean and every mutant caught (or, for one
/// selected reference or user variant, when it is clean), 1 otherwise, 2 for bad arguments.
pub fn run(a: &CheckArgs) -> i32 {
    if a.list {
        return list();
    }
    let selected = match select(&a.variant) {
        Ok(v) => v,
        Err(e) => return usage_error(e),
    };
    let cpus = match parse_cpu(&a.cpu) {
        Ok(c) => c,
        Err(e) => return usage_error(format!("--cpu {}: {e}", a.cpu)),
    };
    let Some(random_cpu) = CheckOptions::random_cpu_of(&cpus) else {
        return usage_error(format!("--cpu {}: no CPU selected", a.cpu));
    };
    let opts = CheckOptions {
        variants: selected.clone(),
        cpus,
        count_sweep: a.cpu.eq_ignore_ascii_case("all"),
        random_cases: a.random,
        random_cpu,
    };
    let total = match jobs(&opts) {
        Ok(j) => (j.len() * selected.len()) as u64,
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
    if a.json {
        print!("{}", json_lines(&reports));
    } else {
        let runs = reports.iter().map(|r| r.scenarios).sum();
        print!("{}", table(&reports, elapsed, runs));
    }
    if let Some(dir) = &a.write_counterexamples
        && let Err(e) = write_counterexamples(dir, &reports)
    {
        eprintln!("hypdbg: error: {e}");
        return 1;
    }
    let alone = selected.len() == 1;
    let ok = reports.iter().all(|r| r.verdict.passes(r.kind, alone));
    if ok { 0 } else { 1 }
}

fn write_counterexamples(dir: &Path, reports: &[VariantReport]) -> Result<(), String> {
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
