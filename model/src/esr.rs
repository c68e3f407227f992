//! ESR_ELx: exception classes and syndromes of the debug path (Arm ARM D24.2.40, Linux
//! arch/arm64/include/asm/esr.h), built and read through `arm-sysregs`' generated `EsrEl2`.

use arm_sysregs::el2::registers::EsrEl2;
use arm_sysregs::types::{EsrIssSysreg, EsrIssSysregDir, EsrIssSysregId};
use serde::{Deserialize, Serialize};

use crate::sysreg::{Encoding, SysReg};

/// EC 0x00, unknown reason (an UNDEFINED instruction).
pub const ESR_ELX_EC_UNKNOWN: u8 = 0x00;
/// EC 0x15, SVC in AArch64.
pub const ESR_ELX_EC_SVC64: u8 = 0x15;
/// EC 0x16, HVC in AArch64.
pub const ESR_ELX_EC_HVC64: u8 = 0x16;
/// EC 0x18, trapped MSR, MRS or System instruction.
pub const ESR_ELX_EC_SYS64: u8 = 0x18;
/// EC 0x30, breakpoint from a lower EL.
pub const ESR_ELX_EC_BREAKPT_LOW: u8 = 0x30;
/// EC 0x31, breakpoint from the same EL.
pub const ESR_ELX_EC_BREAKPT_CUR: u8 = 0x31;
/// EC 0x32, software step from a lower EL.
pub const ESR_ELX_EC_SOFTSTP_LOW: u8 = 0x32;
/// EC 0x33, software step from the same EL.
pub const ESR_ELX_EC_SOFTSTP_CUR: u8 = 0x33;
/// EC 0x34, watchpoint from a lower EL.
pub const ESR_ELX_EC_WATCHPT_LOW: u8 = 0x34;
/// EC 0x35, watchpoint from the same EL.
pub const ESR_ELX_EC_WATCHPT_CUR: u8 = 0x35;
/// EC 0x38, BKPT in AArch32.
pub const ESR_ELX_EC_BKPT32: u8 = 0x38;
/// EC 0x3c, BRK in AArch64.
pub const ESR_ELX_EC_BRK64: u8 = 0x3c;

/// IFSC/DFSC 0b100010: debug exception.
pub const DEBUG_FSC: u32 = 0x22;
/// Watchpoint ISS.WnR (bit 6).
pub const ESR_ELX_WNR: u32 = 1 << 6;
/// Watchpoint ISS.CM (bit 8), cache maintenance.
pub const ESR_ELX_CM: u32 = 1 << 8;
/// Software step ISS.ISV (bit 24).
pub const ESR_ELX_ISV: u32 = 1 << 24;
/// Software step ISS.EX (bit 6).
pub const ESR_ELX_EX: u32 = 1 << 6;

/// The exception classes of the Arm ARM (D24.2.40, ESR_ELx.EC), by esr.h's `ESR_ELx_EC_*`
/// stem, with what the debug path's ones are in words. A class not here is unallocated.
pub const EC_TABLE: &[(u8, &str, &str)] = &[
    (ESR_ELX_EC_UNKNOWN, "UNKNOWN", ""),
    (0x01, "WFx", ""),
    (0x03, "CP15_32", ""),
    (0x04, "CP15_64", ""),
    (0x05, "CP14_MR", ""),
    (0x06, "CP14_LS", ""),
    (0x07, "FP_ASIMD", ""),
    (0x08, "CP10_ID", ""),
    (0x09, "PAC", ""),
    (0x0a, "LS64", ""),
    (0x0c, "CP14_64", ""),
    (0x0d, "BTI", ""),
    (0x0e, "ILL", ""),
    (0x11, "SVC32", ""),
    (0x12, "HVC32", ""),
    (0x13, "SMC32", ""),
    (ESR_ELX_EC_SVC64, "SVC64", ""),
    (ESR_ELX_EC_HVC64, "HVC64", ""),
    (0x17, "SMC64", ""),
    (ESR_ELX_EC_SYS64, "SYS64", "trapped MSR/MRS"),
    (0x19, "SVE", ""),
    (0x1a, "ERET", ""),
    (0x1c, "FPAC", ""),
    (0x1d, "SME", ""),
    (0x1f, "IMP_DEF", ""),
    (0x20, "IABT_LOW", ""),
    (0x21, "IABT_CUR", ""),
    (0x22, "PC_ALIGN", ""),
    (0x24, "DABT_LOW", ""),
    (0x25, "DABT_CUR", ""),
    (0x26, "SP_ALIGN", ""),
    (0x27, "MOPS", ""),
    (0x28, "FP_EXC32", ""),
    (0x2c, "FP_EXC64", ""),
    (0x2d, "GCS", ""),
    (0x2f, "SERROR", ""),
    (
        ESR_ELX_EC_BREAKPT_LOW,
        "BREAKPT_LOW",
        "breakpoint, lower EL",
    ),
    (ESR_ELX_EC_BREAKPT_CUR, "BREAKPT_CUR", "breakpoint, same EL"),
    (
        ESR_ELX_EC_SOFTSTP_LOW,
        "SOFTSTP_LOW",
        "software step, lower EL",
    ),
    (
        ESR_ELX_EC_SOFTSTP_CUR,
        "SOFTSTP_CUR",
        "software step, same EL",
    ),
    (
        ESR_ELX_EC_WATCHPT_LOW,
        "WATCHPT_LOW",
        "watchpoint, lower EL",
    ),
    (ESR_ELX_EC_WATCHPT_CUR, "WATCHPT_CUR", "watchpoint, same EL"),
    (ESR_ELX_EC_BKPT32, "BKPT32", ""),
    (0x3a, "VECTOR32", ""),
    (ESR_ELX_EC_BRK64, "BRK64", ""),
];

