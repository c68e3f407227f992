//! What a scenario costs as it grows: parse, check and play a file of n top-level actions.
//! The time per action must stay flat as n grows (linear in the file), which the per-action
//! slope across n shows. `cargo bench --bench scenario`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hypdbg::play::{PlayOptions, play};
use hypdbg::scenario::source::ScenarioFile;

/// A file of `n` actions: a `check` (expectations only) and a `kvm_run` in turn.
fn file(n: usize) -> String {
    let mut s = String::from(
        "name = \"ops\"\ncpus = [\"cortex-a57\"]\ncode = \"\"\"\nloop: nop\nstop #0\nb loop\n\"\"\"\n",
    );
    for i in 0..n {
        if i % 2 == 0 {
            s += "[[ops]]\ndo = \"check\"\nexpect = {}\n";
        } else {
            s += "[[ops]]\ndo = \"kvm_run\"\nexpect = { exit = \"stop\" }\n";
        }
    }
    s
}

fn ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("scenario_ops");
    g.sample_size(10);
    for n in [1_000usize, 4_000, 16_000] {
        let text = file(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("parse_and_play", n), &text, |b, text| {
            b.iter(|| {
                let f = ScenarioFile::parse("ops.toml", text).expect("parses");
                let r = play(&f, &PlayOptions::default(), &mut |_| {}).expect("plays");
                assert!(r.passed);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ops);
criterion_main!(benches);
