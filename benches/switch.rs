//! Criterion benchmarks of the debug world switch (issue 7).
//!
//! - `debug_switch`: one round trip (save host, restore guest, save guest, restore host)
//!   through the real flow code, `EraEngine::switch_to_guest` then `switch_to_host` with
//!   `PlainAccess`, by flow (era1, era2, era3), state (clean: nothing moved; dirty: the
//!   guest owns its debug registers), copy shape (the kernel's fall-through, or a loop) and
//!   profile (min 2/2, cortex-a57 6/4, max 16/16); beside it, `copy_from_slice` of the same
//!   bytes (the physical limit of moving that state in this simulator).
//! - `vcpu_run`: a whole KVM_RUN in plain mode (vcpu_load, setup_debug, the hyp's entry and
//!   exit halves, one guest HVC, clear_debug, handle_exit, vcpu_put), per flow and state.
//!
//! Every iteration launders the state through `black_box`, so nothing is hoisted.
//! `cargo bench --bench switch -- --quick` for a fast pass.

// criterion_group!/criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hypdbg::bench::setup::{
    CopyBaseline, CopyShape, ERAS, LoopCopy, RoundTrip, SwitchState, tiny_vm,
};
use hypdbg_hyp::flow::{
    Era1Engine, Era1Reference, Era2Engine, Era2Reference, Era3Engine, Era3Reference, EraEngine,
};
use hypdbg_model::DebugFeatures;
use hypdbg_model::profiles::by_name;

/// Setup failures end the run with a message (no panics in this crate's code).
fn or_die<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("benches/switch: {what}: {e}");
            std::process::exit(1)
        }
    }
}

const PROFILES: [&str; 3] = ["min", "cortex-a57", "max"];

fn profile(name: &str) -> DebugFeatures {
    let p = or_die(by_name(name), "profile");
    or_die(p.features(), "profile features")
}

fn bench_round_trip<E: EraEngine>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    engine: E,
    f: DebugFeatures,
    state: SwitchState,
) {
    let mut rt = RoundTrip::new(engine, f, state);
    or_die(rt.round_trip(), "a first round trip");
    g.bench_function(id, |b| {
        b.iter(|| {
            let rt = black_box(&mut rt);
            rt.round_trip()
        })
    });
}

fn debug_switch(c: &mut Criterion) {
    let mut g = c.benchmark_group("debug_switch");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    for name in PROFILES {
        let f = profile(name);
        let mut base = CopyBaseline::new(&f);
        g.bench_function(BenchmarkId::new("copy_from_slice", name), |b| {
            b.iter(|| black_box(&mut base).round_trip())
        });
        for state in SwitchState::ALL {
            let shapes: &[CopyShape] = match state {
                SwitchState::Clean => &[CopyShape::FallThrough],
                SwitchState::Dirty => &[CopyShape::FallThrough, CopyShape::Loop],
            };
            for &shape in shapes {
                for era in ERAS {
                    let id =
                        BenchmarkId::new(format!("{era}/{}/{}", state.name(), shape.name()), name);
                    match (era, shape) {
                        (hypdbg_hyp::Era::One, CopyShape::FallThrough) => {
                            bench_round_trip(&mut g, id, Era1Engine(Era1Reference), f, state)
                        }
                        (hypdbg_hyp::Era::Two, CopyShape::FallThrough) => {
                            bench_round_trip(&mut g, id, Era2Engine(Era2Reference), f, state)
                        }
                        (hypdbg_hyp::Era::Three, CopyShape::FallThrough) => {
                            bench_round_trip(&mut g, id, Era3Engine(Era3Reference), f, state)
                        }
                        (hypdbg_hyp::Era::One, CopyShape::Loop) => {
                            bench_round_trip(&mut g, id, Era1Engine(LoopCopy), f, state)
                        }
                        (hypdbg_hyp::Era::Two, CopyShape::Loop) => {
                            bench_round_trip(&mut g, id, Era2Engine(LoopCopy), f, state)
                        }
                        (hypdbg_hyp::Era::Three, CopyShape::Loop) => {
                            bench_round_trip(&mut g, id, Era3Engine(LoopCopy), f, state)
                        }
                    }
                }
            }
        }
    }
    g.finish();
}

fn vcpu_run(c: &mut Criterion) {
    let mut g = c.benchmark_group("vcpu_run");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    let f = profile("cortex-a57");
    for era in ERAS {
        for state in SwitchState::ALL {
            let mut vm = or_die(tiny_vm(era, f, state), "the tiny VM");
            match or_die(vm.run(0), "a first KVM_RUN") {
                e if e.doorbell().is_some() => {}
                other => or_die(Err(other), "the tiny guest's exit"),
            }
            g.bench_function(
                BenchmarkId::new(format!("{era}/{}", state.name()), "cortex-a57"),
                |b| b.iter(|| black_box(&mut vm).run(0)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, debug_switch, vcpu_run);
criterion_main!(benches);
