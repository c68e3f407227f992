//! The A64 instructions the guest model executes: real encodings (so a software breakpoint
//! is a real BRK #0 = 0xd4200000 written into guest memory), a decoder, a disassembler and a
//! small assembler for scenario files and tests.

use std::fmt;

use hypdbg_model::SysReg;
use hypdbg_model::sysreg::Encoding;

/// One A64 instruction of the modelled subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Insn {
    /// NOP.
    Nop,
    /// ISB.
    Isb,
    /// ERET.
    Eret,
    /// BRK #imm.
    Brk(u16),
    /// SVC #imm.
    Svc(u16),
    /// HVC #imm.
    Hvc(u16),
    /// MSR \<sysreg>, Xt.
    Msr {
        /// The register.
        enc: Encoding,
        /// Xt.
        rt: u8,
    },
    /// MRS Xt, \<sysreg>.
    Mrs {
        /// Xt.
        rt: u8,
        /// The register.
        enc: Encoding,
    },
    /// MSR DAIFSet, #imm.
    DaifSet(u8),
    /// MSR DAIFClr, #imm.
    DaifClr(u8),
    /// MOVZ Xd, #imm16, LSL #shift.
    Movz {
        /// Xd.
        rd: u8,
        /// The halfword.
        imm16: u16,
        /// 0, 16, 32 or 48.
        shift: u8,
    },
    /// MOVK Xd, #imm16, LSL #shift.
    Movk {
        /// Xd.
        rd: u8,
        /// The halfword.
        imm16: u16,
        /// 0, 16, 32 or 48.
        shift: u8,
    },
    /// ADR Xd, label.
    Adr {
        /// Xd.
        rd: u8,
        /// Byte offset from this instruction (within +-1 MiB).
        offset: i32,
    },
    /// ADD Xd, Xn, Xm.
    AddReg {
        /// Xd.
        rd: u8,
        /// Xn.
        rn: u8,
        /// Xm.
        rm: u8,
    },
    /// SUB Xd, Xn, Xm.
    SubReg {
        /// Xd.
        rd: u8,
        /// Xn.
        rn: u8,
        /// Xm.
        rm: u8,
    },
    /// ADD Xd, Xn|SP, #imm12.
    AddImm {
        /// Xd.
        rd: u8,
        /// Xn.
        rn: u8,
        /// Immediate.
        imm12: u16,
    },
    /// SUB Xd, Xn|SP, #imm12.
    SubImm {
        /// Xd.
        rd: u8,
        /// Xn.
        rn: u8,
        /// Immediate.
        imm12: u16,
    },
    /// LSL Xd, Xn, #shift (UBFM).
    LslImm {
        /// Xd.
        rd: u8,
        /// Xn.
        rn: u8,
        /// Shift.
        shift: u8,
    },
    /// LSR Xd, Xn, #shift (UBFM).
    LsrImm {
        /// Xd.
        rd: u8,
        /// Xn.
        rn: u8,
        /// Shift.
        shift: u8,
    },
    /// ORR Xd, Xn, Xm (shifted register, no shift); `mov Xd, Xm` is ORR Xd, XZR, Xm.
    OrrReg {
        /// Xd.
        rd: u8,
        /// Xn.
        rn: u8,
        /// Xm.
        rm: u8,
    },
    /// LDR{B,H,W,X} Rt, [Xn|SP, #imm].
    Ldr {
        /// 1, 2, 4 or 8 bytes.
        size: u8,
        /// Rt.
        rt: u8,
        /// Xn.
        rn: u8,
        /// Byte offset (a multiple of size).
        imm: u16,
    },
    /// STR{B,H,W,X} Rt, [Xn|SP, #imm].
    Str {
        /// 1, 2, 4 or 8 bytes.
        size: u8,
        /// Rt.
        rt: u8,
        /// Xn.
        rn: u8,
        /// Byte offset.
        imm: u16,
    },
    /// LDP Xt1, Xt2, [Xn|SP, #imm] (16 bytes).
    Ldp {
        /// Xt1.
        rt: u8,
        /// Xt2.
        rt2: u8,
        /// Xn.
        rn: u8,
        /// Byte offset, a multiple of 8 in -512..=504.
        imm: i16,
    },
    /// STP Xt1, Xt2, [Xn|SP, #imm] (16 bytes).
    Stp {
        /// Xt1.
        rt: u8,
        /// Xt2.
        rt2: u8,
        /// Xn.
        rn: u8,
        /// Byte offset.
        imm: i16,
    },
    /// DC ZVA, Xt: zero a 64-byte block (a store for watchpoints).
    DcZva {
        /// Xt.
        rt: u8,
    },
    /// B label.
    B {
        /// Byte offset from this instruction.
        offset: i32,
    },
    /// CBZ Xt, label.
    Cbz {
        /// Xt.
        rt: u8,
        /// Byte offset.
        offset: i32,
    },
    /// CBNZ Xt, label.
    Cbnz {
        /// Xt.
        rt: u8,
        /// Byte offset.
        offset: i32,
    },
}

use hypdbg_model::guest_abi::{DOORBELL_REG, STOP_MAX};
pub use hypdbg_model::insn::BRK0;
use hypdbg_model::insn::{brk, is_brk};

fn bits(v: u32, lsb: u32, width: u32) -> u32 {
    (v >> lsb) & ((1 << width) - 1)
}

