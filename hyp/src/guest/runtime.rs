//! The guest's exception runtime: a vector table at VBAR_EL1 and one handler, real A64 code
//! that both backends load and run (the simulator executes it like any guest code; a real
//! kernel's guest does too).
//!
//! The handler applies the policy of the kernel selftest's guest (debug-exceptions.c) and logs
//! every exception it takes, so a userspace observer of a real guest sees what the simulator
//! records:
//!
//! - log ESR_EL1, ELR_EL1, FAR_EL1 and SPSR_EL1 in the vcpu's exception log, which starts at
//!   the top of its stack (`guest_abi::log_base`);
//! - BRK and UNDEFINED (EC 0x3c, 0x00): return after the instruction (ELR_EL1 += 4);
//! - breakpoint and watchpoint (EC 0x30, 0x31, 0x34, 0x35): return with SPSR_EL1.D set, so
//!   the guest does not take the same debug exception again at once;
//! - software step (EC 0x32, 0x33): return with SPSR_EL1.SS set (the next instruction is
//!   stepped);
//! - SVC (EC 0x15): return;
//! - anything else: stop for userspace (`STOP_GUEST_ABORT`, ESR_EL1 as the stored data),
//!   then return after the instruction.
//!
//! It saves x0..x3 on the vcpu's stack (SP_EL1, `guest_abi::stack_top` at reset: the guest
//! must not move SP) and runs with PSTATE.D set, as every exception entry leaves it.

use std::sync::OnceLock;

use hypdbg_model::guest_abi::{
    DOORBELL, DOORBELL_REG, LOG_CAPACITY, LOG_ENTRY_BYTES, LOG_HEADER_BYTES, LOG_SPAN,
    RUNTIME_BASE, STOP_GUEST_ABORT, log_base, stack_top, stop_address,
};
use hypdbg_model::uapi::core_reg;

use super::program::{Program, ProgramError};

/// Offsets of the vectors the runtime handles as synchronous exceptions: current EL with
/// SP_EL0, current EL with SP_ELx, lower EL using AArch64.
const SYNC_VECTORS: [u64; 3] = [0x000, 0x200, 0x400];

