//! The machine: `qemu-system-aarch64` (TCG) booting a kernel at EL2 with the agent as `/init`.

use std::fmt;
use std::io::ErrorKind as IoErrorKind;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::agent::{self, Agent};
use crate::cache::Cache;
use crate::error::{Error, ErrorKind, Result, Stage};
use crate::kernel::KernelImage;
use crate::proto::Hello;
use crate::qemu::Qemu;
use crate::shm::{RamFile, SharedBuffer};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-aarch64";
/// The Debian package that provides it.
pub const QEMU_PACKAGE: &str = "qemu-system-arm";
/// Guest-host memory, MiB.
pub const MEMORY_MIB: u64 = 1024;

/// The KVM mode to boot the kernel in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// VHE: the host kernel runs at EL2 (the default under `-cpu max`).
    Vhe,
    /// nVHE: `kvm-arm.mode=nvhe`.
    Nvhe,
    /// Protected KVM: `kvm-arm.mode=protected`, which is protected hVHE under `-cpu max`.
    Protected,
    /// Protected nVHE: `kvm-arm.mode=protected id_aa64mmfr1.vh=0 arm64_sw.hvhe=0`.
    ProtectedNvhe,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Mode::Vhe, Mode::Nvhe, Mode::Protected, Mode::ProtectedNvhe];

    /// `vhe`, `nvhe`, `protected` or `protected-nvhe`.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vhe => "vhe",
            Mode::Nvhe => "nvhe",
            Mode::Protected => "protected",
            Mode::ProtectedNvhe => "protected-nvhe",
        }
    }

    /// The kernel command-line arguments that select it.
    pub fn kernel_args(self) -> &'static str {
        match self {
            Mode::Vhe => "",
            Mode::Nvhe => "kvm-arm.mode=nvhe",
            Mode::Protected => "kvm-arm.mode=protected",
            Mode::ProtectedNvhe => "kvm-arm.mode=protected id_aa64mmfr1.vh=0 arm64_sw.hvhe=0",
        }
    }

    /// The mode a kernel log line reports, if it is KVM's "... mode initialized" line:
    /// "VHE mode initialized", "Hyp mode" (6.1) / "Hyp nVHE mode" (6.12+), "Protected hVHE
    /// mode", "Protected nVHE mode".
    pub fn from_log_line(line: &str) -> Option<Mode> {
        if !line.contains("mode initialized") {
            return None;
        }
        // Longest first: "hVHE mode" contains "VHE mode".
        if line.contains("Protected hVHE mode") {
            Some(Mode::Protected)
        } else if line.contains("Protected nVHE mode") {
            Some(Mode::ProtectedNvhe)
        } else if line.contains("Hyp nVHE mode") || line.contains("Hyp mode") {
            Some(Mode::Nvhe)
        } else if line.contains("VHE mode") {
            Some(Mode::Vhe)
        } else {
            None
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to boot.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// Where the agent and initramfs are built.
    pub cache: Cache,
    /// Guest-host CPUs (`-smp`), 1 or 2.
    pub smp: u8,
    /// `-icount shift=0,sleep=off`: the virtual clock counts instructions.
    pub icount: bool,
    /// From QEMU's start to the agent's hello.
    pub boot_timeout: Duration,
    /// Per request, on top of a run's own timeout.
    pub command_timeout: Duration,
    /// QEMU is killed after this long whatever happens.
    pub max_lifetime: Duration,
    /// The agent powers off after this long without a request (covers a host that vanished).
    pub agent_idle: Duration,
    /// Check that the kernel log reports the requested mode.
    pub verify_mode: bool,
    /// More kernel command-line arguments.
    pub extra_append: String,
    /// Back guest RAM with a file the host shares, for guest memory transfers (else they go
    /// over the serial line, about 100 ms per 4 KiB).
    pub shared_memory: bool,
}

impl BootOptions {
    /// Defaults: 1 CPU, no icount, boot timeout 60 s, command timeout 10 s, lifetime 1 h,
    /// agent idle 10 min, mode verified.
    pub fn new(cache: Cache) -> Self {
        BootOptions {
            cache,
            smp: 1,
            icount: false,
            boot_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(3600),
            agent_idle: Duration::from_secs(600),
            verify_mode: true,
            extra_append: String::new(),
            shared_memory: true,
        }
    }
}

/// The QEMU arguments for booting `image` with `initrd` in `mode`; guest RAM backed by the
/// file `ram` (shared with the host) when given.
pub fn qemu_args(
    image: &Path,
    initrd: &Path,
    mode: Mode,
    opts: &BootOptions,
    ram: Option<&Path>,
) -> Vec<String> {
    let mut append = format!(
        "console=ttyAMA0 panic=-1 quiet hypdbg.idle={}",
        opts.agent_idle.as_secs().max(1)
    );
    for a in [mode.kernel_args(), opts.extra_append.as_str()] {
        if !a.is_empty() {
            append.push(' ');
            append.push_str(a);
        }
    }
    let mut machine = "virt,virtualization=on,gic-version=3".to_string();
    if ram.is_some() {
        machine.push_str(",memory-backend=ram");
    }
    let mut args: Vec<String> = vec![
        "-M".into(),
        machine,
        "-cpu".into(),
        "max,pauth-impdef=on".into(),
        "-smp".into(),
        opts.smp.to_string(),
        "-m".into(),
        MEMORY_MIB.to_string(),
    ];
    if let Some(ram) = ram {
        // QEMU's option syntax escapes a comma by doubling it.
        let path = ram.display().to_string().replace(',', ",,");
        args.push("-object".into());
        args.push(format!(
            "memory-backend-file,id=ram,size={MEMORY_MIB}M,mem-path={path},share=on"
        ));
    }
    for a in ["-nographic", "-monitor", "none", "-no-reboot"] {
        args.push(a.to_string());
    }
    if opts.icount {
        args.push("-icount".into());
        args.push("shift=0,sleep=off".into());
    }
    args.push("-kernel".into());
    args.push(image.display().to_string());
    args.push("-initrd".into());
    args.push(initrd.display().to_string());
    args.push("-append".into());
    args.push(append);
    args
}

/// A booted machine with the agent ready. QEMU is killed when this is dropped.
#[derive(Debug)]
pub struct Machine {
    agent: Agent,
    kernel: KernelImage,
    mode: Mode,
    boot_time: Duration,
    mode_line: String,
    args: Vec<String>,
}

/// The file that backs the guest's RAM (in /dev/shm when there is one), so the host can
/// share pages with the agent.
fn guest_ram_file(cache: &Cache) -> std::result::Result<RamFile, ErrorKind> {
    let dir = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_path_buf()
    } else {
        cache.root().join("run")
    };
    RamFile::create(&dir, MEMORY_MIB << 20).map_err(|source| ErrorKind::Io {
        what: format!("creating the guest RAM file in {}", dir.display()),
        source,
    })
}

