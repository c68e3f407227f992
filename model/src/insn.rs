//! A64 instruction encodings a debugger writes into guest memory (Arm ARM C6.2, BRK).

/// `BRK #imm16`: `0xd4200000 | imm16 << 5` (Arm ARM C6.2.39).
pub const fn brk(imm16: u16) -> u32 {
    BRK0 | (imm16 as u32) << 5
}

/// The BRK #0 encoding a debugger writes for a software breakpoint.
pub const BRK0: u32 = 0xd420_0000;

/// Whether `word` is a BRK instruction (any immediate): `word & 0xffe0001f == 0xd4200000`.
pub const fn is_brk(word: u32) -> bool {
    word & 0xffe0_001f == BRK0
}