fn sext(v: u32, width: u32) -> i32 {
    ((v << (32 - width)) as i32) >> (32 - width)
}

impl Insn {
    /// The 32-bit encoding.
    pub fn encode(self) -> u32 {
        let r = |x: u8| u32::from(x & 31);
        match self {
            Insn::Nop => 0xd503_201f,
            Insn::Isb => 0xd503_3fdf,
            Insn::Eret => 0xd69f_03e0,
            Insn::Brk(i) => brk(i),
            Insn::Svc(i) => 0xd400_0001 | u32::from(i) << 5,
            Insn::Hvc(i) => 0xd400_0002 | u32::from(i) << 5,
            Insn::Msr { enc, rt } => 0xd510_0000 | sysreg_bits(enc) | r(rt),
            Insn::Mrs { rt, enc } => 0xd530_0000 | sysreg_bits(enc) | r(rt),
            Insn::DaifSet(i) => 0xd503_40df | u32::from(i & 0xf) << 8,
            Insn::DaifClr(i) => 0xd503_40ff | u32::from(i & 0xf) << 8,
            Insn::Movz { rd, imm16, shift } => {
                0xd280_0000 | u32::from((shift / 16) & 3) << 21 | u32::from(imm16) << 5 | r(rd)
            }
            Insn::Movk { rd, imm16, shift } => {
                0xf280_0000 | u32::from((shift / 16) & 3) << 21 | u32::from(imm16) << 5 | r(rd)
            }
            Insn::Adr { rd, offset } => {
                let o = offset as u32;
                0x1000_0000 | (o & 3) << 29 | ((o >> 2) & 0x7_ffff) << 5 | r(rd)
            }
            Insn::AddReg { rd, rn, rm } => 0x8b00_0000 | r(rm) << 16 | r(rn) << 5 | r(rd),
            Insn::SubReg { rd, rn, rm } => 0xcb00_0000 | r(rm) << 16 | r(rn) << 5 | r(rd),
            Insn::AddImm { rd, rn, imm12 } => {
                0x9100_0000 | u32::from(imm12 & 0xfff) << 10 | r(rn) << 5 | r(rd)
            }
            Insn::SubImm { rd, rn, imm12 } => {
                0xd100_0000 | u32::from(imm12 & 0xfff) << 10 | r(rn) << 5 | r(rd)
            }
            Insn::LslImm { rd, rn, shift } => {
                let s = u32::from(shift & 63);
                0xd340_0000 | ((64 - s) % 64) << 16 | (63 - s) << 10 | r(rn) << 5 | r(rd)
            }
            Insn::LsrImm { rd, rn, shift } => {
                0xd340_fc00 | u32::from(shift & 63) << 16 | r(rn) << 5 | r(rd)
            }
            Insn::OrrReg { rd, rn, rm } => 0xaa00_0000 | r(rm) << 16 | r(rn) << 5 | r(rd),
            Insn::Ldr { size, rt, rn, imm } => {
                ldst_base(size) | 0x0040_0000 | ldst_imm(size, imm) | r(rn) << 5 | r(rt)
            }
            Insn::Str { size, rt, rn, imm } => {
                ldst_base(size) | ldst_imm(size, imm) | r(rn) << 5 | r(rt)
            }
            Insn::Ldp { rt, rt2, rn, imm } => {
                0xa940_0000 | ((imm / 8) as u32 & 0x7f) << 15 | r(rt2) << 10 | r(rn) << 5 | r(rt)
            }
            Insn::Stp { rt, rt2, rn, imm } => {
                0xa900_0000 | ((imm / 8) as u32 & 0x7f) << 15 | r(rt2) << 10 | r(rn) << 5 | r(rt)
            }
            Insn::DcZva { rt } => 0xd50b_7420 | r(rt),
            Insn::B { offset } => 0x1400_0000 | ((offset / 4) as u32 & 0x03ff_ffff),
            Insn::Cbz { rt, offset } => 0xb400_0000 | ((offset / 4) as u32 & 0x7_ffff) << 5 | r(rt),
            Insn::Cbnz { rt, offset } => {
                0xb500_0000 | ((offset / 4) as u32 & 0x7_ffff) << 5 | r(rt)
            }
        }
    }

    /// The general-purpose registers the instruction writes (XZR writes nothing; SP is not a
    /// general-purpose register here).
    pub fn writes(self) -> Vec<u8> {
        let gpr = |r: u8| if r < 31 { vec![r] } else { Vec::new() };
        match self {
            Insn::Mrs { rt, .. } | Insn::Ldr { rt, .. } => gpr(rt),
            Insn::Ldp { rt, rt2, .. } => [gpr(rt), gpr(rt2)].concat(),
            Insn::Movz { rd, .. }
            | Insn::Movk { rd, .. }
            | Insn::Adr { rd, .. }
            | Insn::AddReg { rd, .. }
            | Insn::SubReg { rd, .. }
            | Insn::LslImm { rd, .. }
            | Insn::LsrImm { rd, .. }
            | Insn::OrrReg { rd, .. } => gpr(rd),
            // ADD/SUB (immediate) write SP for register 31.
            Insn::AddImm { rd, .. } | Insn::SubImm { rd, .. } => gpr(rd),
            _ => Vec::new(),
        }
    }