/// ESR_ELx bits \[63:56\]: RES0 (ISS2 is \[55:32\]).
pub const ESR_ELX_RES0: u64 = 0xff << 56;

/// Whether the Arm ARM allocates exception class `ec`.
pub fn ec_allocated(ec: u8) -> bool {
    ec_entry(ec).is_some()
}

fn ec_entry(ec: u8) -> Option<&'static (u8, &'static str, &'static str)> {
    EC_TABLE.iter().find(|(e, _, _)| *e == ec)
}

/// esr.h's short name of an exception class (`BREAKPT_LOW`), or `unallocated`.
pub fn ec_short(ec: u8) -> &'static str {
    ec_entry(ec).map_or("unallocated", |(_, n, _)| n)
}

/// The name of an exception class as esr.h spells it, with what it is in words:
/// `BREAKPT_LOW (breakpoint, lower EL)`; `unallocated` for a class the Arm ARM does not
/// allocate.
pub fn ec_name(ec: u8) -> std::borrow::Cow<'static, str> {
    match ec_entry(ec) {
        Some((_, n, "")) => (*n).into(),
        Some((_, n, w)) => format!("{n} ({w})").into(),
        None => "unallocated".into(),
    }
}

/// An exception class by number (0..=0x3f) or by esr.h's name (`BREAKPT_CUR`, also spelled
/// `ESR_ELx_EC_BREAKPT_CUR`), in any case.
///
/// ```
/// use hypdbg_model::esr::parse_ec;
/// assert_eq!(parse_ec("esr_elx_ec_watchpt_low"), Some(0x34));
/// assert_eq!(parse_ec("0x3c"), Some(0x3c));
/// assert_eq!(parse_ec("0x40"), None);
/// ```
pub fn parse_ec(s: &str) -> Option<u8> {
    let up = s.trim().to_ascii_uppercase();
    let stem = up.strip_prefix("ESR_ELX_EC_").unwrap_or(&up);
    if let Some((ec, _, _)) = EC_TABLE.iter().find(|(_, n, _)| *n == stem) {
        return Some(*ec);
    }
    match crate::parse_u64(stem) {
        Ok(n) if n <= 0x3f => Some(n as u8),
        _ => None,
    }
}

/// The fields of an EC 0x18 ISS: a trapped MSR or MRS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SysRegIss {
    /// The register's encoding.
    pub encoding: Encoding,
    /// Rt.
    pub rt: u8,
    /// Direction: true for MRS (read).
    pub is_read: bool,
}

impl SysRegIss {
    /// Encode as ISS: Op0\[21:20\] Op2\[19:17\] Op1\[16:14\] CRn\[13:10\] Rt\[9:5\] CRm\[4:1\] Dir\[0\].
    pub const fn iss(self) -> u32 {
        let e = self.encoding;
        ((e.op0 as u32 & 3) << 20)
            | ((e.op2 as u32 & 7) << 17)
            | ((e.op1 as u32 & 7) << 14)
            | ((e.crn as u32 & 0xf) << 10)
            | ((self.rt as u32 & 0x1f) << 5)
            | ((e.crm as u32 & 0xf) << 1)
            | self.is_read as u32
    }

