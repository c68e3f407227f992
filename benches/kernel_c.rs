//! The C variant's sweep against the Rust reference's: the whole `hypdbg check` of one variant
//! (every profile, every 15 x 15 BRPs/WRPs value, 48 random sequences) for an era's
//! reference and for kernel-style C of the same era loaded by hypdbg-kernelc. The target is
//! the C within 2x of the reference on 2 cores.
//!
//! The fixtures (era 2 and era 3) always run; Debian's real 6.12 and 7.3 files too when
//! `.ci/kernel-sources` has fetched them (`$HYPDBG_CACHE`, default ~/.cache/hypdbg).
//! `cargo bench --bench kernel_c` prints the interleaved medians first, then criterion's.

// criterion_group!/criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use hypdbg::validate::check::{CheckOptions, check};
use hypdbg_hyp::variants::{Variant, by_name};
use hypdbg_kernelc::{LoadOptions, load};
use hypdbg_model::profiles::parse_cpu;

/// (label, kernel source, the reference of its era).
fn sources() -> Vec<(String, PathBuf, &'static str)> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernelc/tests/fixtures");
    let mut v = vec![
        (
            "fixture-era2".to_string(),
            fixtures.join("era2/debug-sr.h"),
            "era2",
        ),
        (
            "fixture-era3".to_string(),
            fixtures.join("era3/debug-sr.h"),
            "era3",
        ),
    ];
    let cache = std::env::var_os("HYPDBG_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hypdbg")));
    if let Some(cache) = cache {
        for (version, era) in [("6.12", "era2"), ("7.3", "era3")] {
            let tree = cache.join("kernel-sources").join(version);
            if tree
                .join("arch/arm64/kvm/hyp/include/hyp/debug-sr.h")
                .is_file()
            {
                v.push((format!("linux-source-{version}"), tree, era));
            }
        }
    }
    v
}

fn run(variant: &Variant) {
    let cpus = parse_cpu("all").unwrap_or_default();
    let Some(random_cpu) = CheckOptions::random_cpu_of(&cpus) else {
        return;
    };
    let opts = CheckOptions {
        variants: vec![variant.clone()],
        cpus,
        count_sweep: true,
        random_cases: 48,
        random_cpu,
        deadline: None,
    };
    let reports = check(&opts, &|_| {});
    assert!(reports.is_ok_and(|r| r.len() == 1));
}

fn sweep(c: &mut Criterion) {
    let mut g = c.benchmark_group("kernel_c_sweep");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for (label, source, reference) in sources() {
        let Ok(k) = load(&LoadOptions {
            source: source.clone(),
            ..LoadOptions::default()
        }) else {
            eprintln!("{}: does not load; skipped", source.display());
            continue;
        };
        let c_variant = k.variant();
        let Some(rust_variant) = by_name(reference) else {
            continue;
        };
        g.bench_function(format!("{label}/rust-{reference}"), |b| {
            b.iter(|| run(&rust_variant))
        });
        g.bench_function(format!("{label}/kernel-c"), |b| b.iter(|| run(&c_variant)));
    }
    g.finish();
}

/// Reference and C run alternately, `PAIRS` times each: the two runs of a pair see the same
/// load from the rest of the machine, so the median of the per-pair ratios is the robust
/// number on a shared 2-core machine (criterion's groups run minutes apart).
fn interleaved() {
    const PAIRS: usize = 9;
    let ms = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("kernel_c interleaved: {PAIRS} pairs, medians");
    for (label, source, reference) in sources() {
        let (Ok(k), Some(rust_variant)) = (
            load(&LoadOptions {
                source,
                ..LoadOptions::default()
            }),
            by_name(reference),
        ) else {
            continue;
        };
        let c_variant = k.variant();
        run(&rust_variant);
        run(&c_variant);
        let (mut r, mut c, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..PAIRS {
            let tr = ms(&|| run(&rust_variant));
            let tc = ms(&|| run(&c_variant));
            r.push(tr);
            c.push(tc);
            ratio.push(tc / tr);
        }
        println!(
            "  {label:<20} rust-{reference} {:>6.0} ms   kernel-c {:>6.0} ms   ratio {:.2}",
            median(&mut r),
            median(&mut c),
            median(&mut ratio)
        );
    }
}

criterion_group!(benches, sweep);

fn main() {
    interleaved();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
