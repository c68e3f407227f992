//! Criterion benchmarks of the VMM's side of guest debugging (issue 7).
//!
//! - `handoff`: insert N hardware breakpoints and N watchpoints into a fresh [`HwDebug`],
//!   build `struct kvm_guest_debug`, and hand it to KVM_SET_GUEST_DEBUG (the simulator's
//!   `Vm::set_guest_debug`), for N = 1, 2, 6 and 16 on a 16/16 CPU.
//! - `debug_exit`: decode a KVM_EXIT_DEBUG's syndrome and classify it (a step, one of our
//!   hardware breakpoints or watchpoints, the guest's own breakpoint), and the whole
//!   `Debugger::handle_debug_exit` for ours and for a guest watchpoint it reinjects.
//! - `smp_snapshot`: a vcpu thread's `SharedHwDebug::enter` + leave, idle and with a
//!   debugger thread publishing updates concurrently.
//!
//! `cargo bench --bench host -- --quick` for a fast pass.

// criterion_group!/criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hypdbg::bench::setup::reference_flow;
use hypdbg_host::exit::exit_syndrome;
use hypdbg_host::{Debugger, HwDebug, SharedHwDebug, WatchAccess, WatchRequest};
use hypdbg_hyp::vcpu::VmVcpu;
use hypdbg_hyp::vm::AccessMode;
use hypdbg_hyp::workloads::{CODE_BASE, DATA_BASE};
use hypdbg_hyp::{Era, Vm, VmConfig};
use hypdbg_model::DebugFeatures;
use hypdbg_model::esr::Esr;
use hypdbg_model::profiles::by_name;
use hypdbg_model::uapi::{KVM_DEBUG_ARCH_HSR_HIGH_VALID, KvmDebugExitArch};

fn or_die<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("benches/host: {what}: {e}");
            std::process::exit(1)
        }
    }
}

fn max_cpu() -> DebugFeatures {
    let p = or_die(by_name("max"), "profile");
    or_die(p.features(), "profile features")
}

fn vm(era: Era) -> Vm {
    let mut config = VmConfig::new(max_cpu());
    config.mode = AccessMode::Plain;
    or_die(Vm::new(reference_flow(era), config), "the VM")
}

/// A pool with `n` breakpoints and `n` one-slot watchpoints.
fn pool(n: usize) -> Result<HwDebug, hypdbg_host::HwDebugError> {
    let mut hw = HwDebug::new(16, 16)?;
    for i in 0..n as u64 {
        hw.insert_breakpoint(CODE_BASE + 4 * i)?;
        hw.insert_watchpoint(WatchRequest::new(DATA_BASE + 8 * i, 8, WatchAccess::Write))?;
    }
    Ok(hw)
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for era in [Era::One, Era::Three] {
        let mut vm = vm(era);
        for n in [1usize, 2, 6, 16] {
            or_die(pool(n), "the pool");
            g.bench_with_input(BenchmarkId::new(era.name(), n), &n, |b, &n| {
                b.iter(|| -> Result<(), String> {
                    let hw = pool(black_box(n)).map_err(|e| e.to_string())?;
                    let dbg = hw.guest_debug(false, false);
                    black_box(&mut vm)
                        .set_guest_debug(0, black_box(&dbg))
                        .map_err(|e| e.to_string())
                })
            });
        }
    }
    g.finish();
}

fn debug_exit(c: &mut Criterion) {
    let mut g = c.benchmark_group("debug_exit");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut vm = vm(Era::Three);
    let mut vcpu = or_die(VmVcpu::new(&mut vm, 0), "the vcpu");
    let mut dbg = or_die(Debugger::new(&vcpu), "the debugger");
    *dbg.hw_mut() = or_die(pool(16), "the pool");
    let flags = KVM_DEBUG_ARCH_HSR_HIGH_VALID;
    let exit = |esr: Esr, far: u64| KvmDebugExitArch {
        hsr: esr.bits() as u32,
        hsr_high: (esr.bits() >> 32) as u32,
        far,
    };
    let last_bp = CODE_BASE + 4 * 15;
    let cases = [
        (
            "hw_breakpoint",
            exit(Esr::breakpoint(false), 0),
            last_bp,
            false,
        ),
        (
            "watchpoint",
            exit(Esr::watchpoint(false, true), DATA_BASE + 8 * 15 + 4),
            CODE_BASE + 0x400,
            false,
        ),
        (
            "step",
            exit(Esr::software_step(false, true), 0),
            CODE_BASE,
            true,
        ),
        (
            "guest_breakpoint",
            exit(Esr::breakpoint(false), 0),
            CODE_BASE + 0x800,
            false,
        ),
    ];
    g.bench_function("decode", |b| {
        b.iter(|| exit_syndrome(black_box(&cases[0].1), black_box(flags)).ec())
    });
    for (name, arch, pc, stepping) in cases {
        dbg.set_stepping(stepping);
        g.bench_function(BenchmarkId::new("classify", name), |b| {
            b.iter(|| {
                black_box(&dbg)
                    .classify(black_box(&arch), flags, black_box(pc))
                    .is_ok()
            })
        });
    }
    dbg.set_stepping(false);
    let ours = cases[0];
    g.bench_function(
        BenchmarkId::new("handle_debug_exit", "hw_breakpoint"),
        |b| {
            b.iter(|| {
                dbg.handle_debug_exit(&mut vcpu, black_box(&ours.1), flags, black_box(ours.2))
            })
        },
    );
    // Not ours: the guest's own watchpoint, reinjected (reads the guest's view through
    // ONE_REG, injects the exception).
    let guest_wp = exit(Esr::watchpoint(false, false), DATA_BASE + 0x4000);
    g.bench_function(
        BenchmarkId::new("handle_debug_exit", "guest_watchpoint"),
        |b| b.iter(|| dbg.handle_debug_exit(&mut vcpu, black_box(&guest_wp), flags, CODE_BASE)),
    );
    g.finish();
}

fn smp_snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("smp_snapshot");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let shared = SharedHwDebug::new(or_die(pool(6), "the pool"), 2);
    let enter_leave = |shared: &SharedHwDebug| match shared.enter(0) {
        Ok(e) => {
            let dbg = e.published().guest_debug(false, false);
            black_box(dbg);
            e.leave();
            true
        }
        Err(_) => false,
    };
    g.bench_function(BenchmarkId::new("enter_leave", "idle"), |b| {
        b.iter(|| enter_leave(black_box(&shared)))
    });
    let stop = AtomicBool::new(false);
    let updates = AtomicU64::new(0);
    std::thread::scope(|s| {
        let updater = s.spawn(|| {
            let addr = CODE_BASE + 0x1000;
            while !stop.load(Ordering::Relaxed) {
                let r = shared.update(|hw| match hw.find_breakpoint(addr) {
                    Some(_) => hw.remove_breakpoint(addr).map(|_| ()),
                    None => hw.insert_breakpoint(addr).map(|_| ()),
                });
                if r.is_err() {
                    break;
                }
                updates.fetch_add(1, Ordering::Relaxed);
            }
        });
        g.bench_function(BenchmarkId::new("enter_leave", "concurrent_updater"), |b| {
            b.iter(|| enter_leave(black_box(&shared)))
        });
        stop.store(true, Ordering::Relaxed);
        if updater.join().is_err() {
            eprintln!("benches/host: the updater thread panicked");
        }
    });
    eprintln!(
        "smp_snapshot: the updater published {} sets during the concurrent benchmark",
        updates.load(Ordering::Relaxed)
    );
    g.finish();
}

criterion_group!(benches, handoff, debug_exit, smp_snapshot);
criterion_main!(benches);