    /// Decode an EC 0x18 ISS. Rt and the direction come from `arm-sysregs`' `EsrIssSysreg`;
    /// the encoding fields are checked against its `sysreg_id`.
    pub fn from_iss(iss: u32) -> Self {
        let sys = EsrIssSysreg::from_bits_retain(iss);
        let encoding = Encoding {
            op0: ((iss >> 20) & 3) as u8,
            op2: ((iss >> 17) & 7) as u8,
            op1: ((iss >> 14) & 7) as u8,
            crn: ((iss >> 10) & 0xf) as u8,
            crm: ((iss >> 1) & 0xf) as u8,
        };
        debug_assert!(
            sys.sysreg_id()
                == EsrIssSysregId::new(
                    encoding.op0 as u32,
                    encoding.op1 as u32,
                    encoding.crn as u32,
                    encoding.crm as u32,
                    encoding.op2 as u32
                )
        );
        SysRegIss {
            encoding,
            rt: sys.rt(),
            is_read: sys.dir() == EsrIssSysregDir::Read,
        }
    }

    /// The register named, if the model knows it.
    pub fn sysreg(self) -> Option<SysReg> {
        SysReg::from_encoding(self.encoding)
    }
}

/// An ESR_ELx value (64-bit: ISS2\[55:32\], EC\[31:26\], IL\[25\], ISS\[24:0\]).
///
/// ```
/// use hypdbg_model::esr::{Esr, ESR_ELX_EC_WATCHPT_LOW};
/// let e = Esr::watchpoint(false, true);
/// assert_eq!(e.ec(), ESR_ELX_EC_WATCHPT_LOW);
/// assert!(e.wnr());
/// assert_eq!(e.bits(), 0xd200_0062);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Esr(u64);

