//! Register values explained in words, with RES0 bits and reserved encodings flagged (the
//! CLI's `hypdbg decode`).

use serde::Serialize;

use crate::bcr::{self, BreakpointType, Dbgbcr};
use crate::bits::{Field, is_contiguous};
use crate::ctrl::{MDCR_EL2_HPMN_MASK, MdcrEl2, MdscrEl1};
use crate::dfr0::DebugFeatures;
use crate::error::ModelError;
use crate::esr::{self, Esr, ec_name};
use crate::va::{is_sign_extended, sign_extend};
use crate::wcr::{self, Dbgwcr, Lsc};

/// How serious a note is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Good to know.
    Info,
    /// RES0 bits are set (tolerated, but software should write zero).
    Res0,
    /// A reserved encoding: CONSTRAINED UNPREDICTABLE or never matches.
    Reserved,
    /// Not an architecturally valid value.
    Invalid,
}

/// One field of a register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldExplanation {
    /// The field's name.
    pub name: &'static str,
    /// `[msb:lsb]`.
    pub bits: String,
    /// Its value.
    pub value: u64,
    /// What it means.
    pub meaning: String,
}

/// A remark on the value as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Note {
    /// How serious.
    pub severity: Severity,
    /// What.
    pub text: String,
}

/// A register value in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The register.
    pub register: &'static str,
    /// The value, hex.
    pub value: String,
    /// Its fields.
    pub fields: Vec<FieldExplanation>,
    /// Remarks.
    pub notes: Vec<Note>,
}

impl Explanation {
    fn new(register: &'static str, value: u64) -> Self {
        Explanation {
            register,
            value: format!("{value:#x}"),
            fields: Vec::new(),
            notes: Vec::new(),
        }
    }
    fn field(&mut self, f: Field, value: u64, meaning: impl Into<String>) {
        self.fields.push(FieldExplanation {
            name: f.name,
            bits: f.bits(),
            value: f.get(value),
            meaning: meaning.into(),
        });
    }
    fn note(&mut self, severity: Severity, text: impl Into<String>) {
        self.notes.push(Note {
            severity,
            text: text.into(),
        });
    }
    fn res0(&mut self, res0: u64) {
        if res0 != 0 {
            self.note(
                Severity::Res0,
                format!("RES0 bits set: {res0:#x} (reserved: software should write them as 0)"),
            );
        }
    }
    /// Whether any note is worse than informational.
    pub fn has_problems(&self) -> bool {
        self.notes.iter().any(|n| n.severity != Severity::Info)
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} = {}", self.register, self.value)?;
        for x in &self.fields {
            writeln!(
                f,
                "  {:<10} [{:>5}] = {:#x}: {}",
                x.name, x.bits, x.value, x.meaning
            )?;
        }
        for n in &self.notes {
            let tag = match n.severity {
                Severity::Info => "note",
                Severity::Res0 => "RES0",
                Severity::Reserved => "RESERVED",
                Severity::Invalid => "INVALID",
            };
            writeln!(f, "  {tag}: {}", n.text)?;
        }
        Ok(())
    }
}

fn pxc_meaning(pxc: u8) -> &'static str {
    match pxc {
        0b00 => "no AArch64 EL (AArch32-only encoding for breakpoints; reserved for watchpoints)",
        0b01 => "EL1",
        0b10 => "EL0",
        _ => "EL1 and EL0",
    }
}

fn ssc_meaning(ssc: u8) -> &'static str {
    match ssc {
        0b00 => "both security states",
        0b01 => "Non-secure",
        0b10 => "Secure only: never matches a KVM guest",
        _ => "with HMC: EL2 and Non-secure; without: Secure",
    }
}

