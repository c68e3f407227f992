//! Building the agent: `aarch64-linux-gnu-gcc -static` on first use, cached by a hash of the
//! source. `cargo test` never needs the cross compiler; booting a machine does, once.

use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{self, Cache};
use crate::error::{Error, ErrorKind, Result, Stage};
use crate::initramfs;

/// The agent's C source.
pub const AGENT_C: &str = include_str!("../../agent/agent.c");
/// The UAPI constants the 6.1 cross headers lack.
pub const KVM_COMPAT_H: &str = include_str!("../../agent/kvm_compat.h");
/// The cross compiler.
pub const CROSS_CC: &str = "aarch64-linux-gnu-gcc";
/// The Debian packages that provide it and the static arm64 libc.
pub const CROSS_PACKAGES: &str = "gcc-aarch64-linux-gnu libc6-dev-arm64-cross";
/// The compiler flags: static and not PIE (a static PIE merged distinct local labels of guest
/// code onto one address in an earlier prototype).
pub const CFLAGS: &[&str] = &[
    "-static",
    "-fno-pie",
    "-no-pie",
    "-O2",
    "-pthread",
    "-Wall",
    "-Wno-unused-parameter",
];

/// The built agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentBinary {
    /// The static aarch64 executable.
    pub path: PathBuf,
    /// The hash of source, header and flags it was built from (16 hex digits); the agent
    /// reports it in its hello.
    pub hash: String,
}

/// The hash that keys the cached agent.
pub fn source_hash() -> String {
    let flags = CFLAGS.join(" ");
    format!(
        "{:016x}",
        cache::fnv1a64(&[
            AGENT_C.as_bytes(),
            KVM_COMPAT_H.as_bytes(),
            flags.as_bytes()
        ])
    )
}

fn err(kind: ErrorKind) -> Error {
    Error::new(None, Stage::Boot, kind)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| err(ErrorKind::Io { what, source })
}

/// Build the agent into `<cache>/agent/<hash>/init`, unless it is there already.
pub fn build(cache: &Cache) -> Result<AgentBinary> {
    let hash = source_hash();
    let dir = cache
        .dir(Path::new("agent").join(&hash))
        .map_err(io("creating the agent cache directory".into()))?;
    let out = dir.join("init");
    if out.exists() {
        return Ok(AgentBinary { path: out, hash });
    }
    let src = dir.join("agent.c");
    fs::write(&src, AGENT_C).map_err(io(format!("writing {}", src.display())))?;
    let hdr = dir.join("kvm_compat.h");
    fs::write(&hdr, KVM_COMPAT_H).map_err(io(format!("writing {}", hdr.display())))?;
    let tmp = dir.join(format!("init.tmp.{}", std::process::id()));
    let result = Command::new(CROSS_CC)
        .args(CFLAGS)
        .arg(format!("-DAGENT_HASH=\"{hash}\""))
        .arg("-I")
        .arg(&dir)
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .output();
    let output = match result {
        Ok(o) => o,
        Err(e) if e.kind() == IoErrorKind::NotFound => {
            return Err(err(ErrorKind::ToolMissing {
                tool: CROSS_CC,
                packages: CROSS_PACKAGES,
            }));
        }
        Err(e) => return Err(io(format!("running {CROSS_CC}"))(e)),
    };
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A missing libc shows up as a missing header.
        if stderr.contains("No such file or directory") && stderr.contains(".h") {
            return Err(err(ErrorKind::ToolMissing {
                tool: "the arm64 C library headers",
                packages: CROSS_PACKAGES,
            }));
        }
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("(no error output)");
        return Err(err(ErrorKind::Command {
            command: format!("{CROSS_CC} agent.c"),
            detail: format!("{}: {}", output.status, first.trim()),
        }));
    }
    fs::rename(&tmp, &out).map_err(io(format!("renaming to {}", out.display())))?;
    Ok(AgentBinary { path: out, hash })
}

impl AgentBinary {
    /// The initramfs with this agent as `/init`, written next to it (once).
    pub fn initramfs(&self) -> Result<PathBuf> {
        let path = self.path.with_file_name("initramfs.cpio");
        if path.exists() {
            return Ok(path);
        }
        let init = fs::read(&self.path).map_err(io(format!("reading {}", self.path.display())))?;
        let bytes = initramfs::agent_initramfs(&init);
        cache::write_atomic(&path, &bytes).map_err(io(format!("writing {}", path.display())))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_flags_are_static_non_pie() {
        assert_eq!(source_hash(), source_hash());
        assert_eq!(source_hash().len(), 16);
        for f in ["-static", "-fno-pie", "-no-pie", "-O2"] {
            assert!(CFLAGS.contains(&f), "{f}");
        }
    }

    #[test]
    fn the_agent_speaks_the_protocol_of_this_host() {
        // The prefix and version the host expects are the agent's.
        assert!(AGENT_C.contains(&format!(
            "#define PREFIX \"{}\"",
            crate::proto::REPLY_PREFIX
        )));
        assert!(AGENT_C.contains(&format!("#define PROTO {}", crate::proto::PROTOCOL_VERSION)));
        // Every command the host can send has a handler in the agent.
        for cmd in [
            "hello",
            "ping",
            "cap",
            "vm_cap",
            "dmesg",
            "vm_create",
            "vm_destroy",
            "mem_map",
            "mem_write",
            "mem_read",
            "smccc_filter",
            "vcpu_create",
            "vcpu_init",
            "get_reg",
            "set_reg",
            "set_regs",
            "get_regs",
            "reg_list",
            "guest_debug",
            "set_mp_state",
            "get_mp_state",
            "run",
            "run2",
            "migrate",
            "perf_arm",
            "perf_check",
            "bench",
            "poweroff",
            "mem_write_shm",
            "mem_read_shm",
        ] {
            assert!(
                AGENT_C.contains(&format!("!strcmp(cmd, \"{cmd}\")")),
                "agent.c does not handle {cmd}"
            );
        }
    }

    #[test]
    fn a_missing_cross_compiler_is_one_line_naming_the_packages() {
        let e = err(ErrorKind::ToolMissing {
            tool: CROSS_CC,
            packages: CROSS_PACKAGES,
        })
        .for_kernel("debian:6.1");
        assert_eq!(
            e.to_string(),
            "debian:6.1: boot: aarch64-linux-gnu-gcc not found: install the Debian package(s) \
             gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
        );
    }
}
