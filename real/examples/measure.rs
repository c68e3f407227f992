//! Throughput of the real-kernel backend, for the README (a benchmark, not a test):
//!
//! ```text
//! cargo run --release -p hypdbg-real --example measure -- debian:6.1 vhe [boots] [--icount]
//! ```
//!
//! Prints: boot time to the agent's hello (wall and guest uptime) over `boots` boots (3 by
//! default); requests per second over the serial protocol (`ping`, `set_reg`); small scenarios
//! per second (create VM, load 4 KiB, create + init a vcpu, set 10 registers, 5 runs to an MMIO
//! doorbell, destroy), with the 10 registers as 10 requests and as one `set_regs`; the KVM_RUN
//! MMIO round trip measured in the guest (instructions per round trip under `--icount`). Also
//! the host's load average, since the numbers depend on it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hypdbg_model::uapi::core_reg;
use hypdbg_real::vm::KVM_ARM_VCPU_PSCI_0_2;
use hypdbg_real::{Agent, BootOptions, Cache, KernelSpec, Machine, Mode, Result, fetch};

const RAM: u64 = 0x4000_0000;
const DOORBELL: u64 = 0x1000_0000;
/// `str x1, [x20]; b .-4`: a store to the doorbell, forever.
const LOOP: [u32; 2] = [0xf900_0281, 0x17ff_ffff];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn per_sec(n: u32, d: Duration) -> f64 {
    f64::from(n) / d.as_secs_f64()
}

/// Milliseconds spent per step of the scenario, summed over runs.
#[derive(Default)]
struct Steps {
    t: [f64; 8],
    teardown_ms: f64,
}

const STEP_NAMES: [&str; 8] = [
    "create_vm",
    "map 64 KiB",
    "load 4 KiB",
    "create_vcpu",
    "vcpu_init",
    "set 10 regs",
    "5 runs",
    "destroy",
];

fn lap(steps: &mut Steps, i: usize, t: &mut Instant) {
    steps.t[i] += t.elapsed().as_secs_f64() * 1000.0;
    *t = Instant::now();
}

