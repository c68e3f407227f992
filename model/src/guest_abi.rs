//! The conventions every hypdbg guest shares with both backends (the simulator and a real
//! kernel): where RAM is, where the exception runtime lives, and how the guest stops for
//! userspace.
//!
//! A guest stops for userspace with an MMIO store to a doorbell page that no memory slot backs
//! (`stop #n` in the assembler is `str xzr, [x28, #8*n]`, x28 holding [`DOORBELL`]): every
//! kernel turns it into KVM_EXIT_MMIO at `DOORBELL + 8*n`, which is why it is the portable
//! userspace stop. A plain `hvc` is not one: KVM answers SMCCC calls itself and resumes the
//! guest (`kvm_smccc_call_handler`); only the SMCCC filter (v6.4+) forwards one to userspace.
//!
//! ```
//! use hypdbg_model::guest_abi::{DOORBELL, Doorbell, doorbell};
//! assert_eq!(doorbell(DOORBELL + 8 * 3), Some(Doorbell::Stop(3)));
//! assert_eq!(doorbell(DOORBELL + 4), None); // not an 8-byte slot
//! ```

/// Guest RAM starts here (memory slot 0).
pub const RAM_BASE: u64 = 0;
/// Guest RAM size: 16 MiB.
pub const RAM_SIZE: u64 = 16 << 20;
/// Where scenario code is assembled and loaded.
pub const CODE_BASE: u64 = 0x1_0000;
/// The conventional data area of scenarios.
pub const DATA_BASE: u64 = 0x8_0000;

/// VBAR_EL1 of every hypdbg guest: the exception runtime (vector table and handler, then
/// one area per vcpu with its stack and exception log), memory slot 1.
pub const RUNTIME_BASE: u64 = 0x0f00_0000;
/// The runtime slot's size: 1 MiB.
pub const RUNTIME_SIZE: u64 = 0x10_0000;
/// The most vcpus the runtime has areas for.
pub const MAX_VCPUS: usize = 64;
/// Each vcpu's area: its stack, then its exception log.
pub const VCPU_AREA_BYTES: u64 = 0x3f00;
/// The stack at the start of each vcpu's area (the handler uses 32 bytes of it).
pub const STACK_BYTES: u64 = 0x100;
/// Bytes per exception log entry: ESR_EL1, ELR_EL1, FAR_EL1, SPSR_EL1.
pub const LOG_ENTRY_BYTES: u64 = 32;
/// The log header: the cursor (the address of the next entry), then the number of
/// exceptions not logged because the log was full.
pub const LOG_HEADER_BYTES: u64 = 16;
/// The most entries a vcpu's exception log holds; later exceptions are counted, not logged
/// (and the backends report the overflow).
pub const LOG_CAPACITY: u64 = (VCPU_AREA_BYTES - STACK_BYTES - LOG_HEADER_BYTES) / LOG_ENTRY_BYTES;
/// From a log header to the end of its last entry.
pub const LOG_SPAN: u64 = LOG_HEADER_BYTES + LOG_CAPACITY * LOG_ENTRY_BYTES;
const _: () = assert!(LOG_CAPACITY >= 400);
const _: () = assert!(0x1000 + MAX_VCPUS as u64 * VCPU_AREA_BYTES <= RUNTIME_SIZE);
const _: () = assert!(LOG_SPAN <= 0xffff);

/// SP_EL1 of vcpu `i` at reset: the top of its stack, which is also where its exception log
/// starts (the runtime finds its log from the stack pointer: the guest must not move SP).
pub const fn stack_top(vcpu: usize) -> u64 {
    RUNTIME_BASE + 0x1000 + vcpu as u64 * VCPU_AREA_BYTES + STACK_BYTES
}

/// The exception log header of vcpu `i`.
pub const fn log_base(vcpu: usize) -> u64 {
    stack_top(vcpu)
}

/// The doorbell: 32 KiB of guest-physical space no memory slot backs.
pub const DOORBELL: u64 = 0x0900_0000;
/// The doorbell's size (the reach of `str xzr, [x28, #imm12 * 8]`).
pub const DOORBELL_SIZE: u64 = 0x8000;
/// The register that holds [`DOORBELL`] (reserved: scenario code may not write it).
pub const DOORBELL_REG: u8 = 28;
/// The highest stop number scenario code may use.
pub const STOP_MAX: u16 = 4093;
/// The runtime's stop for an exception its policy does not handle (the data is ESR_EL1).
pub const STOP_GUEST_ABORT: u16 = 4094;
/// The stop placed after every program: the guest ran off its code.
pub const STOP_PROGRAM_END: u16 = 4095;