/// DBGBCR\<n>_EL1.
pub fn explain_dbgbcr(v: u64) -> Explanation {
    let b = Dbgbcr::from_bits(v);
    let mut x = Explanation::new("DBGBCR<n>_EL1", v);
    x.field(bcr::E, v, if b.enabled() { "enabled" } else { "disabled" });
    x.field(bcr::PMC, v, pxc_meaning(b.pmc()));
    x.field(
        bcr::BAS,
        v,
        match b.bas() {
            0b1111 => "0b1111: whole A64 instruction (RES1 for AArch64)",
            0b0011 => "0b0011: first halfword (matches an A64 instruction)",
            0b1100 => "0b1100: second halfword only",
            _ => "reserved",
        },
    );
    x.field(
        bcr::HMC,
        v,
        if b.hmc() {
            "higher mode control set"
        } else {
            "clear"
        },
    );
    x.field(bcr::SSC, v, ssc_meaning(b.ssc()));
    x.field(
        bcr::LBN,
        v,
        if matches!(b.bt(), BreakpointType::LinkedAddress) {
            "linked context breakpoint"
        } else {
            "ignored (not a linked address breakpoint)"
        },
    );
    x.field(bcr::BT, v, b.bt().describe());
    x.res0(b.res0());
    if !matches!(b.bas(), 0b1111 | 0b0011) {
        x.note(
            Severity::Reserved,
            "BAS does not select an A64 instruction: CONSTRAINED UNPREDICTABLE",
        );
    }
    if matches!(
        b.bt(),
        BreakpointType::AddressMismatch(_)
            | BreakpointType::Vmid(_)
            | BreakpointType::El2Context(_)
    ) {
        x.note(
            Severity::Reserved,
            "BT is reserved for a non-VHE guest: behaves as disabled or as another type",
        );
    }
    if b.pmc() == 0 && !b.hmc() {
        x.note(
            Severity::Info,
            "PMC = 0b00: no AArch64 exception level matches",
        );
    }
    if b.ssc() == 0b10 {
        x.note(Severity::Info, "SSC = 0b10 matches only in Secure state");
    }
    if b.enabled() && !b.hmc() && b.ssc() != 0b10 {
        x.note(Severity::Info, bcr_matches_words(b.bt()));
    }
    x
}

/// What an enabled breakpoint of type `bt` fires on, in words.
fn bcr_matches_words(bt: BreakpointType) -> &'static str {
    match bt {
        BreakpointType::UnlinkedAddress => "breakpoint on the instruction at DBGBVR<n>_EL1[48:2]",
        BreakpointType::LinkedAddress => {
            "breakpoint on the instruction at DBGBVR<n>_EL1[48:2], only while its LBN context breakpoint matches"
        }
        BreakpointType::UnlinkedContext => {
            "context breakpoint: fires on any instruction while CONTEXTIDR_EL1 equals DBGBVR<n>_EL1[31:0]"
        }
        BreakpointType::LinkedContext => {
            "context comparator for linked breakpoints and watchpoints (CONTEXTIDR_EL1 == DBGBVR<n>_EL1[31:0]): it never fires alone"
        }
        _ => "a reserved breakpoint type: no defined match",
    }
}

/// DBGWCR\<n>_EL1.
pub fn explain_dbgwcr(v: u64) -> Explanation {
    let w = Dbgwcr::from_bits(v);
    let mut x = Explanation::new("DBGWCR<n>_EL1", v);
    x.field(wcr::E, v, if w.enabled() { "enabled" } else { "disabled" });
    x.field(wcr::PAC, v, pxc_meaning(w.pac()));
    x.field(
        wcr::LSC,
        v,
        match w.lsc() {
            Lsc::Reserved => "reserved: never fires",
            Lsc::Load => "loads",
            Lsc::Store => "stores",
            Lsc::Both => "loads and stores",
        },
    );
    let bas = w.bas();
    let bytes: Vec<String> = (0..8)
        .filter(|i| bas >> i & 1 != 0)
        .map(|i| i.to_string())
        .collect();
    x.field(
        wcr::BAS,
        v,
        if bas == 0 {
            "no byte selected: never fires".to_string()
        } else {
            format!("bytes {} of the doubleword at DBGWVR", bytes.join(","))
        },
    );
    x.field(
        wcr::HMC,
        v,
        if w.hmc() {
            "higher mode control set"
        } else {
            "clear"
        },
    );
    x.field(wcr::SSC, v, ssc_meaning(w.ssc()));
    x.field(
        wcr::LBN,
        v,
        if w.linked() {
            "linked context breakpoint"
        } else {
            "ignored (not linked)"
        },
    );
    x.field(
        wcr::WT,
        v,
        if w.linked() {
            "linked to a context breakpoint"
        } else {
            "unlinked"
        },
    );
    x.field(
        wcr::MASK,
        v,
        match w.mask() {
            0 => "no mask: BAS selects the bytes".to_string(),
            1 | 2 => "reserved".to_string(),
            m => format!("watch the 2^{m} = {:#x} aligned bytes at DBGWVR", 1u64 << m),
        },
    );
    x.res0(w.res0());
    if w.lsc() == Lsc::Reserved {
        x.note(
            Severity::Reserved,
            "LSC = 0b00 is reserved: the watchpoint never fires",
        );
    }
    if w.pac() == 0 && !w.hmc() {
        x.note(
            Severity::Reserved,
            "PAC = 0b00 with HMC = 0 is a reserved state combination: CONSTRAINED UNPREDICTABLE",
        );
    }
    match w.mask() {
        1 | 2 => x.note(
            Severity::Reserved,
            "MASK = 1 or 2 is reserved: CONSTRAINED UNPREDICTABLE",
        ),
        0 => {}
        _ if bas != 0xff => x.note(
            Severity::Reserved,
            "MASK != 0 requires BAS = 0xff: CONSTRAINED UNPREDICTABLE",
        ),
        _ => {}
    }
    if !is_contiguous(bas.into()) {
        x.note(
            Severity::Reserved,
            "BAS is not contiguous: CONSTRAINED UNPREDICTABLE",
        );
    }
    x
}

