//! A small driver for the real-kernel backend, for people and CI:
//!
//! ```text
//! cargo run -p hypdbg-real --example real -- fetch debian:6.1 [debian:7.3 ...]
//! cargo run -p hypdbg-real --example real -- boot debian:7.3 [vhe|nvhe|protected|protected-nvhe]
//! ```
//!
//! `fetch` prints the image path and release; `boot` boots, prints the agent's hello, the KVM
//! mode line and the boot time, and powers off. Exit status 2 with a one-line error on failure.

use std::process::ExitCode;
use std::time::Instant;

use hypdbg_real::{BootOptions, Cache, KernelSpec, Machine, Mode, fetch};

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

fn run(args: &[String]) -> Result<(), String> {
    let cache = Cache::from_env().map_err(|e| e.to_string())?;
    match args.first().map(String::as_str) {
        Some("fetch") if args.len() > 1 => {
            for s in &args[1..] {
                let t = Instant::now();
                let spec = KernelSpec::parse(s).map_err(|e| e.to_string())?;
                let k = fetch(&spec, &cache).map_err(|e| e.to_string())?;
                println!(
                    "{s}: {} {} ({:.1} s) {}",
                    k.version,
                    k.package.as_deref().unwrap_or("-"),
                    t.elapsed().as_secs_f64(),
                    k.path.display()
                );
            }
            Ok(())
        }
        Some("boot") if args.len() > 1 => {
            let spec = KernelSpec::parse(&args[1]).map_err(|e| e.to_string())?;
            let mode = match args.get(2) {
                Some(m) => Mode::parse(m).ok_or(format!("unknown mode {m}"))?,
                None => Mode::Vhe,
            };
            let k = fetch(&spec, &cache).map_err(|e| e.to_string())?;
            let m = Machine::boot(&k, mode, &BootOptions::new(cache)).map_err(|e| e.to_string())?;
            let h = m.hello();
            println!("kernel {} ({}), {} cpu(s)", h.release, h.machine, h.cpus);
            println!("mode {mode}: {}", m.mode_line());
            println!("boot to agent hello: {:.2} s", m.boot_time().as_secs_f64());
            m.power_off().map_err(|e| e.to_string())
        }
        _ => Err("usage: real fetch SPEC... | real boot SPEC [MODE]".to_string()),
    }
}