/// Start QEMU with `args`, its console on pipes.
fn spawn_qemu(args: &[String]) -> std::result::Result<std::process::Child, ErrorKind> {
    Command::new(QEMU)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == IoErrorKind::NotFound {
                ErrorKind::ToolMissing {
                    tool: QEMU,
                    packages: QEMU_PACKAGE,
                }
            } else {
                ErrorKind::Io {
                    what: format!("starting {QEMU}"),
                    source: e,
                }
            }
        })
}

impl Machine {
    /// Boot `kernel` in `mode`: build the agent and initramfs if needed, start QEMU, wait for
    /// the agent's hello, check `/dev/kvm` and the KVM mode the kernel reports.
    pub fn boot(kernel: &KernelImage, mode: Mode, opts: &BootOptions) -> Result<Machine> {
        let name = kernel.name();
        let boot_err = |kind| Error::new(Some(&name), Stage::Boot, kind);
        if !(1..=2).contains(&opts.smp) {
            return Err(boot_err(ErrorKind::Spec(format!(
                "-smp {}: the agent runs 1 or 2 CPUs",
                opts.smp
            ))));
        }
        let bin = agent::build(&opts.cache).map_err(|e| e.for_kernel(&name))?;
        let initrd = bin.initramfs().map_err(|e| e.for_kernel(&name))?;
        let mut ram = if opts.shared_memory {
            Some(guest_ram_file(&opts.cache).map_err(boot_err)?)
        } else {
            None
        };
        let args = qemu_args(
            &kernel.path,
            &initrd,
            mode,
            opts,
            ram.as_ref().and_then(|r| r.path()),
        );
        let started = Instant::now();
        let child = spawn_qemu(&args).map_err(boot_err)?;
        let qemu = Qemu::new(child, opts.max_lifetime);
        let mut agent = Agent::connect(qemu, &name, opts.boot_timeout, opts.command_timeout)?;
        let boot_time = started.elapsed();
        let hello = agent.hello().clone();
        if let Some(mut ram) = ram.take() {
            // QEMU has it mapped: no name left behind, whatever happens next.
            ram.unlink();
            if let Some(pages) = &hello.shm
                && let Some(shared) = SharedBuffer::new(ram, pages)
            {
                agent.set_shared(shared);
            }
        }
        if hello.agent != bin.hash {
            agent.kill();
            return Err(boot_err(ErrorKind::Protocol(format!(
                "the agent in the initramfs is {}, expected {}",
                hello.agent, bin.hash
            ))));
        }
        if hello.kvm.is_none() {
            agent.kill();
            return Err(Error::new(
                Some(&name),
                Stage::DevKvm,
                ErrorKind::NoKvm {
                    errno: hello.kvm_errno.unwrap_or(0),
                },
            ));
        }
        let said = hello
            .kvm_log
            .iter()
            .find(|l| Mode::from_log_line(l).is_some())
            .cloned();
        if opts.verify_mode {
            let got = said.as_deref().and_then(Mode::from_log_line);
            if got != Some(mode) {
                agent.kill();
                return Err(boot_err(ErrorKind::WrongMode {
                    wanted: mode.to_string(),
                    said: said.unwrap_or_else(|| {
                        "no 'mode initialized' line in the kernel log".to_string()
                    }),
                }));
            }
        }
        Ok(Machine {
            agent,
            kernel: kernel.clone(),
            mode,
            boot_time,
            mode_line: said.unwrap_or_default(),
            args,
        })
    }