    /// Decode a word; `None` for anything outside the modelled subset (UNDEFINED to the guest).
    pub fn decode(w: u32) -> Option<Insn> {
        let rt = bits(w, 0, 5) as u8;
        let rn = bits(w, 5, 5) as u8;
        Some(match w {
            0xd503_201f => Insn::Nop,
            0xd503_3fdf => Insn::Isb,
            0xd69f_03e0 => Insn::Eret,
            _ if is_brk(w) => Insn::Brk(bits(w, 5, 16) as u16),
            _ if w & 0xffe0_001f == 0xd400_0001 => Insn::Svc(bits(w, 5, 16) as u16),
            _ if w & 0xffe0_001f == 0xd400_0002 => Insn::Hvc(bits(w, 5, 16) as u16),
            _ if w & 0xffff_f0ff == 0xd503_40df => Insn::DaifSet(bits(w, 8, 4) as u8),
            _ if w & 0xffff_f0ff == 0xd503_40ff => Insn::DaifClr(bits(w, 8, 4) as u8),
            _ if w & 0xffff_ffe0 == 0xd50b_7420 => Insn::DcZva { rt },
            _ if w & 0xfff0_0000 == 0xd510_0000 => Insn::Msr {
                enc: sysreg_enc(w),
                rt,
            },
            _ if w & 0xfff0_0000 == 0xd530_0000 => Insn::Mrs {
                rt,
                enc: sysreg_enc(w),
            },
            _ if w & 0xff80_0000 == 0xd280_0000 => Insn::Movz {
                rd: rt,
                imm16: bits(w, 5, 16) as u16,
                shift: (bits(w, 21, 2) * 16) as u8,
            },
            _ if w & 0xff80_0000 == 0xf280_0000 => Insn::Movk {
                rd: rt,
                imm16: bits(w, 5, 16) as u16,
                shift: (bits(w, 21, 2) * 16) as u8,
            },
            _ if w & 0x9f00_0000 == 0x1000_0000 => Insn::Adr {
                rd: rt,
                offset: sext(bits(w, 5, 19) << 2 | bits(w, 29, 2), 21),
            },
            _ if w & 0xffe0_fc00 == 0x8b00_0000 => Insn::AddReg {
                rd: rt,
                rn,
                rm: bits(w, 16, 5) as u8,
            },
            _ if w & 0xffe0_fc00 == 0xcb00_0000 => Insn::SubReg {
                rd: rt,
                rn,
                rm: bits(w, 16, 5) as u8,
            },
            _ if w & 0xffc0_0000 == 0x9100_0000 => Insn::AddImm {
                rd: rt,
                rn,
                imm12: bits(w, 10, 12) as u16,
            },
            _ if w & 0xffc0_0000 == 0xd100_0000 => Insn::SubImm {
                rd: rt,
                rn,
                imm12: bits(w, 10, 12) as u16,
            },
            _ if w & 0xffe0_fc00 == 0xaa00_0000 => Insn::OrrReg {
                rd: rt,
                rn,
                rm: bits(w, 16, 5) as u8,
            },
            _ if w & 0xffc0_fc00 == 0xd340_fc00 && bits(w, 16, 6) != 0 => Insn::LsrImm {
                rd: rt,
                rn,
                shift: bits(w, 16, 6) as u8,
            },
            _ if w & 0xffc0_0000 == 0xd340_0000 => {
                let (immr, imms) = (bits(w, 16, 6), bits(w, 10, 6));
                let shift = 63 - imms;
                if (imms + 1) % 64 != immr {
                    return None;
                }
                Insn::LslImm {
                    rd: rt,
                    rn,
                    shift: shift as u8,
                }
            }
            _ if w & 0x3fc0_0000 == 0x3940_0000 || w & 0x3fc0_0000 == 0x3900_0000 => {
                let size = 1u8 << bits(w, 30, 2);
                let imm = (bits(w, 10, 12) * u32::from(size)) as u16;
                if w & 0x0040_0000 != 0 {
                    Insn::Ldr { size, rt, rn, imm }
                } else {
                    Insn::Str { size, rt, rn, imm }
                }
            }
            _ if w & 0xffc0_0000 == 0xa940_0000 || w & 0xffc0_0000 == 0xa900_0000 => {
                let imm = (sext(bits(w, 15, 7), 7) * 8) as i16;
                let rt2 = bits(w, 10, 5) as u8;
                if w & 0x0040_0000 != 0 {
                    Insn::Ldp { rt, rt2, rn, imm }
                } else {
                    Insn::Stp { rt, rt2, rn, imm }
                }
            }
            _ if w & 0xfc00_0000 == 0x1400_0000 => Insn::B {
                offset: sext(bits(w, 0, 26), 26) * 4,
            },
            _ if w & 0xff00_0000 == 0xb400_0000 => Insn::Cbz {
                rt,
                offset: sext(bits(w, 5, 19), 19) * 4,
            },
            _ if w & 0xff00_0000 == 0xb500_0000 => Insn::Cbnz {
                rt,
                offset: sext(bits(w, 5, 19), 19) * 4,
            },
            _ => return None,
        })
    }
}

fn ldst_base(size: u8) -> u32 {
    match size {
        1 => 0x3900_0000,
        2 => 0x7900_0000,
        4 => 0xb900_0000,
        _ => 0xf900_0000,
    }
}

