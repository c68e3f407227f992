//! The same guest bytes on both backends: every guest program hypdbg runs (the runtime at
//! VBAR_EL1, every shipped scenario's code, the benchmark guests) must be real A64. Each
//! text is assembled by hypdbg's assembler and by GNU as (`aarch64-linux-gnu-as`, with
//! `stop #n` spelled as the store it is), and the words must be identical; objdump
//! (`aarch64-linux-gnu-objdump -D -b binary -m aarch64`) must decode every word hypdbg
//! produced as an instruction.
//!
//! Needs the cross binutils (Debian's binutils-aarch64-linux-gnu, pulled in by
//! gcc-aarch64-linux-gnu), so it is `#[ignore]`d: `.ci/run` runs it, and locally
//! `cargo test --test guest_encodings -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hypdbg::scenario::source::ScenarioFile;
use hypdbg_hyp::guest::{Program, runtime};
use hypdbg_model::guest_abi::{DOORBELL, DOORBELL_REG, stop_address};

/// hypdbg's `stop #n` in GNU syntax: `str xzr, [x28, #8n]`.
fn gnu_syntax(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let (code, comment) = match line.find("//") {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        let trimmed = code.trim_start();
        let label_end = trimmed.find(':').map_or(0, |i| i + 1);
        let (label, insn) = trimmed.split_at(label_end);
        let insn_t = insn.trim();
        if let Some(n) = insn_t.strip_prefix("stop").map(str::trim) {
            let n: u16 = n
                .trim_start_matches('#')
                .parse()
                .unwrap_or_else(|_| panic!("stop operand in {line:?}"));
            let off = stop_address(n) - DOORBELL;
            out += &format!("{label} str xzr, [x{DOORBELL_REG}, #{off}] {comment}\n");
        } else {
            out += line;
            out += "\n";
        }
    }
    out
}

fn tool(name: &str) -> String {
    format!("aarch64-linux-gnu-{name}")
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install binutils-aarch64-linux-gnu)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest_encodings");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// GNU as's words for `text`.
fn gnu_words(name: &str, text: &str) -> Vec<u32> {
    let (s, o, bin) = (
        scratch(&format!("{name}.s")),
        scratch(&format!("{name}.o")),
        scratch(&format!("{name}.bin")),
    );
    std::fs::write(&s, gnu_syntax(text)).unwrap();
    run(Command::new(tool("as")).arg(&s).arg("-o").arg(&o));
    run(Command::new(tool("objcopy"))
        .args(["-O", "binary", "-j", ".text"])
        .arg(&o)
        .arg(&bin));
    std::fs::read(&bin)
        .unwrap()
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// objdump's lines for `words` that are not an instruction.
fn undecoded(name: &str, words: &[u32]) -> Vec<String> {
    let bin = scratch(&format!("{name}.hypdbg.bin"));
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write(&bin, bytes).unwrap();
    let out = run(Command::new(tool("objdump"))
        .args(["-D", "-b", "binary", "-m", "aarch64"])
        .arg(&bin));
    let text = String::from_utf8_lossy(&out);
    let decoded: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .split(':')
                .next()
                .is_some_and(|a| u64::from_str_radix(a, 16).is_ok())
        })
        .collect();
    assert_eq!(
        decoded.len(),
        words.len(),
        "objdump listed every word:\n{text}"
    );
    decoded
        .into_iter()
        .filter(|l| l.contains(".inst") || l.contains("undefined") || l.contains("udf"))
        .map(str::to_string)
        .collect()
}

fn check(name: &str, text: &str, words: &[u32]) -> Vec<String> {
    let mut problems = Vec::new();
    let gnu = gnu_words(name, text);
    if gnu != words {
        let at = gnu
            .iter()
            .zip(words)
            .position(|(a, b)| a != b)
            .unwrap_or(gnu.len().min(words.len()));
        problems.push(format!(
            "{name}: word {at}: hypdbg {:#010x?}, GNU as {:#010x?} ({} vs {} words)",
            words.get(at),
            gnu.get(at),
            words.len(),
            gnu.len()
        ));
    }
    for l in undecoded(name, words) {
        problems.push(format!("{name}: objdump does not decode: {l}"));
    }
    problems
}

#[test]
#[ignore = "needs aarch64-linux-gnu binutils; run by .ci/run"]
fn every_guest_program_is_real_a64() {
    let mut programs: Vec<(String, String, Vec<u32>)> = Vec::new();
    let rt = runtime::program().expect("the runtime assembles");
    programs.push(("runtime".into(), runtime::source(), rt.words.clone()));
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
    files.sort();
    assert!(files.len() >= 18, "the shipped scenarios: {files:?}");
    for f in &files {
        let sf = ScenarioFile::load(f).unwrap_or_else(|e| panic!("{e}"));
        programs.push((
            sf.scenario.name.clone(),
            sf.scenario.code.clone(),
            sf.program.words.clone(),
        ));
    }
    for (name, text) in [
        (
            "bench-sim-guest",
            hypdbg::bench::predict::SIM_GUEST.to_string(),
        ),
        (
            "bench-real-guest",
            "prologue: nop\n msr mdscr_el1, x2\n msr oslar_el1, x3\n isb\n\
             doorbell: str x1, [x20]\n b doorbell\n step: nop\n spin: b spin"
                .to_string(),
        ),
    ] {
        let p = Program::assemble(0x10000, &text).expect("assembles");
        programs.push((name.into(), text, p.words));
    }
    let real_bench = &programs.last().unwrap().2;
    assert_eq!(
        real_bench.as_slice(),
        hypdbg_real::roundtrip::PROGRAM.as_slice()
    );
    let mut problems = Vec::new();
    let mut words = 0;
    for (name, text, w) in &programs {
        words += w.len();
        problems.extend(check(name, text, w));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!(
        "{} programs, {words} words: identical to GNU as, all decoded by objdump",
        programs.len()
    );
}

#[test]
fn stop_is_spelled_as_its_store() {
    let s = gnu_syntax("a: stop #3 // x\n nop");
    assert!(s.starts_with("a: str xzr, [x28, #24] // x\n"), "{s}");
    assert!(s.ends_with(" nop\n"));
}
