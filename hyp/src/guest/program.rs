//! Guest programs: assembly text with labels, assembled at a base address.

use std::collections::BTreeMap;

use hypdbg_model::guest_abi::{DOORBELL_REG, STOP_PROGRAM_END, stop_address};

use super::insn::{AsmError, Insn, assemble};

/// `str xzr, [x28, #8*STOP_PROGRAM_END]`: the word placed after every program, so a guest
/// that runs off its code stops for userspace on every backend.
pub fn program_end_word() -> u32 {
    Insn::Str {
        size: 8,
        rt: 31,
        rn: DOORBELL_REG,
        imm: (stop_address(STOP_PROGRAM_END) - hypdbg_model::guest_abi::DOORBELL) as u16,
    }
    .encode()
}

/// An assembled guest program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// Load address of the first instruction.
    pub base: u64,
    /// The instruction words.
    pub words: Vec<u32>,
    /// Label addresses.
    pub labels: BTreeMap<String, u64>,
}

/// An assembly error with its line number (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct ProgramError {
    /// The line.
    pub line: usize,
    /// What is wrong.
    pub error: AsmError,
}

fn strip_comment(l: &str) -> &str {
    let l = l.split("//").next().unwrap_or("");
    l.split(';').next().unwrap_or("").trim()
}

impl Program {
    /// Assemble `text` at `base`. Lines are instructions, `label:` (optionally followed by an
    /// instruction), `//` or `;` comments.
    ///
    /// ```
    /// use hypdbg_hyp::guest::Program;
    /// let p = Program::assemble(0x1000, "start: nop\n  brk #0 // hit\nend:").unwrap();
    /// assert_eq!(p.words, vec![0xd503201f, 0xd4200000]);
    /// assert_eq!(p.label("end"), Some(0x1008));
    /// ```
    pub fn assemble(base: u64, text: &str) -> Result<Program, ProgramError> {
        let mut labels = BTreeMap::new();
        let mut lines = Vec::new();
        let mut pc = base;
        for (i, raw) in text.lines().enumerate() {
            let mut l = strip_comment(raw);
            while let Some((name, rest)) = l.split_once(':') {
                let name = name.trim();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    break;
                }
                if labels.insert(name.to_string(), pc).is_some() {
                    return Err(ProgramError {
                        line: i + 1,
                        error: AsmError {
                            text: raw.trim().to_string(),
                            why: format!("label '{name}' defined twice"),
                        },
                    });
                }
                l = rest.trim();
            }
            if !l.is_empty() {
                lines.push((i + 1, l.to_string(), pc));
                pc += 4;
            }
        }
        let mut words = Vec::with_capacity(lines.len());
        for (line, text, pc) in lines {
            let w = assemble(&text, pc, &|l| labels.get(l).copied())
                .map_err(|error| ProgramError { line, error })?;
            if Insn::decode(w).is_some_and(|i| i.writes().contains(&DOORBELL_REG)) {
                return Err(ProgramError {
                    line,
                    error: AsmError {
                        text,
                        why: format!(
                            "x{DOORBELL_REG} is reserved: it holds the doorbell address `stop` stores to"
                        ),
                    },
                });
            }
            words.push(w);
        }
        Ok(Program {
            base,
            words,
            labels,
        })
    }

    /// A label's address.
    pub fn label(&self, name: &str) -> Option<u64> {
        self.labels.get(name).copied()
    }

    /// What a backend loads at `base`: the instructions, then the program-end stop.
    pub fn loaded_words(&self) -> Vec<u32> {
        let mut w = Vec::with_capacity(self.words.len() + 1);
        w.extend_from_slice(&self.words);
        w.push(program_end_word());
        w
    }

    /// The address just past the last instruction.
    pub fn end(&self) -> u64 {
        self.base + 4 * self.words.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_errors() {
        let p =
            Program::assemble(0x2000, "a: b: nop\nloop: sub x0, x0, #1\n cbnz x0, loop\n").unwrap();
        assert_eq!(
            (p.label("a"), p.label("b"), p.label("loop")),
            (Some(0x2000), Some(0x2000), Some(0x2004))
        );
        assert_eq!(p.words[2], 0xb5ff_ffe0);
        assert_eq!(p.end(), 0x200c);
        let e = Program::assemble(0, "nop\n nop\n frob\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = Program::assemble(0, "x: nop\nx: nop").unwrap_err();
        assert!(e.to_string().contains("twice"));
        let e = Program::assemble(0, "nop\nmov x28, #1").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("x28 is reserved"), "{e}");
        let p = Program::assemble(0x1000, "stop #3").unwrap();
        assert_eq!(p.words, vec![0xf900_0f9f], "str xzr, [x28, #24]");
        assert_eq!(p.loaded_words()[1], 0xf93f_ff9f, "str xzr, [x28, #32760]");
    }
}
