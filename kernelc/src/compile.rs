//! Compile the scratch copy against the shim with the system C compiler into a shared object,
//! and turn the compiler's first error into a typed one naming the user's file and line.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::era::KernelEra;
use crate::error::KernelCError;
use crate::source::{HYP_C, HYP_INCLUDE, NVHE, Shape, Sources, VHE};

/// The shim's files, embedded: (path under the shim directory, text).
const SHIM: &[(&str, &str)] = &[
    ("hypdbg/shim.h", include_str!("../shim/hypdbg/shim.h")),
    ("hypdbg/glue.c", include_str!("../shim/hypdbg/glue.c")),
    ("hypdbg/wrapper.c", include_str!("../shim/hypdbg/wrapper.c")),
    ("hyp.h", include_str!("../shim/hyp.h")),
    ("linux/compiler.h", include_str!("../shim/linux/compiler.h")),
    ("linux/kvm_host.h", include_str!("../shim/linux/kvm_host.h")),
    ("linux/types.h", include_str!("../shim/linux/types.h")),
    ("linux/bitops.h", include_str!("../shim/linux/bitops.h")),
    (
        "linux/jump_label.h",
        include_str!("../shim/linux/jump_label.h"),
    ),
    (
        "asm/debug-monitors.h",
        include_str!("../shim/asm/debug-monitors.h"),
    ),
    ("asm/kvm_asm.h", include_str!("../shim/asm/kvm_asm.h")),
    ("asm/kvm_hyp.h", include_str!("../shim/asm/kvm_hyp.h")),
    ("asm/kvm_mmu.h", include_str!("../shim/asm/kvm_mmu.h")),
    ("asm/sysreg.h", include_str!("../shim/asm/sysreg.h")),
    ("asm/kvm_host.h", include_str!("../shim/asm/kvm_host.h")),
    (
        "asm/kvm_emulate.h",
        include_str!("../shim/asm/kvm_emulate.h"),
    ),
    ("asm/barrier.h", include_str!("../shim/asm/barrier.h")),
];

/// The compiler: `$CC`, else `cc`.
pub fn compiler() -> String {
    std::env::var("CC")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "cc".into())
}

/// A compiled shared object and what the compiler warned about.
#[derive(Debug)]
pub struct Built {
    /// The `.so`.
    pub library: PathBuf,
    /// The compiler's warnings about the user's files (`file:line: warning: ...`).
    pub warnings: Vec<String>,
}

fn write(path: &Path, text: &str) -> Result<(), KernelCError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| KernelCError::Scratch(format!("{}: {e}", d.display())))?;
    }
    std::fs::write(path, text)
        .map_err(|e| KernelCError::Scratch(format!("{}: {e}", path.display())))
}

/// Rewrite scratch paths in a compiler message into the user's (or the shim's) names.
struct PathMap {
    pairs: Vec<(String, String)>,
}

impl PathMap {
    fn new(sources: &Sources, tree: &Path, shim: &Path, patched: bool) -> Self {
        let mark = if patched { " (patched)" } else { "" };
        let mut pairs: Vec<(String, String)> = sources
            .files
            .iter()
            .map(|(rel, user)| {
                (
                    tree.join(rel).display().to_string(),
                    format!("{}{mark}", user.display()),
                )
            })
            .collect();
        pairs.push((format!("{}/", shim.display()), "<hypdbg shim>/".into()));
        pairs.push((
            format!("{}/", tree.display()),
            format!("{}/", sources.given.display()),
        ));
        PathMap { pairs }
    }
    fn user(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (from, to) in &self.pairs {
            out = out.replace(from.as_str(), to);
        }
        out
    }
}

/// The text between the first quote after `prefix` and the closing quote.
fn quoted_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let start = msg.find(prefix)? + prefix.len();
    let rest = &msg[start..];
    let end = rest.find(['\'', '`'])?;
    Some(&rest[..end])
}