/// The stop number `n` as the doorbell address it stores to.
pub const fn stop_address(n: u16) -> u64 {
    DOORBELL + 8 * n as u64
}

/// What an MMIO access to the doorbell means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Doorbell {
    /// `stop #n` of scenario code.
    Stop(u16),
    /// The runtime met an exception it does not handle.
    GuestAbort,
    /// The guest ran off the end of its program.
    ProgramEnd,
}

/// Classify a guest-physical MMIO address: a doorbell slot, or `None` (an ordinary MMIO
/// access).
pub fn doorbell(phys_addr: u64) -> Option<Doorbell> {
    let off = phys_addr.checked_sub(DOORBELL)?;
    if off >= DOORBELL_SIZE || off % 8 != 0 {
        return None;
    }
    Some(match (off / 8) as u16 {
        STOP_GUEST_ABORT => Doorbell::GuestAbort,
        STOP_PROGRAM_END => Doorbell::ProgramEnd,
        n => Doorbell::Stop(n),
    })
}

/// Whether `[addr, addr + len)` lies in guest RAM or the runtime slot (a memory slot), so an
/// access there is memory, not MMIO.
pub fn is_memory(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len.max(1)) else {
        return false;
    };
    let within = |base: u64, size: u64| addr >= base && end <= base + size;
    within(RAM_BASE, RAM_SIZE) || within(RUNTIME_BASE, RUNTIME_SIZE)
}

/// PSCI 0.2 SYSTEM_OFF (SMC32/HVC32 function id).
pub const PSCI_0_2_FN_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI 0.2 SYSTEM_RESET.
pub const PSCI_0_2_FN_SYSTEM_RESET: u64 = 0x8400_0009;
/// PSCI 0.2 PSCI_VERSION.
pub const PSCI_0_2_FN_PSCI_VERSION: u64 = 0x8400_0000;
/// SMCCC_VERSION (Arm DEN0028).
pub const ARM_SMCCC_VERSION_FUNC_ID: u64 = 0x8000_0000;
/// SMCCC_RET_NOT_SUPPORTED (-1), what KVM returns in x0 for a function it does not know.
pub const SMCCC_RET_NOT_SUPPORTED: u64 = u64::MAX;
/// A function id no kernel implements (an SMC64 fast call in a reserved owner range): what
/// hypdbg's scenarios forward to userspace with the SMCCC filter.
pub const HYPDBG_FORWARDED_FID: u64 = 0xef00_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doorbell_slots() {
        assert_eq!(doorbell(DOORBELL), Some(Doorbell::Stop(0)));
        assert_eq!(
            doorbell(stop_address(STOP_MAX)),
            Some(Doorbell::Stop(STOP_MAX))
        );
        assert_eq!(
            doorbell(stop_address(STOP_GUEST_ABORT)),
            Some(Doorbell::GuestAbort)
        );
        assert_eq!(
            doorbell(stop_address(STOP_PROGRAM_END)),
            Some(Doorbell::ProgramEnd)
        );
        assert_eq!(doorbell(DOORBELL + DOORBELL_SIZE), None);
        assert_eq!(doorbell(DOORBELL - 8), None);
        assert_eq!(doorbell(DOORBELL + 9), None);
        assert_eq!(stop_address(STOP_PROGRAM_END), DOORBELL + DOORBELL_SIZE - 8);
    }

    #[test]
    fn memory_map() {
        assert!(is_memory(CODE_BASE, 4));
        assert!(is_memory(RAM_SIZE - 8, 8));
        assert!(!is_memory(RAM_SIZE - 4, 8), "straddles the end of RAM");
        assert!(is_memory(log_base(MAX_VCPUS - 1), LOG_SPAN));
        assert!(!is_memory(DOORBELL, 8));
        assert!(!is_memory(u64::MAX, 1));
        assert!(!is_memory(RUNTIME_BASE + RUNTIME_SIZE, 1));
        assert_eq!(log_base(1) - log_base(0), VCPU_AREA_BYTES);
    }
}