    /// The agent.
    pub fn agent(&mut self) -> &mut Agent {
        &mut self.agent
    }

    /// The agent's hello (kernel release, `/dev/kvm`, KVM log lines).
    pub fn hello(&self) -> &Hello {
        self.agent.hello()
    }

    /// The kernel.
    pub fn kernel(&self) -> &KernelImage {
        &self.kernel
    }

    /// The mode asked for (and verified, unless disabled).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What the kernel said about its KVM mode (`kvm [1]: VHE mode initialized successfully`).
    pub fn mode_line(&self) -> &str {
        &self.mode_line
    }

    /// Wall time from QEMU's start to the agent's hello.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The QEMU arguments used.
    pub fn qemu_args(&self) -> &[String] {
        &self.args
    }

    /// The QEMU process id.
    pub fn qemu_pid(&self) -> u32 {
        self.agent.qemu_pid()
    }

    /// Power off cleanly and wait for QEMU to exit (it is killed if it does not).
    pub fn power_off(mut self) -> Result<()> {
        self.agent.power_off()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_select_kernel_args() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()), Some(m));
        }
        assert_eq!(Mode::parse("VHE"), None);
        assert_eq!(Mode::Nvhe.kernel_args(), "kvm-arm.mode=nvhe");
        assert_eq!(
            Mode::ProtectedNvhe.kernel_args(),
            "kvm-arm.mode=protected id_aa64mmfr1.vh=0 arm64_sw.hvhe=0"
        );
    }

    #[test]
    fn mode_lines() {
        let m = |s: &str| Mode::from_log_line(s);
        assert_eq!(
            m("kvm [1]: VHE mode initialized successfully"),
            Some(Mode::Vhe)
        );
        assert_eq!(
            m("kvm [1]: Hyp mode initialized successfully"),
            Some(Mode::Nvhe)
        );
        assert_eq!(
            m("kvm [1]: Hyp nVHE mode initialized successfully"),
            Some(Mode::Nvhe)
        );
        assert_eq!(
            m("kvm [1]: Protected hVHE mode initialized successfully"),
            Some(Mode::Protected)
        );
        assert_eq!(
            m("kvm [1]: Protected nVHE mode initialized successfully"),
            Some(Mode::ProtectedNvhe)
        );
        assert_eq!(m("kvm [1]: IPA Size Limit: 48 bits"), None);
    }

    #[test]
    fn qemu_command_line() {
        let mut o = BootOptions::new(Cache::at("/c"));
        o.smp = 2;
        o.icount = true;
        let a = qemu_args(
            Path::new("/k/Image"),
            Path::new("/c/i.cpio"),
            Mode::ProtectedNvhe,
            &o,
            Some(Path::new("/dev/shm/r,1")),
        );
        let s = a.join(" ");
        assert!(s.starts_with(
            "-M virt,virtualization=on,gic-version=3,memory-backend=ram -cpu max,pauth-impdef=on \
             -smp 2 -m 1024 -object memory-backend-file,id=ram,size=1024M,mem-path=/dev/shm/r,,1,\
             share=on -nographic -monitor none -no-reboot -icount shift=0,sleep=off \
             -kernel /k/Image -initrd /c/i.cpio -append"
        ));
        assert_eq!(
            a.last().unwrap(),
            "console=ttyAMA0 panic=-1 quiet hypdbg.idle=600 kvm-arm.mode=protected \
             id_aa64mmfr1.vh=0 arm64_sw.hvhe=0"
        );
        let v = qemu_args(
            Path::new("/k"),
            Path::new("/i"),
            Mode::Vhe,
            &BootOptions::new(Cache::at("/c")),
            None,
        );
        assert!(!v.join(" ").contains("icount"));
        assert_eq!(
            v.last().unwrap(),
            "console=ttyAMA0 panic=-1 quiet hypdbg.idle=600"
        );
    }
}