/// The compiler's (or linker's) first error as a typed error.
fn first_error(stderr: &str, map: &PathMap, sources: &Sources) -> KernelCError {
    let given = sources.given.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(f) = quoted_after(line, "undefined reference to `") {
            return KernelCError::MissingFunction {
                source_name: given,
                function: f.to_string(),
            };
        }
        let Some((loc, msg)) = line
            .split_once(": error: ")
            .or_else(|| line.split_once(": fatal error: "))
        else {
            continue;
        };
        let mut location = map.user(loc);
        // An error inside one of the shim's macros: the user's line is the expansion site.
        if location.starts_with("<hypdbg shim>/") {
            let site = lines[i + 1..]
                .iter()
                .filter_map(|l| l.split_once(": note: in expansion of macro"))
                .map(|(at, _)| map.user(at))
                .find(|at| !at.starts_with("<hypdbg shim>/"));
            if let Some(site) = site {
                location = site;
            }
        }
        if let Some(tok) = quoted_after(msg, "'HYPDBG_SR_") {
            return KernelCError::UnknownSysreg {
                location,
                token: tok.to_string(),
            };
        }
        if let Some(flag) = quoted_after(msg, "'HYPDBG_VF_") {
            return KernelCError::UnknownFlag {
                location,
                kind: "vcpu",
                flag: flag.to_string(),
            };
        }
        if let Some(flag) = quoted_after(msg, "'HYPDBG_HF_") {
            return KernelCError::UnknownFlag {
                location,
                kind: "host_data",
                flag: flag.to_string(),
            };
        }
        // gcc: "implicit declaration of function 'f'"; clang: "call to undeclared function 'f'".
        let undeclared = quoted_after(msg, "implicit declaration of function '")
            .or_else(|| quoted_after(msg, "call to undeclared function '"));
        if location.starts_with("<hypdbg shim>/hypdbg/wrapper.c")
            && let Some(f) = undeclared
        {
            return KernelCError::MissingFunction {
                source_name: given,
                function: f.to_string(),
            };
        }
        return KernelCError::Compile {
            location,
            message: map.user(msg),
        };
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    KernelCError::Compile {
        location: given,
        message: map.user(last),
    }
}

/// Compile the scratch tree (already patched) for `era` with `cc` into `<scratch>/debug-sr.so`.
pub fn compile(
    cc: &str,
    sources: &Sources,
    era: KernelEra,
    scratch: &Path,
    tree: &Path,
    patched: bool,
) -> Result<Built, KernelCError> {
    let shim = scratch.join("shim");
    for (rel, text) in SHIM {
        write(&shim.join(rel), text)?;
    }
    let mut units: Vec<PathBuf> = vec![shim.join("hypdbg/glue.c")];
    match sources.shape {
        Shape::Header { nvhe, vhe } => {
            if nvhe {
                units.push(tree.join(NVHE));
            } else {
                units.push(shim.join("hypdbg/wrapper.c"));
            }
            if vhe {
                // The VHE wrappers define the same symbols as the nVHE ones: compile them under
                // other names (they call the same common functions; only nVHE runs).
                let wrap = scratch.join("vhe-wrap.c");
                write(
                    &wrap,
                    &format!(
                        "/* hypdbg: the VHE wrappers, renamed beside the nVHE ones */\n#define __debug_switch_to_guest hypdbg_vhe_debug_switch_to_guest\n#define __debug_switch_to_host hypdbg_vhe_debug_switch_to_host\n#define __kvm_get_mdcr_el2 hypdbg_vhe_kvm_get_mdcr_el2\n#include \"{}\"\n",
                        tree.join(VHE).display()
                    ),
                )?;
                units.push(wrap);
            }
        }
        Shape::HypC => units.push(tree.join(HYP_C)),
    }
    let (era_n, percpu) = era.defines();
    let library = scratch.join("debug-sr.so");
    let mut cmd = Command::new(cc);
    cmd.env("LC_ALL", "C")
        .current_dir(scratch)
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-std=gnu11",
            "-fvisibility=hidden",
        ])
        .args(["-fno-diagnostics-color", "-Wall", "-Wno-unused-function"])
        .args([
            "-Wimplicit-fallthrough",
            "-Werror=implicit-function-declaration",
        ])
        .args([
            "-Werror=incompatible-pointer-types",
            "-Werror=int-conversion",
        ])
        .arg("-Wl,--no-undefined")
        .arg(format!("-DHYPDBG_ERA={era_n}"))
        .arg(format!("-DHYPDBG_PERCPU={percpu}"))
        .arg("-I")
        .arg(&shim)
        .arg("-I")
        .arg(tree.join(HYP_INCLUDE))
        .arg("-o")
        .arg(&library)
        .args(&units);
    let out = cmd.output().map_err(|e| KernelCError::NoCompiler {
        cc: cc.to_string(),
        reason: e.to_string(),
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let map = PathMap::new(sources, tree, &shim, patched);
    if !out.status.success() {
        return Err(first_error(&stderr, &map, sources));
    }
    // One line per distinct warning (a macro expanded four times warns four times).
    let mut warnings: Vec<String> = Vec::new();
    for w in stderr
        .lines()
        .filter(|l| l.contains(": warning: ") && !l.contains(&shim.display().to_string()))
        .map(|l| map.user(l))
    {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    Ok(Built { library, warnings })
}
