//! Names in scenario files: labels and symbols for addresses ([`Resolver`]), and the
//! registers ONE_REG reaches ([`RegName`]).

use std::collections::BTreeMap;

use hypdbg_hyp::guest::Program;
use hypdbg_model::uapi::core_reg;
use hypdbg_model::{DebugFeatures, SysReg};

use super::ops::Value;

/// Labels of the program and the scenario's symbols, and how `label+8` reads.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    labels: BTreeMap<String, u64>,
    /// Symbols whose value is not a number (the file checks report their definitions).
    not_numbers: std::collections::BTreeSet<String>,
}

impl Resolver {
    /// The program's labels plus `symbols` (symbols must be numbers; a symbol that is not is
    /// ignored here and reported by the file checks).
    pub fn new(p: &Program, symbols: &BTreeMap<String, Value>) -> Self {
        let mut labels = p.labels.clone();
        let mut not_numbers = std::collections::BTreeSet::new();
        for (k, v) in symbols {
            match v {
                Value::Num(n) => {
                    labels.insert(k.clone(), *n);
                }
                Value::Label(_) => {
                    not_numbers.insert(k.clone());
                }
            }
        }
        Resolver {
            labels,
            not_numbers,
        }
    }

    /// Every name an address may be written with.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.labels.keys().map(String::as_str)
    }

    /// `name+off` or `name-off` split, with the sign.
    fn split(l: &str) -> Option<(&str, bool, &str)> {
        let i = l.rfind(['+', '-'])?;
        Some((&l[..i], l.as_bytes()[i] == b'+', &l[i + 1..]))
    }

    /// Why `v` does not resolve, in words (`names`: what the file defines, for the message).
    pub fn why_not(&self, v: &Value, names: &str) -> String {
        let Value::Label(l) = v else {
            return format!("'{v}' is a number");
        };
        let name = Self::split(l).map_or(l.as_str(), |(n, _, _)| n).trim();
        if self.not_numbers.contains(name) {
            return format!(
                "'{v}': symbol '{name}' is not a number, so nothing can be computed from it (see its definition)"
            );
        }
        if let (Some(base), Some((_, plus, off))) = (self.name(name), Self::split(l))
            && let Ok(off) = hypdbg_model::parse_u64(off)
        {
            let dir = if plus {
                "past the top"
            } else {
                "below the bottom"
            };
            return format!(
                "'{v}' is {base:#x} {} {off:#x}, {dir} of the 64-bit address space",
                if plus { '+' } else { '-' }
            );
        }
        format!("unknown label '{v}': the program and the symbols define {names}")
    }

    /// A name's address.
    pub fn name(&self, name: &str) -> Option<u64> {
        self.labels.get(name.trim()).copied()
    }

    /// The value: a number, a name, or a name `+`/`-` an offset (`None` for an unknown name
    /// or an address outside 0..2^64: [`Resolver::why_not`] says which).
    pub fn resolve(&self, v: &Value) -> Option<u64> {
        match v {
            Value::Num(n) => Some(*n),
            Value::Label(l) => {
                if let Some(a) = self.name(l) {
                    return Some(a);
                }
                let (name, plus, off) = Self::split(l)?;
                let base = self.name(name)?;
                let off = hypdbg_model::parse_u64(off).ok()?;
                if plus {
                    base.checked_add(off)
                } else {
                    base.checked_sub(off)
                }
            }
        }
    }

    /// An address with its name when it has one: `0x10040 <hw_bp1>`.
    pub fn describe(&self, addr: u64) -> String {
        match self.symbolize(addr) {
            Some(s) => format!("{addr:#x} <{s}>"),
            None => format!("{addr:#x}"),
        }
    }

    /// An address as `label` or `label+0x8` when a label is at or just before it (within
    /// 4 KiB), for traces.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let (name, base) = self
            .labels
            .iter()
            .filter(|(_, a)| **a <= addr && addr - **a < 0x1000)
            .max_by_key(|(n, a)| (**a, std::cmp::Reverse(n.len())))?;
        Some(if *base == addr {
            name.clone()
        } else {
            format!("{name}+{:#x}", addr - base)
        })
    }
}

/// A register a scenario names: a core register or a system register, as ONE_REG reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegName {
    /// x0..x30, sp, pc, pstate: the ONE_REG core id and its name.
    Core(u64, &'static str),
    /// A debug system register.
    Sys(SysReg),
}

const CORE_NAMES: [&str; 31] = [
    "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
    "x15", "x16", "x17", "x18", "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
    "x28", "x29", "x30",
];

impl RegName {
    /// `x0`..`x30`, `sp`, `pc`, `pstate` (any case), or a system register ONE_REG reaches
    /// (`DBG{B,W}{C,V}R<n>_EL1`, `MDSCR_EL1`, `MDCCINT_EL1`, `OSLSR_EL1`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let low = s.trim().to_ascii_lowercase();
        match low.as_str() {
            "pc" => return Ok(RegName::Core(core_reg::PC, "pc")),
            "sp" => return Ok(RegName::Core(core_reg::SP, "sp")),
            "pstate" => return Ok(RegName::Core(core_reg::PSTATE, "pstate")),
            _ => {}
        }
        if let Some(n) = CORE_NAMES.iter().position(|c| *c == low) {
            return Ok(RegName::Core(core_reg::x(n as u8), CORE_NAMES[n]));
        }
        let hint = "ONE_REG reaches x0..x30, sp, pc, pstate, DBG{B,W}{C,V}R<n>_EL1, MDSCR_EL1, MDCCINT_EL1, OSLSR_EL1, DBGVCR32_EL2 and ID_AA64DFR0_EL1";
        match s.parse::<SysReg>() {
            Ok(
                r @ (SysReg::Dbg(..)
                | SysReg::MdscrEl1
                | SysReg::MdccintEl1
                | SysReg::OslsrEl1
                | SysReg::Dbgvcr32El2
                | SysReg::IdAa64dfr0El1),
            ) => Ok(RegName::Sys(r)),
            Ok(r) => Err(format!("{r} is not reachable through ONE_REG here: {hint}")),
            Err(_) => Err(format!("unknown register '{}': {hint}", s.trim())),
        }
    }

    /// The KVM_{GET,SET}_ONE_REG id.
    pub fn id(self) -> u64 {
        match self {
            RegName::Core(id, _) => id,
            RegName::Sys(r) => r.one_reg_id(),
        }
    }

    /// Whether a guest that sees `f` implements it.
    pub fn implemented(self, f: &DebugFeatures) -> bool {
        match self {
            RegName::Sys(SysReg::Dbg(bank, n)) => usize::from(n) < f.count(bank),
            _ => true,
        }
    }
}

impl std::fmt::Display for RegName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegName::Core(_, n) => f.write_str(n),
            RegName::Sys(r) => write!(f, "{r}"),
        }
    }
}