impl Esr {
    /// Wrap a raw value.
    pub const fn from_bits(bits: u64) -> Self {
        Esr(bits)
    }
    /// The raw value.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// EC, IL = 1 (32-bit instruction / debug exception) and ISS.
    pub fn new(ec: u8, iss: u32) -> Self {
        let v = EsrEl2::empty()
            .with_ec(ec & 0x3f)
            .with_iss(iss & 0x01ff_ffff)
            | EsrEl2::IL;
        Esr(v.bits())
    }
    /// A breakpoint exception (AArch64.BreakpointException): EC 0x30/0x31, IFSC = 0x22.
    pub fn breakpoint(same_el: bool) -> Self {
        Self::new(
            if same_el {
                ESR_ELX_EC_BREAKPT_CUR
            } else {
                ESR_ELX_EC_BREAKPT_LOW
            },
            DEBUG_FSC,
        )
    }
    /// A watchpoint exception (AArch64.WatchpointException): EC 0x34/0x35, WnR, DFSC = 0x22.
    pub fn watchpoint(same_el: bool, wnr: bool) -> Self {
        let ec = if same_el {
            ESR_ELX_EC_WATCHPT_CUR
        } else {
            ESR_ELX_EC_WATCHPT_LOW
        };
        Self::new(ec, DEBUG_FSC | if wnr { ESR_ELX_WNR } else { 0 })
    }
    /// A software step exception (AArch64.SoftwareStepException): EC 0x32/0x33; ISV = 1 when
    /// an instruction was stepped (EX = 0: the model has no load-exclusive), ISV = 0 when the
    /// step state was entered active-pending without stepping an instruction.
    pub fn software_step(same_el: bool, stepped_an_instruction: bool) -> Self {
        let ec = if same_el {
            ESR_ELX_EC_SOFTSTP_CUR
        } else {
            ESR_ELX_EC_SOFTSTP_LOW
        };
        Self::new(
            ec,
            DEBUG_FSC
                | if stepped_an_instruction {
                    ESR_ELX_ISV
                } else {
                    0
                },
        )
    }
    /// BRK #imm (AArch64.SoftwareBreakpoint): EC 0x3c, ISS = imm16.
    pub fn brk(imm: u16) -> Self {
        Self::new(ESR_ELX_EC_BRK64, imm.into())
    }
    /// SVC #imm: EC 0x15.
    pub fn svc(imm: u16) -> Self {
        Self::new(ESR_ELX_EC_SVC64, imm.into())
    }
    /// HVC #imm: EC 0x16.
    pub fn hvc(imm: u16) -> Self {
        Self::new(ESR_ELX_EC_HVC64, imm.into())
    }
    /// A trapped MSR/MRS: EC 0x18.
    pub fn sys64(iss: SysRegIss) -> Self {
        Self::new(ESR_ELX_EC_SYS64, iss.iss())
    }
    /// An UNDEFINED instruction: EC 0x00.
    pub fn unknown() -> Self {
        Self::new(ESR_ELX_EC_UNKNOWN, 0)
    }
    /// EC.
    pub fn ec(self) -> u8 {
        EsrEl2::from_bits_retain(self.0).ec()
    }
    /// ISS.
    pub fn iss(self) -> u32 {
        EsrEl2::from_bits_retain(self.0).iss()
    }
    /// ISS2 (bits \[55:32\]).
    pub fn iss2(self) -> u32 {
        EsrEl2::from_bits_retain(self.0).iss2()
    }
    /// IL.
    pub fn il(self) -> bool {
        EsrEl2::from_bits_retain(self.0).contains(EsrEl2::IL)
    }
    /// The MSR/MRS fields, for EC 0x18.
    pub fn sysreg(self) -> Option<SysRegIss> {
        EsrEl2::from_bits_retain(self.0)
            .iss_sysreg()
            .map(|s| SysRegIss::from_iss(s.bits()))
    }
    /// WnR, for watchpoints.
    pub fn wnr(self) -> bool {
        self.iss() & ESR_ELX_WNR != 0
    }
    /// The class as seen from the other side: the "lower EL" class a hypervisor sees for a
    /// guest EL1 event becomes the "same EL" class when the guest handles it itself.
    pub fn to_same_el(self) -> Self {
        match self.ec() {
            ESR_ELX_EC_BREAKPT_LOW | ESR_ELX_EC_SOFTSTP_LOW | ESR_ELX_EC_WATCHPT_LOW => {
                Esr::new(self.ec() + 1, self.iss())
            }
            _ => self,
        }
    }
    /// Whether this is one of the debug classes KVM_EXIT_DEBUG reports.
    pub fn is_debug(self) -> bool {
        matches!(
            self.ec(),
            ESR_ELX_EC_BREAKPT_LOW..=ESR_ELX_EC_WATCHPT_CUR | ESR_ELX_EC_BKPT32 | ESR_ELX_EC_BRK64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysreg::DbgBank;

    #[test]
    fn classes_and_iss() {
        assert_eq!(Esr::breakpoint(false).bits(), 0xc200_0022);
        assert_eq!(Esr::breakpoint(true).ec(), 0x31);
        assert_eq!(Esr::software_step(false, true).bits(), 0xcb00_0022);
        assert_eq!(Esr::software_step(true, false).bits(), 0xce00_0022);
        assert_eq!(Esr::watchpoint(true, false).ec(), 0x35);
        assert!(!Esr::watchpoint(true, false).wnr());
        assert_eq!(Esr::brk(0x1234).bits(), 0xf200_1234);
        assert_eq!(Esr::brk(0).iss(), 0);
        assert!(Esr::brk(0).il());
        assert_eq!(Esr::hvc(7).ec(), 0x16);
        assert_eq!(Esr::breakpoint(false).to_same_el().ec(), 0x31);
        assert_eq!(Esr::brk(3).to_same_el(), Esr::brk(3));
        assert!(Esr::brk(0).is_debug() && !Esr::svc(0).is_debug());
    }

    #[test]
    fn sysreg_iss_round_trips() {
        for reg in [
            SysReg::Dbg(DbgBank::Wcr, 13),
            SysReg::MdscrEl1,
            SysReg::OslarEl1,
        ] {
            for is_read in [false, true] {
                let iss = SysRegIss {
                    encoding: reg.encoding(),
                    rt: 17,
                    is_read,
                };
                let esr = Esr::sys64(iss);
                assert_eq!(esr.ec(), ESR_ELX_EC_SYS64);
                let back = esr.sysreg().unwrap();
                assert_eq!(back, iss);
                assert_eq!(back.sysreg(), Some(reg));
            }
        }
        // MRS x0, DBGBVR5_EL1: Op0=2 Op2=4 Op1=0 CRn=0 Rt=0 CRm=5 Dir=1.
        let iss = SysRegIss {
            encoding: SysReg::Dbg(DbgBank::Bvr, 5).encoding(),
            rt: 0,
            is_read: true,
        };
        assert_eq!(iss.iss(), 0x0028_000b);
        assert!(Esr::brk(0).sysreg().is_none());
    }
}