fn ldst_imm(size: u8, imm: u16) -> u32 {
    ((u32::from(imm) / u32::from(size.max(1))) & 0xfff) << 10
}

fn sysreg_bits(e: Encoding) -> u32 {
    (u32::from(e.op0.saturating_sub(2)) & 1) << 19
        | u32::from(e.op1 & 7) << 16
        | u32::from(e.crn & 0xf) << 12
        | u32::from(e.crm & 0xf) << 8
        | u32::from(e.op2 & 7) << 5
}

fn sysreg_enc(w: u32) -> Encoding {
    Encoding {
        op0: 2 + bits(w, 19, 1) as u8,
        op1: bits(w, 16, 3) as u8,
        crn: bits(w, 12, 4) as u8,
        crm: bits(w, 8, 4) as u8,
        op2: bits(w, 5, 3) as u8,
    }
}

fn reg_name(r: u8, sp_if_31: bool) -> String {
    match (r, sp_if_31) {
        (31, true) => "sp".into(),
        (31, false) => "xzr".into(),
        _ => format!("x{r}"),
    }
}

fn sysreg_name(e: Encoding) -> String {
    SysReg::from_encoding(e).map_or_else(
        || format!("s{}_{}_c{}_c{}_{}", e.op0, e.op1, e.crn, e.crm, e.op2),
        |r| r.to_string().to_ascii_lowercase(),
    )
}

impl fmt::Display for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = |r: u8| reg_name(r, false);
        let xs = |r: u8| reg_name(r, true);
        match *self {
            Insn::Nop => write!(f, "nop"),
            Insn::Isb => write!(f, "isb"),
            Insn::Eret => write!(f, "eret"),
            Insn::Brk(i) => write!(f, "brk #{i:#x}"),
            Insn::Svc(i) => write!(f, "svc #{i:#x}"),
            Insn::Hvc(i) => write!(f, "hvc #{i:#x}"),
            Insn::Msr { enc, rt } => write!(f, "msr {}, {}", sysreg_name(enc), x(rt)),
            Insn::Mrs { rt, enc } => write!(f, "mrs {}, {}", x(rt), sysreg_name(enc)),
            Insn::DaifSet(i) => write!(f, "msr daifset, #{i}"),
            Insn::DaifClr(i) => write!(f, "msr daifclr, #{i}"),
            Insn::Movz { rd, imm16, shift } => {
                if shift == 0 {
                    write!(f, "mov {}, #{imm16:#x}", x(rd))
                } else {
                    write!(f, "movz {}, #{imm16:#x}, lsl #{shift}", x(rd))
                }
            }
            Insn::Movk { rd, imm16, shift } => {
                write!(f, "movk {}, #{imm16:#x}, lsl #{shift}", x(rd))
            }
            Insn::Adr { rd, offset } => write!(f, "adr {}, .{offset:+}", x(rd)),
            Insn::AddReg { rd, rn, rm } => write!(f, "add {}, {}, {}", x(rd), x(rn), x(rm)),
            Insn::SubReg { rd, rn, rm } => write!(f, "sub {}, {}, {}", x(rd), x(rn), x(rm)),
            Insn::AddImm { rd, rn, imm12 } => write!(f, "add {}, {}, #{imm12:#x}", xs(rd), xs(rn)),
            Insn::SubImm { rd, rn, imm12 } => write!(f, "sub {}, {}, #{imm12:#x}", xs(rd), xs(rn)),
            Insn::LslImm { rd, rn, shift } => write!(f, "lsl {}, {}, #{shift}", x(rd), x(rn)),
            Insn::LsrImm { rd, rn, shift } => write!(f, "lsr {}, {}, #{shift}", x(rd), x(rn)),
            Insn::OrrReg { rd, rn: 31, rm } => write!(f, "mov {}, {}", x(rd), x(rm)),
            Insn::OrrReg { rd, rn, rm } => write!(f, "orr {}, {}, {}", x(rd), x(rn), x(rm)),
            Insn::Ldr { size, rt, rn, imm } | Insn::Str { size, rt, rn, imm } => {
                let op = if matches!(self, Insn::Ldr { .. }) {
                    "ldr"
                } else {
                    "str"
                };
                let (sfx, reg) = match size {
                    1 => ("b", format!("w{rt}")),
                    2 => ("h", format!("w{rt}")),
                    4 => ("", format!("w{rt}")),
                    _ => ("", x(rt)),
                };
                write!(f, "{op}{sfx} {reg}, [{}, #{imm:#x}]", xs(rn))
            }
            Insn::Ldp { rt, rt2, rn, imm } => {
                write!(f, "ldp {}, {}, [{}, #{imm}]", x(rt), x(rt2), xs(rn))
            }
            Insn::Stp { rt, rt2, rn, imm } => {
                write!(f, "stp {}, {}, [{}, #{imm}]", x(rt), x(rt2), xs(rn))
            }
            Insn::DcZva { rt } => write!(f, "dc zva, {}", x(rt)),
            Insn::B { offset } => write!(f, "b .{offset:+}"),
            Insn::Cbz { rt, offset } => write!(f, "cbz {}, .{offset:+}", x(rt)),
            Insn::Cbnz { rt, offset } => write!(f, "cbnz {}, .{offset:+}", x(rt)),
        }
    }
}