fn explain_value_register(
    register: &'static str,
    v: u64,
    low_res0: u64,
    what: &str,
) -> Explanation {
    let mut x = Explanation::new(register, v);
    let va = Field::new("VA", 48, 2);
    x.field(va, v, format!("{what} {:#x}", sign_extend(v) & !low_res0));
    x.fields.push(FieldExplanation {
        name: "RESS",
        bits: "63:49".into(),
        value: v >> 49,
        meaning: "sign extension of bit 48".into(),
    });
    if v & 3 != 0 {
        x.note(
            Severity::Res0,
            format!("bits [1:0] = {:#x} are RES0 (ignored)", v & 3),
        );
    }
    if !is_sign_extended(v) {
        x.note(
            Severity::Reserved,
            format!(
                "bits [63:48] are not a sign extension (RESS): CONSTRAINED UNPREDICTABLE whether they are compared; write {:#x}",
                sign_extend(v)
            ),
        );
    }
    x
}

/// DBGBVR\<n>_EL1.
pub fn explain_dbgbvr(v: u64) -> Explanation {
    explain_value_register(
        "DBGBVR<n>_EL1",
        v,
        3,
        "instruction address (or CONTEXTIDR in [31:0] for context types)",
    )
}

/// DBGWVR\<n>_EL1.
pub fn explain_dbgwvr(v: u64) -> Explanation {
    let mut x = explain_value_register("DBGWVR<n>_EL1", v, 7, "doubleword address");
    if v & 4 != 0 {
        x.note(
            Severity::Info,
            "bit 2 set: deprecated word-aligned form, only BAS[3:0] apply",
        );
    }
    x
}

fn explain_flags<F: bitflags::Flags<Bits = u64>>(x: &mut Explanation, v: u64) {
    for (name, flag) in F::all().iter_names() {
        let bit = flag.bits().trailing_zeros();
        let f = Field {
            name: "",
            msb: bit,
            lsb: bit,
        };
        x.fields.push(FieldExplanation {
            name,
            bits: f.bits(),
            value: u64::from(v & flag.bits() != 0),
            meaning: if v & flag.bits() != 0 {
                "set".into()
            } else {
                "clear".into()
            },
        });
    }
}