fn scenario(agent: &mut Agent, batched: bool, steps: &mut Steps) -> Result<()> {
    let mut t = Instant::now();
    let mut vm = agent.create_vm()?;
    lap(steps, 0, &mut t);
    vm.map_memory(0, RAM, 0x1_0000)?;
    lap(steps, 1, &mut t);
    let mut page: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    for (i, w) in LOOP.iter().enumerate() {
        page[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    vm.write_memory(RAM, &page)?;
    lap(steps, 2, &mut t);
    let v = vm.create_vcpu(0)?;
    lap(steps, 3, &mut t);
    vm.vcpu_init(v, KVM_ARM_VCPU_PSCI_0_2)?;
    lap(steps, 4, &mut t);
    let mut regs: Vec<(u64, u64)> = vec![(core_reg::PC, RAM), (core_reg::x(20), DOORBELL)];
    for n in 0..8 {
        regs.push((core_reg::x(n), u64::from(n)));
    }
    if batched {
        vm.set_one_regs(v, &regs)?;
    } else {
        for (id, val) in regs {
            vm.set_one_reg(v, id, val)?;
        }
    }
    lap(steps, 5, &mut t);
    for _ in 0..5 {
        let e = vm.run(v)?;
        if !e.is_mmio_at(DOORBELL) {
            eprintln!("unexpected exit: {}", e.summary());
        }
    }
    lap(steps, 6, &mut t);
    let td = vm.destroy()?;
    lap(steps, 7, &mut t);
    steps.teardown_ms += td.vm_fd.as_secs_f64() * 1000.0;
    Ok(())
}

fn run(args: &[String]) -> std::result::Result<(), String> {
    let spec = args
        .first()
        .ok_or("usage: measure SPEC [MODE] [BOOTS] [--icount]")?;
    let mode = match args.get(1) {
        Some(m) => Mode::parse(m).ok_or(format!("unknown mode {m}"))?,
        None => Mode::Vhe,
    };
    let boots: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let icount = args.iter().any(|a| a == "--icount");
    let cache = Cache::from_env().map_err(|e| e.to_string())?;
    let k = fetch(&KernelSpec::parse(spec).map_err(|e| e.to_string())?, &cache)
        .map_err(|e| e.to_string())?;
    let mut opts = BootOptions::new(cache);
    opts.icount = icount;
    println!(
        "{} {mode}{}: load average before: {}",
        k.name(),
        if icount { " (icount)" } else { "" },
        load()
    );

    let mut walls = Vec::new();
    let mut uptimes = Vec::new();
    let mut last = None;
    for _ in 0..boots.max(1) {
        let m = Machine::boot(&k, mode, &opts).map_err(|e| e.to_string())?;
        walls.push(m.boot_time().as_secs_f64());
        uptimes.push(m.hello().uptime_ms as f64 / 1000.0);
        if let Some(old) = last.replace(m) {
            drop::<Machine>(old);
        }
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "boot to agent hello: wall {} s; guest uptime at hello {} s",
        fmt(&walls),
        fmt(&uptimes)
    );
    let Some(mut m) = last else {
        return Err("no boot".into());
    };
    let a = m.agent();
    let e = |e: hypdbg_real::Error| e.to_string();

    // Warm up.
    for _ in 0..20 {
        a.ping().map_err(e)?;
    }
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        a.ping().map_err(e)?;
    }
    println!("ping: {:.0} requests/s", per_sec(n, t.elapsed()));

    {
        let mut vm = a.create_vm().map_err(e)?;
        let v = vm.create_vcpu(0).map_err(e)?;
        vm.vcpu_init(v, KVM_ARM_VCPU_PSCI_0_2).map_err(e)?;
        let t = Instant::now();
        for i in 0..n {
            vm.set_one_reg(v, core_reg::x(5), u64::from(i)).map_err(e)?;
        }
        println!("set_reg: {:.0} requests/s", per_sec(n, t.elapsed()));
        let page = vec![0x5au8; 4096];
        vm.map_memory(0, RAM, 0x1_0000).map_err(e)?;
        let t = Instant::now();
        for _ in 0..50 {
            vm.write_memory(RAM, &page).map_err(e)?;
        }
        println!(
            "mem_write 4 KiB: {:.1} ms each",
            t.elapsed().as_secs_f64() * 1000.0 / 50.0
        );
        vm.destroy().map_err(e)?;
    }

    for batched in [false, true] {
        for _ in 0..3 {
            scenario(a, batched, &mut Steps::default()).map_err(e)?;
        }
        let s = 30;
        let mut steps = Steps::default();
        let t = Instant::now();
        for _ in 0..s {
            scenario(a, batched, &mut steps).map_err(e)?;
        }
        let d = t.elapsed();
        println!(
            "scenario ({}): {:.1} scenarios/s ({:.1} ms each, {} requests each)",
            if batched {
                "10 registers in one set_regs"
            } else {
                "10 set_reg requests"
            },
            per_sec(s, d),
            d.as_secs_f64() * 1000.0 / f64::from(s),
            if batched { 11 } else { 20 }
        );
        let parts: Vec<String> = STEP_NAMES
            .iter()
            .zip(steps.t)
            .map(|(n, ms)| format!("{n} {:.1}", ms / f64::from(s)))
            .collect();
        println!(
            "  ms per step: {}; of destroy, the kernel's VM teardown (close of the VM fd) {:.1}",
            parts.join(", "),
            steps.teardown_ms / f64::from(s)
        );
    }

    {
        let mut vm = a.create_vm().map_err(e)?;
        vm.map_memory(0, RAM, 0x1_0000).map_err(e)?;
        vm.write_words(RAM, &LOOP).map_err(e)?;
        let v = vm.create_vcpu(0).map_err(e)?;
        vm.vcpu_init(v, KVM_ARM_VCPU_PSCI_0_2).map_err(e)?;
        vm.set_one_regs(v, &[(core_reg::PC, RAM), (core_reg::x(20), DOORBELL)])
            .map_err(e)?;
        let runs = 200;
        let ns = vm
            .bench_mmio_round_trips(v, runs, 10, DOORBELL, Duration::from_secs(60))
            .map_err(e)?;
        let mut per: Vec<f64> = ns.iter().map(|x| *x as f64 / runs as f64).collect();
        per.sort_by(f64::total_cmp);
        println!(
            "KVM_RUN MMIO round trip, {} per batch of {runs}: min {:.0} median {:.0} max {:.0} {}",
            if icount { "instructions" } else { "ns" },
            per[0],
            per[per.len() / 2],
            per[per.len() - 1],
            if icount {
                "(virtual ns = instructions)"
            } else {
                "(guest CLOCK_MONOTONIC)"
            }
        );
        vm.destroy().map_err(e)?;
    }
    println!("load average after: {}", load());
    m.power_off().map_err(e)
}