/// Why a line of assembly was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}: {why}")]
pub struct AsmError {
    /// The line.
    pub text: String,
    /// What is wrong.
    pub why: String,
}

fn err<T>(text: &str, why: impl Into<String>) -> Result<T, AsmError> {
    Err(AsmError {
        text: text.to_string(),
        why: why.into(),
    })
}

fn parse_reg(s: &str, line: &str, allow_sp: bool) -> Result<(u8, bool), AsmError> {
    let s = s.trim().to_ascii_lowercase();
    if s == "xzr" || s == "wzr" {
        return Ok((31, s.starts_with('w')));
    }
    if s == "sp" && allow_sp {
        return Ok((31, false));
    }
    let (wide, num) = if let Some(n) = s.strip_prefix('x') {
        (true, n)
    } else if let Some(n) = s.strip_prefix('w') {
        (false, n)
    } else {
        return err(
            line,
            format!("'{s}' is not a register (x0..x30, w0..w30, xzr, sp)"),
        );
    };
    match num.parse::<u8>() {
        Ok(n) if n <= 30 => Ok((n, !wide)),
        _ => err(
            line,
            format!("'{s}' is not a register (x0..x30, w0..w30, xzr, sp)"),
        ),
    }
}

fn parse_imm(s: &str, line: &str) -> Result<i64, AsmError> {
    let t = s.trim().trim_start_matches('#');
    let (neg, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    match hypdbg_model::parse_u64(t) {
        Ok(v) if v <= i64::MAX as u64 => Ok(if neg { -(v as i64) } else { v as i64 }),
        _ => err(line, format!("'{s}' is not an immediate")),
    }
}

fn fit<T: TryFrom<i64>>(v: i64, line: &str, what: &str) -> Result<T, AsmError> {
    T::try_from(v).or_else(|_| err(line, format!("{what} {v} is out of range")))
}

fn parse_sysreg(s: &str, line: &str) -> Result<Encoding, AsmError> {
    let t = s.trim().to_ascii_lowercase();
    if let Some(rest) = t.strip_prefix('s') {
        let parts: Vec<&str> = rest.split('_').collect();
        if parts.len() == 5 && parts[2].starts_with('c') && parts[3].starts_with('c') {
            let n = |p: &str| p.trim_start_matches('c').parse::<u8>().ok();
            if let (Some(op0), Some(op1), Some(crn), Some(crm), Some(op2)) = (
                n(parts[0]),
                n(parts[1]),
                n(parts[2]),
                n(parts[3]),
                n(parts[4]),
            ) && (2..=3).contains(&op0)
                && op1 < 8
                && crn < 16
                && crm < 16
                && op2 < 8
            {
                return Ok(Encoding {
                    op0,
                    op1,
                    crn,
                    crm,
                    op2,
                });
            }
        }
    }
    t.parse::<SysReg>()
        .map(|r| r.encoding())
        .or_else(|e| err(line, e.to_string()))
}

/// Split "op a, b, [c, #d]" into the mnemonic and operands (brackets kept together).
fn split_operands(line: &str) -> (String, Vec<String>) {
    let line = line.trim();
    let (mn, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let mut ops = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in rest.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => {
                ops.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        ops.push(cur.trim().to_string());
    }
    (mn.to_ascii_lowercase(), ops)
}

/// One line being assembled: its mnemonic and operands, where it is, and the labels.
struct Line<'a> {
    line: &'a str,
    mn: String,
    ops: Vec<String>,
    pc: u64,
    label: &'a dyn Fn(&str) -> Option<u64>,
}

impl Line<'_> {
    fn want(&self, k: usize) -> Result<(), AsmError> {
        let n = self.ops.len();
        if n == k {
            Ok(())
        } else {
            err(
                self.line,
                format!("'{}' takes {k} operand(s), found {n}", self.mn),
            )
        }
    }

    fn reg(&self, i: usize, sp: bool) -> Result<u8, AsmError> {
        Ok(parse_reg(&self.ops[i], self.line, sp)?.0)
    }

    fn imm(&self, i: usize) -> Result<i64, AsmError> {
        parse_imm(&self.ops[i], self.line)
    }

    /// An optional `lsl #s` operand.
    fn shift(&self, i: usize) -> Result<u8, AsmError> {
        let s = self.ops[i].to_ascii_lowercase();
        let imm = parse_imm(s.trim_start_matches("lsl").trim(), self.line)?;
        fit::<u8>(imm, self.line, "shift")
    }

    /// A branch target: a label or an address, as an offset from the PC.
    fn target(&self, s: &str) -> Result<i32, AsmError> {
        let addr = match (self.label)(s.trim()) {
            Some(a) => a,
            None => match parse_imm(s, self.line) {
                Ok(v) => v as u64,
                Err(_) => return err(self.line, format!("unknown label '{}'", s.trim())),
            },
        };
        let off = addr.wrapping_sub(self.pc) as i64;
        if off % 4 != 0 {
            return err(self.line, "branch target is not 4-byte aligned");
        }
        fit::<i32>(off, self.line, "branch offset")
    }

    /// `[Xn]` or `[Xn, #imm]`.
    fn mem(&self, s: &str) -> Result<(u8, i64), AsmError> {
        let inner = s.trim().strip_prefix('[').and_then(|x| x.strip_suffix(']'));
        let Some(inner) = inner else {
            return err(self.line, format!("'{s}' is not [Xn, #imm]"));
        };
        let mut parts = inner.split(',');
        let base = parse_reg(parts.next().unwrap_or(""), self.line, true)?.0;
        let off = match parts.next() {
            Some(p) => parse_imm(p, self.line)?,
            None => 0,
        };
        Ok((base, off))
    }

    /// System instructions: hints, exceptions, MSR/MRS, DAIF, DC ZVA.
    fn system(&self) -> Result<Insn, AsmError> {
        Ok(match self.mn.as_str() {
            "nop" => Insn::Nop,
            "isb" => Insn::Isb,
            "eret" => Insn::Eret,
            "brk" | "svc" | "hvc" => {
                self.want(1)?;
                let i = fit::<u16>(self.imm(0)?, self.line, "immediate")?;
                match self.mn.as_str() {
                    "brk" => Insn::Brk(i),
                    "svc" => Insn::Svc(i),
                    _ => Insn::Hvc(i),
                }
            }
            "msr" => {
                self.want(2)?;
                let daif = || -> Result<u8, AsmError> {
                    Ok(fit::<u8>(self.imm(1)?, self.line, "DAIF immediate")?.min(15))
                };
                match self.ops[0].to_ascii_lowercase().as_str() {
                    "daifset" => Insn::DaifSet(daif()?),
                    "daifclr" => Insn::DaifClr(daif()?),
                    r => Insn::Msr {
                        enc: parse_sysreg(r, self.line)?,
                        rt: self.reg(1, false)?,
                    },
                }
            }
            "mrs" => {
                self.want(2)?;
                Insn::Mrs {
                    rt: self.reg(0, false)?,
                    enc: parse_sysreg(&self.ops[1], self.line)?,
                }
            }
            _ => {
                self.want(2)?;
                if !self.ops[0].eq_ignore_ascii_case("zva") {
                    return err(self.line, "only dc zva is modelled");
                }
                Insn::DcZva {
                    rt: self.reg(1, false)?,
                }
            }
        })
    }

    /// MOV (MOVZ) and MOVK with their halfword shifts; ADR.
    fn moves(&self) -> Result<Insn, AsmError> {
        let n = self.ops.len();
        if self.mn == "adr" {
            self.want(2)?;
            let rd = self.reg(0, false)?;
            let Some(addr) = (self.label)(self.ops[1].trim()) else {
                return err(self.line, format!("unknown label '{}'", self.ops[1].trim()));
            };
            let offset = fit::<i32>(addr.wrapping_sub(self.pc) as i64, self.line, "adr offset")?;
            if !(-(1 << 20)..(1 << 20)).contains(&offset) {
                return err(self.line, "adr reaches +-1 MiB only");
            }
            return Ok(Insn::Adr { rd, offset });
        }
        if n != 2 && n != 3 {
            return err(self.line, format!("{} takes Xd, #imm[, lsl #s]", self.mn));
        }
        let rd = self.reg(0, false)?;
        if self.mn == "mov" && n == 2 && !self.ops[1].trim().starts_with('#') {
            // MOV Xd, Xm is ORR Xd, XZR, Xm.
            let rm = self.reg(1, false)?;
            return Ok(Insn::OrrReg { rd, rn: 31, rm });
        }
        if self.mn == "movk" {
            let imm16 = fit::<u16>(self.imm(1)?, self.line, "immediate")?;
            let shift = if n == 3 { self.shift(2)? } else { 0 };
            if shift > 48 || shift % 16 != 0 {
                return err(self.line, "shift must be 0, 16, 32 or 48");
            }
            return Ok(Insn::Movk { rd, imm16, shift });
        }
        let v = self.imm(1)? as u64;
        let shift = if n == 3 {
            self.shift(2)?
        } else {
            (0..4)
                .map(|h| h * 16)
                .find(|&s| v >> s << s == v && v >> s <= 0xffff)
                .unwrap_or(64)
        };
        if shift > 48 || shift % 16 != 0 || (v >> shift) > 0xffff && n == 2 {
            return err(
                self.line,
                format!("{v:#x} is not a 16-bit value at a halfword position"),
            );
        }
        let imm16 = if n == 3 {
            fit::<u16>(v as i64, self.line, "immediate")?
        } else {
            (v >> shift) as u16
        };
        Ok(Insn::Movz { rd, imm16, shift })
    }

    /// ADD/SUB (register or 12-bit immediate), LSL (immediate).
    fn arith(&self) -> Result<Insn, AsmError> {
        self.want(3)?;
        if self.mn == "lsl" || self.mn == "lsr" {
            let shift = fit::<u8>(self.imm(2)?, self.line, "shift")?;
            if shift > 63 || (shift == 0 && self.mn == "lsr") {
                return err(self.line, format!("{} shift must be 1..63", self.mn));
            }
            let (rd, rn) = (self.reg(0, false)?, self.reg(1, false)?);
            return Ok(if self.mn == "lsl" {
                Insn::LslImm { rd, rn, shift }
            } else {
                Insn::LsrImm { rd, rn, shift }
            });
        }
        if self.mn == "orr" {
            return Ok(Insn::OrrReg {
                rd: self.reg(0, false)?,
                rn: self.reg(1, false)?,
                rm: self.reg(2, false)?,
            });
        }
        let add = self.mn == "add";
        if !self.ops[2].trim().starts_with('#') {
            let (rd, rn, rm) = (
                self.reg(0, false)?,
                self.reg(1, false)?,
                self.reg(2, false)?,
            );
            return Ok(if add {
                Insn::AddReg { rd, rn, rm }
            } else {
                Insn::SubReg { rd, rn, rm }
            });
        }
        let (rd, rn) = (self.reg(0, true)?, self.reg(1, true)?);
        let imm12 = fit::<u16>(self.imm(2)?, self.line, "immediate")?;
        if imm12 > 0xfff {
            return err(self.line, "immediate must fit 12 bits");
        }
        Ok(if add {
            Insn::AddImm { rd, rn, imm12 }
        } else {
            Insn::SubImm { rd, rn, imm12 }
        })
    }

    /// LDR/STR of 1, 2, 4 or 8 bytes (unsigned offset), LDP/STP of X registers.
    fn loads(&self) -> Result<Insn, AsmError> {
        if self.mn == "ldp" || self.mn == "stp" {
            self.want(3)?;
            let (rt, rt2) = (self.reg(0, false)?, self.reg(1, false)?);
            let (rn, off) = self.mem(&self.ops[2])?;
            if off % 8 != 0 || !(-512..=504).contains(&off) {
                return err(
                    self.line,
                    "pair offset must be a multiple of 8 in -512..=504",
                );
            }
            let imm = off as i16;
            return Ok(if self.mn == "ldp" {
                Insn::Ldp { rt, rt2, rn, imm }
            } else {
                Insn::Stp { rt, rt2, rn, imm }
            });
        }
        self.want(2)?;
        let (rt, is_w) = parse_reg(&self.ops[0], self.line, false)?;
        let size = match self.mn.as_bytes().last() {
            Some(b'b') => 1,
            Some(b'h') => 2,
            _ if is_w => 4,
            _ => 8,
        };
        let (rn, off) = self.mem(&self.ops[1])?;
        if off < 0 || off % i64::from(size) != 0 || off / i64::from(size) > 0xfff {
            return err(
                self.line,
                format!(
                    "offset {off} must be a non-negative multiple of {size} below {:#x}",
                    0x1000 * u32::from(size)
                ),
            );
        }
        let imm = off as u16;
        Ok(if self.mn.starts_with("ldr") {
            Insn::Ldr { size, rt, rn, imm }
        } else {
            Insn::Str { size, rt, rn, imm }
        })
    }

    /// `stop #n`: hypdbg's userspace stop, `str xzr, [x28, #8*n]`, an MMIO store to the
    /// doorbell (x28 holds `guest_abi::DOORBELL`).
    fn stop(&self) -> Result<Insn, AsmError> {
        self.want(1)?;
        let n = self.imm(0)?;
        if !(0..=i64::from(STOP_MAX)).contains(&n) {
            return err(
                self.line,
                format!("stop #{n}: stop numbers are 0..={STOP_MAX}"),
            );
        }
        Ok(Insn::Str {
            size: 8,
            rt: 31,
            rn: DOORBELL_REG,
            imm: (8 * n) as u16,
        })
    }

    /// B, CBZ, CBNZ.
    fn branches(&self) -> Result<Insn, AsmError> {
        if self.mn == "b" {
            self.want(1)?;
            return Ok(Insn::B {
                offset: self.target(&self.ops[0])?,
            });
        }
        self.want(2)?;
        let rt = self.reg(0, false)?;
        let offset = self.target(&self.ops[1])?;
        Ok(if self.mn == "cbz" {
            Insn::Cbz { rt, offset }
        } else {
            Insn::Cbnz { rt, offset }
        })
    }
}