/// MDSCR_EL1.
pub fn explain_mdscr(v: u64) -> Explanation {
    let mut x = Explanation::new("MDSCR_EL1", v);
    explain_flags::<MdscrEl1>(&mut x, v);
    x.res0(v & !MdscrEl1::all().bits());
    let ss = v & MdscrEl1::SS.bits() != 0;
    let kde = v & MdscrEl1::KDE.bits() != 0;
    let mde = v & MdscrEl1::MDE.bits() != 0;
    x.note(
        Severity::Info,
        format!(
            "software step {}, breakpoints/watchpoints {}, debug exceptions at EL1 {}",
            if ss { "on" } else { "off" },
            if mde { "enabled (MDE)" } else { "disabled" },
            if kde {
                "enabled (KDE, with PSTATE.D = 0)"
            } else {
                "disabled: only EL0 events"
            }
        ),
    );
    if mde && !kde {
        x.note(Severity::Info, "MDE without KDE: EL0 breakpoints and watchpoints only (the case the seed patch's 'KDE twice' test missed)");
    }
    x
}

/// MDCR_EL2.
pub fn explain_mdcr(v: u64) -> Explanation {
    let mut x = Explanation::new("MDCR_EL2", v);
    x.fields.push(FieldExplanation {
        name: "HPMN",
        bits: "4:0".into(),
        value: v & MDCR_EL2_HPMN_MASK,
        meaning: "event counters accessible below EL2".into(),
    });
    explain_flags::<MdcrEl2>(&mut x, v);
    x.res0(v & !(MdcrEl2::all().bits() | MDCR_EL2_HPMN_MASK));
    let tde = v & MdcrEl2::TDE.bits() != 0;
    let tda = v & MdcrEl2::TDA.bits() != 0;
    x.note(Severity::Info, match (tde, tda) {
        (true, _) => "TDE: debug exceptions go to EL2 and TDA/TDOSA/TDRA act as 1 (userspace debugs the guest)",
        (false, true) => "TDA: guest debug register accesses trap to EL2 (lazy switching)",
        (false, false) => "guest debug register accesses do not trap (the guest's state is loaded)",
    });
    if v >> 32 != 0 {
        x.note(
            Severity::Info,
            "bits above 31 are set: MDCR_EL2 must be kept in a 64-bit variable",
        );
    }
    x
}

/// ID_AA64DFR0_EL1.
pub fn explain_dfr0(v: u64) -> Explanation {
    let mut x = Explanation::new("ID_AA64DFR0_EL1", v);
    let debugver = Field::new("DebugVer", 3, 0);
    let pmuver = Field::new("PMUVer", 11, 8);
    let brps = Field::new("BRPs", 15, 12);
    let wrps = Field::new("WRPs", 23, 20);
    let ctx = Field::new("CTX_CMPs", 31, 28);
    let pmsver = Field::new("PMSVer", 35, 32);
    let trbe = Field::new("TraceBuffer", 47, 44);
    x.field(
        debugver,
        v,
        format!("debug architecture version {:#x}", debugver.get(v)),
    );
    x.field(pmuver, v, "PMU version");
    x.field(
        brps,
        v,
        format!("{} breakpoints (field + 1)", brps.get(v) + 1),
    );
    x.field(
        wrps,
        v,
        format!("{} watchpoints (field + 1)", wrps.get(v) + 1),
    );
    x.field(
        ctx,
        v,
        match ctx.get(v) + 1 {
            1 => "1 context-aware breakpoint, the highest-numbered".to_string(),
            n => format!("{n} context-aware breakpoints, the highest-numbered"),
        },
    );
    x.field(
        pmsver,
        v,
        if pmsver.get(v) == 0 {
            "no SPE"
        } else {
            "SPE implemented"
        },
    );
    x.field(
        trbe,
        v,
        if trbe.get(v) == 0 {
            "no TRBE"
        } else {
            "TRBE implemented"
        },
    );
    match DebugFeatures::new(v) {
        Ok(f) => x.note(Severity::Info, format!(
            "{}: the kernel's save_debug() moves BRPs + 1 = {} and WRPs + 1 = {} registers per bank",
            f.debugver_name(),
            f.num_brps(),
            f.num_wrps()
        )),
        Err(e) => x.note(Severity::Invalid, e.to_string()),
    }
    x
}

