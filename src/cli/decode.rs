//! `hypdbg decode` and `hypdbg match`.

use clap::{Args, Subcommand};
use hypdbg_host::WatchAccess;
use hypdbg_model::explain::explain;
use hypdbg_model::matching::{DataAccess, match_single_breakpoint, match_single_watchpoint};
use hypdbg_model::profiles::parse_cpu;
use hypdbg_model::{El, parse_u64};

use super::usage_error;

/// `hypdbg decode <register> <value>`.
#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// dbgbcr, dbgwcr, dbgbvr, dbgwvr, mdscr, mdcr, id_aa64dfr0 or esr.
    pub register: String,
    /// The value (0x-hex, 0b-binary or decimal).
    pub value: String,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `hypdbg decode`.
pub fn decode(a: &DecodeArgs) -> i32 {
    let value = match parse_u64(&a.value) {
        Ok(v) => v,
        Err(e) => return usage_error(e),
    };
    match explain(&a.register, value) {
        Ok(x) if a.json => {
            println!("{}", serde_json::to_string(&x).unwrap_or_default());
            0
        }
        Ok(x) => {
            print!("{x}");
            0
        }
        Err(e) => usage_error(e),
    }
}

/// Where the single unit sits.
#[derive(Args, Debug)]
pub struct UnitArgs {
    /// The exception level executing (0 or 1).
    #[arg(long, default_value = "1")]
    pub el: String,
    /// The CPU whose register bank the unit belongs to.
    #[arg(long, default_value = "cortex-a57")]
    pub cpu: String,
    /// The unit number (context types need a context-aware unit).
    #[arg(long, default_value = "0")]
    pub unit: String,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `hypdbg match break|watch`.
#[derive(Subcommand, Debug)]
pub enum MatchCommand {
    /// A breakpoint on an A64 instruction.
    Break {
        /// DBGBCR<n>_EL1, the breakpoint control word.
        #[arg(long)]
        bcr: String,
        /// DBGBVR<n>_EL1, the breakpoint value.
        #[arg(long)]
        bvr: String,
        /// The instruction's address.
        #[arg(long)]
        pc: String,
        /// CONTEXTIDR_EL1 (for context breakpoints).
        #[arg(long, default_value = "0")]
        contextidr: String,
        /// Unit and CPU.
        #[command(flatten)]
        unit: UnitArgs,
    },
    /// A watchpoint on a data access.
    Watch {
        /// DBGWCR<n>_EL1, the watchpoint control word.
        #[arg(long)]
        wcr: String,
        /// DBGWVR<n>_EL1, the watchpoint value.
        #[arg(long)]
        wvr: String,
        /// The access's lowest address.
        #[arg(long)]
        addr: String,
        /// Bytes accessed, 1..=64.
        #[arg(long)]
        size: String,
        /// The access's direction: read (load), write (store), or access (rw: an atomic
        /// read-modify-write, both).
        #[arg(long)]
        access: String,
        /// Unit and CPU.
        #[command(flatten)]
        unit: UnitArgs,
    },
}

fn num(what: &str, s: &str) -> Result<u64, String> {
    parse_u64(s).map_err(|e| format!("--{what}: {e}"))
}

/// `hypdbg match`.
pub fn run_match(m: &MatchCommand) -> i32 {
    match run_match_inner(m) {
        Ok((json, r)) => {
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                match r {
                    hypdbg_model::matching::MatchResult::Hit { address } => {
                        println!("hit at {address:#x}")
                    }
                    hypdbg_model::matching::MatchResult::Miss => println!("miss"),
                    hypdbg_model::matching::MatchResult::Unpredictable { rule } => {
                        println!("CONSTRAINED UNPREDICTABLE: {rule}");
                    }
                }
            }
            0
        }
        Err(e) => usage_error(e),
    }
}

fn unit_ctx(
    u: &UnitArgs,
    breakpoint: bool,
) -> Result<(hypdbg_model::DebugFeatures, usize, El), String> {
    let cpus = parse_cpu(&u.cpu).map_err(|e| e.to_string())?;
    let [cpu] = cpus.as_slice() else {
        return Err(format!("--cpu {}: name one CPU", u.cpu));
    };
    let f = cpu.features();
    let el = El::from_number(num("el", &u.el)?).map_err(|e| e.to_string())?;
    if el == El::El2 {
        return Err("--el 2: a guest runs at EL0 or EL1".into());
    }
    let unit = num("unit", &u.unit)? as usize;
    let n = if breakpoint {
        f.num_brps()
    } else {
        f.num_wrps()
    };
    if unit >= n {
        return Err(format!(
            "--unit {unit}: {} implements units 0..{}",
            u.cpu,
            n - 1
        ));
    }
    Ok((*f, unit, el))
}

fn run_match_inner(
    m: &MatchCommand,
) -> Result<(bool, hypdbg_model::matching::MatchResult), String> {
    match m {
        MatchCommand::Break {
            bcr,
            bvr,
            pc,
            contextidr,
            unit,
        } => {
            let (f, n, el) = unit_ctx(unit, true)?;
            let pc = num("pc", pc)?;
            if pc % 4 != 0 {
                return Err(format!("--pc {pc:#x}: A64 instructions are 4-byte aligned"));
            }
            let r = match_single_breakpoint(
                &f,
                n,
                num("bcr", bcr)?,
                num("bvr", bvr)?,
                num("contextidr", contextidr)?,
                pc,
                el,
            );
            Ok((unit.json, r))
        }
        MatchCommand::Watch {
            wcr,
            wvr,
            addr,
            size,
            access,
            unit,
        } => {
            let (f, n, el) = unit_ctx(unit, false)?;
            let size = num("size", size)?;
            if !(1..=64).contains(&size) {
                return Err(format!("--size {size}: an access is 1 to 64 bytes"));
            }
            // One vocabulary for directions everywhere; `access` (both) is a read-modify-write.
            let dir: WatchAccess = access.parse().map_err(|e| format!("--access: {e}"))?;
            let address = num("addr", addr)?;
            if address.checked_add(size - 1).is_none() {
                return Err(format!(
                    "--addr {address:#x} --size {size}: the access runs past the top of the 64-bit address space"
                ));
            }
            let a = DataAccess {
                address,
                size: size as u8,
                is_store: dir != WatchAccess::Read,
                rmw: dir == WatchAccess::Access,
                el,
            };
            Ok((
                unit.json,
                match_single_watchpoint(&f, n, num("wcr", wcr)?, num("wvr", wvr)?, &a),
            ))
        }
    }
}