/// Assemble one line at `pc`; `label` resolves branch targets.
pub fn assemble(line: &str, pc: u64, label: &dyn Fn(&str) -> Option<u64>) -> Result<u32, AsmError> {
    let (mn, ops) = split_operands(line);
    let l = Line {
        line,
        mn,
        ops,
        pc,
        label,
    };
    let insn = match l.mn.as_str() {
        ".word" | ".inst" => {
            l.want(1)?;
            return fit::<u32>(l.imm(0)?, line, "word");
        }
        "nop" | "isb" | "eret" | "brk" | "svc" | "hvc" | "msr" | "mrs" | "dc" => l.system()?,
        "mov" | "movz" | "movk" | "adr" => l.moves()?,
        "add" | "sub" | "lsl" | "lsr" | "orr" => l.arith()?,
        "stop" => l.stop()?,
        "ldr" | "str" | "ldrb" | "strb" | "ldrh" | "strh" | "ldp" | "stp" => l.loads()?,
        "b" | "cbz" | "cbnz" => l.branches()?,
        _ => {
            return err(
                line,
                format!("unknown or unmodelled instruction '{}'", l.mn),
            );
        }
    };
    Ok(insn.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypdbg_model::DbgBank;

    fn asm(s: &str) -> u32 {
        assemble(s, 0x1000, &|l| (l == "loop").then_some(0xff8)).unwrap()
    }

    #[test]
    fn known_encodings() {
        assert_eq!(asm("nop"), 0xd503_201f);
        assert_eq!(asm("brk #0"), 0xd420_0000);
        assert_eq!(asm("svc #0"), 0xd400_0001);
        assert_eq!(asm("hvc #0"), 0xd400_0002);
        assert_eq!(asm("msr daifset, #8"), 0xd503_48df);
        assert_eq!(asm("msr daifclr, #8"), 0xd503_48ff);
        // msr dbgbvr0_el1, x0 = 0xd5100080; mrs x1, dbgwvr0_el1 = 0xd53000c1
        assert_eq!(asm("msr dbgbvr0_el1, x0"), 0xd510_0080);
        assert_eq!(asm("mrs x1, dbgwvr0_el1"), 0xd530_00c1);
        assert_eq!(asm("msr mdscr_el1, x0"), 0xd510_0240);
        assert_eq!(asm("mrs x0, esr_el1"), 0xd538_5200);
        assert_eq!(asm("add x0, x0, #1"), 0x9100_0400);
        assert_eq!(asm("str x0, [x1]"), 0xf900_0020);
        assert_eq!(asm("strb w0, [x1, #3]"), 0x3900_0c20);
        assert_eq!(asm("stp x0, x1, [x2, #16]"), 0xa901_0440);
        assert_eq!(asm("b loop"), 0x17ff_fffe);
        assert_eq!(asm("eret"), 0xd69f_03e0);
        assert_eq!(asm("mov x0, #0x10000"), 0xd2a0_0020);
        assert_eq!(asm("lsl x0, x1, #2"), 0xd37e_f420);
        assert_eq!(asm("dc zva, x3"), 0xd50b_7423);
        assert_eq!(asm("movk x0, #0xab, lsl #16"), 0xf2a0_1560);
        assert_eq!(asm("adr x1, loop"), 0x10ff_ffc1);
        assert_eq!(asm("sub x2, x3, x4"), 0xcb04_0062);
    }

    /// One instruction of every kind, at the edges of its fields.
    fn samples() -> Vec<Insn> {
        vec![
            Insn::Nop,
            Insn::Isb,
            Insn::Eret,
            Insn::Brk(0x1234),
            Insn::Svc(7),
            Insn::Hvc(0xffff),
            Insn::Msr {
                enc: SysReg::Dbg(DbgBank::Wcr, 15).encoding(),
                rt: 3,
            },
            Insn::Mrs {
                rt: 30,
                enc: SysReg::OslsrEl1.encoding(),
            },
            Insn::DaifSet(8),
            Insn::DaifClr(15),
            Insn::Movz {
                rd: 2,
                imm16: 0xbeef,
                shift: 32,
            },
            Insn::AddImm {
                rd: 31,
                rn: 31,
                imm12: 0xfff,
            },
            Insn::Movk {
                rd: 3,
                imm16: 0xab,
                shift: 16,
            },
            Insn::AddReg {
                rd: 1,
                rn: 2,
                rm: 3,
            },
            Insn::SubReg {
                rd: 23,
                rn: 21,
                rm: 20,
            },
            Insn::Adr {
                rd: 4,
                offset: -0x1234,
            },
            Insn::Adr {
                rd: 4,
                offset: 0xf_fffc,
            },
            Insn::SubImm {
                rd: 19,
                rn: 19,
                imm12: 1,
            },
            Insn::LslImm {
                rd: 1,
                rn: 2,
                shift: 0,
            },
            Insn::LslImm {
                rd: 1,
                rn: 2,
                shift: 63,
            },
            Insn::Ldr {
                size: 2,
                rt: 4,
                rn: 5,
                imm: 0x1ffe,
            },
            Insn::Str {
                size: 8,
                rt: 4,
                rn: 31,
                imm: 0x7ff8,
            },
            Insn::Ldp {
                rt: 0,
                rt2: 1,
                rn: 2,
                imm: -512,
            },
            Insn::Stp {
                rt: 0,
                rt2: 1,
                rn: 2,
                imm: 504,
            },
            Insn::DcZva { rt: 9 },
            Insn::B { offset: -4 },
            Insn::Cbz {
                rt: 0,
                offset: 1024,
            },
            Insn::Cbnz { rt: 0, offset: -8 },
        ]
    }

    #[test]
    fn decode_inverts_encode() {
        for i in samples() {
            assert_eq!(Insn::decode(i.encode()), Some(i), "{i} = {:#x}", i.encode());
            // The disassembly assembles back to the same word.
            let text = i.to_string();
            if !text.contains(" .") {
                assert_eq!(assemble(&text, 0, &|_| None).unwrap(), i.encode(), "{text}");
            }
        }
        assert_eq!(Insn::decode(0), None);
        assert_eq!(Insn::decode(0xffff_ffff), None);
    }

    #[test]
    fn assembler_errors_name_the_problem() {
        let e = |s: &str| assemble(s, 0, &|_| None).unwrap_err().why;
        assert!(e("msr dbgbcr16_el1, x0").contains("DBG"));
        assert!(e("frob x0").contains("unknown"));
        assert!(e("add x0, x1, #5000").contains("12 bits"));
        assert!(e("b nowhere").contains("unknown label"));
        assert!(e("str x0, [x1, #3]").contains("multiple of 8"));
        assert!(e("mov x0, #0x12345").contains("16-bit"));
        assert!(e("ldr x40, [x1]").contains("not a register"));
        assert_eq!(
            assemble("msr s2_0_c0_c0_3, x0", 0, &|_| None).unwrap(),
            0xd510_0060
        );
    }
}