/// ESR_ELx.
pub fn explain_esr(v: u64) -> Explanation {
    let e = Esr::from_bits(v);
    let mut x = Explanation::new("ESR_ELx", v);
    let ec = Field::new("EC", 31, 26);
    let il = Field::new("IL", 25, 25);
    let iss = Field::new("ISS", 24, 0);
    x.field(ec, v, ec_name(e.ec()));
    x.field(
        il,
        v,
        if e.il() {
            "32-bit instruction (or debug exception)"
        } else {
            "16-bit instruction"
        },
    );
    let iss_meaning = match e.ec() {
        esr::ESR_ELX_EC_SYS64 => match e.sysreg() {
            Some(s) => format!(
                "{} {} x{}",
                if s.is_read { "MRS" } else { "MSR" },
                s.sysreg().map_or_else(
                    || format!(
                        "S{}_{}_C{}_C{}_{}",
                        s.encoding.op0,
                        s.encoding.op1,
                        s.encoding.crn,
                        s.encoding.crm,
                        s.encoding.op2
                    ),
                    |r| r.to_string()
                ),
                s.rt
            ),
            None => "malformed".into(),
        },
        esr::ESR_ELX_EC_WATCHPT_LOW | esr::ESR_ELX_EC_WATCHPT_CUR => format!(
            "{} access, DFSC {:#x}{}",
            if e.wnr() { "write" } else { "read" },
            e.iss() & 0x3f,
            if e.iss() & esr::ESR_ELX_CM != 0 {
                ", cache maintenance"
            } else {
                ""
            }
        ),
        esr::ESR_ELX_EC_SOFTSTP_LOW | esr::ESR_ELX_EC_SOFTSTP_CUR => {
            if e.iss() & esr::ESR_ELX_ISV != 0 {
                format!(
                    "an instruction was stepped (ISV = 1, EX = {})",
                    e.iss() >> 6 & 1
                )
            } else {
                "no instruction stepped (ISV = 0): entered active-pending".into()
            }
        }
        esr::ESR_ELX_EC_BRK64 | esr::ESR_ELX_EC_SVC64 | esr::ESR_ELX_EC_HVC64 => {
            format!("#{:#x}", e.iss() & 0xffff)
        }
        esr::ESR_ELX_EC_BREAKPT_LOW | esr::ESR_ELX_EC_BREAKPT_CUR => {
            format!("IFSC {:#x}", e.iss() & 0x3f)
        }
        _ => format!("{:#x}", e.iss()),
    };
    x.field(iss, v, iss_meaning);
    if e.iss2() != 0 {
        x.note(
            Severity::Info,
            format!("ISS2 = {:#x} (bits [55:32])", e.iss2()),
        );
    }
    x.res0(v & esr::ESR_ELX_RES0);
    if !esr::ec_allocated(e.ec()) {
        x.note(
            Severity::Reserved,
            format!("EC {:#x} is unallocated in the Arm ARM", e.ec()),
        );
    }
    x
}

