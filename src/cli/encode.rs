//! `hypdbg encode`: the hardware slots a debugger programs for a breakpoint or watch request.

use clap::Subcommand;
use hypdbg_host::encode::{Slots, WatchAccess, encode_breakpoint, encode_watchpoint};
use hypdbg_model::parse_u64;

use super::usage_error;

/// `hypdbg encode break|watch`.
#[derive(Subcommand, Debug)]
pub enum EncodeCommand {
    /// A breakpoint on an A64 instruction.
    Break {
        /// The instruction's address (canonical, 4-byte aligned).
        #[arg(long)]
        addr: String,
        /// `{"slots":[{"bcr":"0x..","bvr":"0x.."}]}`.
        #[arg(long)]
        json: bool,
    },
    /// A watchpoint on exactly `len` bytes at `addr`.
    Watch {
        /// The first watched byte.
        #[arg(long)]
        addr: String,
        /// Bytes, 1 to 2 GiB.
        #[arg(long)]
        len: String,
        /// The directions watched: read (load), write (store), or access (rw, both).
        #[arg(long)]
        access: String,
        /// `{"slots":[{"wcr":"0x..","wvr":"0x.."}, ...]}`.
        #[arg(long)]
        json: bool,
    },
}

/// Run `hypdbg encode`.
pub fn run(c: &EncodeCommand) -> i32 {
    let out = match c {
        EncodeCommand::Break { addr, json } => parse_u64(addr)
            .map_err(|e| format!("--addr: {e}"))
            .and_then(|a| encode_breakpoint(a).map_err(|e| e.to_string()))
            .map(|slots| {
                if *json {
                    serde_json::to_string(&Slots { slots }).unwrap_or_default()
                } else {
                    slots
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            format!("slot {i}: DBGBCR = {:#x}, DBGBVR = {:#x}", s.bcr, s.bvr)
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            }),
        EncodeCommand::Watch {
            addr,
            len,
            access,
            json,
        } => (|| {
            let a = parse_u64(addr).map_err(|e| format!("--addr: {e}"))?;
            let l = parse_u64(len).map_err(|e| format!("--len: {e}"))?;
            let acc: WatchAccess = access.parse().map_err(|e| format!("--access: {e}"))?;
            let slots = encode_watchpoint(a, l, acc).map_err(|e| e.to_string())?;
            Ok(if *json {
                serde_json::to_string(&Slots { slots }).unwrap_or_default()
            } else {
                slots
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("slot {i}: DBGWCR = {:#x}, DBGWVR = {:#x}", s.wcr, s.wvr))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        })(),
    };
    match out {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => usage_error(e),
    }
}