/// The runtime's assembly text.
pub fn source() -> String {
    let mut s = String::new();
    for v in 0..16u64 {
        let target = if SYNC_VECTORS.contains(&(v * 0x80)) {
            "sync"
        } else {
            "other"
        };
        s += &format!("vector_{v}: b {target}\n");
        s += &"nop\n".repeat(31);
    }

    let abort = stop_address(STOP_GUEST_ABORT) - DOORBELL;
    s += &format!(
        "\
sync:
    sub sp, sp, #32
    stp x0, x1, [sp]
    stp x2, x3, [sp, #16]
    add x2, sp, #32                     // x2 = this vcpu's log header (its stack top)
    ldr x3, [x2]                        // x3 = the next entry
    mov x1, #{span:#x}                  // one past the log's last entry
    add x1, x1, x2
    sub x1, x1, x3
    cbz x1, full
    add x0, x3, #{entry}
    str x0, [x2]                        // advance the cursor
    mrs x0, esr_el1
    mrs x1, elr_el1
    stp x0, x1, [x3]
    mrs x0, far_el1
    mrs x1, spsr_el1
    stp x0, x1, [x3, #16]
    b policy
full:
    ldr x0, [x2, #8]                    // the log is full: count the exception
    add x0, x0, #1
    str x0, [x2, #8]
policy:
    mrs x0, esr_el1
    lsl x0, x0, #32
    lsr x0, x0, #58                     // x0 = ESR_EL1.EC
    cbz x0, skip                        // 0x00 UNDEFINED: skip the instruction
    sub x1, x0, #0x3c
    cbz x1, skip                        // BRK64: skip the BRK
    sub x1, x0, #0x30
    cbz x1, mask_d                      // breakpoint from a lower EL
    sub x1, x0, #0x31
    cbz x1, mask_d                      // breakpoint from the current EL
    sub x1, x0, #0x34
    cbz x1, mask_d                      // watchpoint from a lower EL
    sub x1, x0, #0x35
    cbz x1, mask_d                      // watchpoint from the current EL
    sub x1, x0, #0x32
    cbz x1, set_ss                      // software step from a lower EL
    sub x1, x0, #0x33
    cbz x1, set_ss                      // software step from the current EL
    sub x1, x0, #0x15
    cbz x1, done                        // SVC64
    mrs x0, esr_el1
    str x0, [x28, #{abort}]             // anything else: stop for userspace with ESR_EL1
skip:
    mrs x1, elr_el1
    add x1, x1, #4
    msr elr_el1, x1
    b done
mask_d:
    mrs x1, spsr_el1
    mov x0, #0x200                      // PSTATE.D
    orr x1, x1, x0
    msr spsr_el1, x1
    b done
set_ss:
    mrs x1, spsr_el1
    movz x0, #0x20, lsl #16             // PSTATE.SS
    orr x1, x1, x0
    msr spsr_el1, x1
done:
    ldp x2, x3, [sp, #16]
    ldp x0, x1, [sp]
    add sp, sp, #32
    eret
other:
    str xzr, [x28, #{abort}]            // IRQ, FIQ, SError: the guest never unmasks them
    eret
",
        span = LOG_SPAN,
        entry = LOG_ENTRY_BYTES,
    );
    s
}

/// The runtime, assembled at `guest_abi::RUNTIME_BASE` (the source is fixed text: an error
/// is a defect of this file, which its tests catch).
pub fn program() -> Result<&'static Program, &'static ProgramError> {
    static P: OnceLock<Result<Program, ProgramError>> = OnceLock::new();
    P.get_or_init(|| Program::assemble(RUNTIME_BASE, &source()))
        .as_ref()
}

/// Vcpu `i`'s exception log header at reset (the cursor at the first entry, nothing lost),
/// to write at `guest_abi::log_base(i)`.
pub fn log_reset(vcpu: usize) -> Vec<u8> {
    [log_base(vcpu) + LOG_HEADER_BYTES, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// The core registers a VMM sets on vcpu `i` before its first KVM_RUN (ONE_REG id, value):
/// the PC, SP_EL1 at the top of its stack in the runtime slot, x28 = the doorbell. (A real
/// guest also needs VBAR_EL1 = `guest_abi::RUNTIME_BASE`, `uapi::VBAR_EL1_ID`; the
/// simulator's is fixed there.)
pub fn reset_registers(pc: u64, vcpu: usize) -> [(u64, u64); 3] {
    [
        (core_reg::PC, pc),
        (core_reg::SP_EL1, stack_top(vcpu)),
        (core_reg::x(DOORBELL_REG), DOORBELL),
    ]
}

/// One exception the runtime logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// ESR_EL1.
    pub esr: u64,
    /// ELR_EL1.
    pub elr: u64,
    /// FAR_EL1 (meaningful for watchpoints and aborts only).
    pub far: u64,
    /// SPSR_EL1 (where the exception came from).
    pub spsr: u64,
}

/// How many bytes from a log header hold the header and the first `n` entries.
pub fn log_bytes(n: u64) -> usize {
    (LOG_HEADER_BYTES + n.min(LOG_CAPACITY) * LOG_ENTRY_BYTES) as usize
}

/// The number of entries vcpu `i`'s log header (16 bytes at `guest_abi::log_base(i)`) says
/// the log holds, and how many exceptions it could not log.
pub fn log_header(vcpu: usize, header: &[u8]) -> (u64, u64) {
    let word = |off: usize| -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = header.get(off..off + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    };
    let first = log_base(vcpu) + LOG_HEADER_BYTES;
    let n = (word(0).saturating_sub(first) / LOG_ENTRY_BYTES).min(LOG_CAPACITY);
    (n, word(8))
}

/// Decode vcpu `i`'s exception log from the bytes at `guest_abi::log_base(i)` (header
/// first): the entries, and how many exceptions were not logged because it was full.
pub fn parse_log(vcpu: usize, log: &[u8]) -> (Vec<LogEntry>, u64) {
    let word = |off: usize| -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = log.get(off..off + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    };
    let (n, lost) = log_header(vcpu, log);
    let entries = (0..n as usize)
        .map(|i| {
            let at = LOG_HEADER_BYTES as usize + i * LOG_ENTRY_BYTES as usize;
            LogEntry {
                esr: word(at),
                elr: word(at + 8),
                far: word(at + 16),
                spsr: word(at + 24),
            }
        })
        .collect();
    (entries, lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::insn::Insn;

    #[test]
    fn vectors_and_handler_assemble() {
        let p = program().unwrap();
        for v in SYNC_VECTORS {
            let w = p.words[(v / 4) as usize];
            let Some(Insn::B { offset }) = Insn::decode(w) else {
                panic!("vector {v:#x} is not a branch: {w:#x}");
            };
            assert_eq!(RUNTIME_BASE + v + offset as u64, p.label("sync").unwrap());
        }
        assert!(
            p.end() <= RUNTIME_BASE + 0x1000,
            "the code stays in its page"
        );
        assert!(p.words.iter().all(|w| Insn::decode(*w).is_some()));
    }

    #[test]
    fn log_parsing() {
        let mut log = vec![0u8; log_bytes(3)];
        let first = log_base(1) + LOG_HEADER_BYTES;
        log[..8].copy_from_slice(&(first + 2 * LOG_ENTRY_BYTES).to_le_bytes());
        log[8..16].copy_from_slice(&5u64.to_le_bytes());
        log[16..24].copy_from_slice(&0xf200_0000u64.to_le_bytes());
        log[16 + 32 + 8..16 + 32 + 16].copy_from_slice(&0x1_0010u64.to_le_bytes());
        let (e, lost) = parse_log(1, &log);
        assert_eq!(lost, 5);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].esr, 0xf200_0000);
        assert_eq!(e[1].elr, 0x1_0010);
        let (e, lost) = parse_log(0, &log_reset(0));
        assert!(e.is_empty());
        assert_eq!(lost, 0);
    }
}