/// Explain `value` as `register` (dbgbcr, dbgwcr, dbgbvr, dbgwvr, mdscr, mdcr, id_aa64dfr0,
/// esr; an `_el1`/`_el2` suffix and a register number are accepted).
///
/// ```
/// let x = hypdbg_model::explain::explain("dbgbcr3_el1", 0x1fe3).unwrap();
/// assert!(x.notes.iter().any(|n| n.text.contains("RES0")));
/// assert!(hypdbg_model::explain::explain("dbgxyz", 0).is_err());
/// ```
pub fn explain(register: &str, value: u64) -> Result<Explanation, ModelError> {
    let lower = register.trim().to_ascii_lowercase();
    let mut stem = lower.trim_end_matches("_el1").trim_end_matches("_el2");
    if stem.starts_with("dbg") {
        stem = stem.trim_end_matches(|c: char| c.is_ascii_digit());
    }
    Ok(match stem {
        "dbgbcr" => explain_dbgbcr(value),
        "dbgwcr" => explain_dbgwcr(value),
        "dbgbvr" => explain_dbgbvr(value),
        "dbgwvr" => explain_dbgwvr(value),
        "mdscr" => explain_mdscr(value),
        "mdcr" => explain_mdcr(value),
        "id_aa64dfr0" | "dfr0" => explain_dfr0(value),
        "esr" | "hsr" => explain_esr(value),
        _ => {
            return Err(ModelError::UnknownRegister {
                name: register.to_string(),
                hint: "decode knows dbgbcr, dbgwcr, dbgbvr, dbgwvr, mdscr, mdcr, id_aa64dfr0 and esr",
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(x: &Explanation, sev: Severity, needle: &str) -> bool {
        x.notes
            .iter()
            .any(|n| n.severity == sev && n.text.contains(needle))
    }

    #[test]
    fn bcr_notes() {
        assert!(!explain_dbgbcr(0x1e7).has_problems());
        assert!(has(&explain_dbgbcr(0x1fe3), Severity::Res0, "0x1e00"));
        assert!(has(&explain_dbgbcr(0x187), Severity::Reserved, "BAS"));
        assert!(has(&explain_dbgbcr(0x40_01e7), Severity::Reserved, "BT"));
        // QEMU's bug: 0x7f instead of 0x1e7 (BAS = 0b0011, RES0 bits 4:3 set).
        assert!(has(&explain_dbgbcr(0x7f), Severity::Res0, "0x18"));
    }

    #[test]
    fn wcr_notes() {
        assert!(!explain_dbgwcr(0x1ffb).has_problems());
        assert!(has(&explain_dbgwcr(0x1fe3), Severity::Reserved, "LSC"));
        assert!(has(
            &explain_dbgwcr(0x0100_1ffb),
            Severity::Reserved,
            "MASK = 1 or 2"
        ));
        assert!(has(
            &explain_dbgwcr(0x0400_01fb),
            Severity::Reserved,
            "BAS = 0xff"
        ));
        assert!(has(
            &explain_dbgwcr(0x0a1b),
            Severity::Reserved,
            "not contiguous"
        ));
        assert!(has(
            &explain_dbgwcr(0x1ff9),
            Severity::Reserved,
            "PAC = 0b00"
        ));
        assert!(has(&explain_dbgwcr(0x20_1ffb), Severity::Res0, "0x200000"));
        let x = explain_dbgwcr(0x0c00_1ffb);
        assert!(
            x.fields
                .iter()
                .any(|f| f.name == "MASK" && f.meaning.contains("0x1000"))
        );
    }

    #[test]
    fn value_registers() {
        assert!(!explain_dbgbvr(0xffff_8000_0000_1000).has_problems());
        assert!(has(
            &explain_dbgbvr(0x0001_8000_0000_1000),
            Severity::Reserved,
            "0xffff800000001000"
        ));
        assert!(has(&explain_dbgwvr(0x1004), Severity::Info, "word-aligned"));
        assert!(has(&explain_dbgwvr(0x1001), Severity::Res0, "[1:0]"));
    }

    #[test]
    fn system_registers() {
        assert!(has(
            &explain_mdscr(0x8000),
            Severity::Info,
            "MDE without KDE"
        ));
        let m = explain_mdscr(0xa001);
        assert!(m.fields.iter().any(|f| f.name == "SS" && f.value == 1));
        assert!(has(&explain_mdcr(0x1_0000_0e66), Severity::Info, "64-bit"));
        assert!(has(&explain_mdcr(0x200), Severity::Info, "TDA"));
        assert!(has(
            &explain_dfr0(0x1030_5106),
            Severity::Info,
            "6 and WRPs + 1 = 4"
        ));
        assert!(has(
            &explain_dfr0(0x1030_0106),
            Severity::Invalid,
            "BRPs = 0"
        ));
        let e = explain_esr(
            Esr::sys64(crate::esr::SysRegIss {
                encoding: crate::sysreg::SysReg::Dbg(crate::sysreg::DbgBank::Wvr, 0).encoding(),
                rt: 1,
                is_read: false,
            })
            .bits(),
        );
        assert!(
            e.fields.iter().any(|f| f.meaning == "MSR DBGWVR0_EL1 x1"),
            "{e}"
        );
        assert!(
            explain_esr(0xd200_0062)
                .fields
                .iter()
                .any(|f| f.meaning.starts_with("write access"))
        );
        for r in [
            "dbgbcr",
            "DBGWCR15_EL1",
            "dbgbvr0",
            "dbgwvr",
            "mdscr_el1",
            "mdcr_el2",
            "id_aa64dfr0_el1",
            "esr_el2",
        ] {
            assert!(explain(r, 0x1).is_ok(), "{r}");
        }
    }
}
