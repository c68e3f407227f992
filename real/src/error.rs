//! Errors: every one is a single line that names the kernel and the stage it failed in.

use std::fmt;
use std::time::Duration;

/// Where a real-kernel run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Getting the kernel image (apt, dpkg-deb, reading a local Image).
    Fetch,
    /// Booting QEMU up to the agent's hello (also: the agent's cross build, the initramfs).
    Boot,
    /// `/dev/kvm` is missing or unusable in the booted kernel.
    DevKvm,
    /// Talking to the agent: protocol errors, command timeouts, failed ioctls.
    Agent,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Fetch => "fetch",
            Stage::Boot => "boot",
            Stage::DevKvm => "/dev/kvm",
            Stage::Agent => "agent",
        })
    }
}

/// What went wrong, without the kernel and stage.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// A host tool is not installed.
    #[error("{tool} not found: install the Debian package(s) {packages}")]
    ToolMissing {
        /// The program that could not be run.
        tool: &'static str,
        /// The Debian packages that provide it (space separated).
        packages: &'static str,
    },
    /// A host command exited unsuccessfully.
    #[error("{command} failed: {detail}")]
    Command {
        /// What was run.
        command: String,
        /// Its exit status and the last line of its error output.
        detail: String,
    },
    /// A file-system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A kernel spec that is not understood, or a kernel that is not available.
    #[error("{0}")]
    Spec(String),
    /// A file that is not an arm64 Linux `Image`.
    #[error("{0}")]
    BadImage(String),
    /// No answer within the hard timeout.
    #[error("{what}: no answer within {}; last console lines: {last_lines}", secs(*.after))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        after: Duration,
        /// The last console lines, joined with " | ".
        last_lines: String,
    },
    /// The kernel panicked.
    #[error("the kernel panicked: {message}; last console lines: {last_lines}")]
    Panicked {
        /// The "Kernel panic - not syncing: ..." line.
        message: String,
        /// The last console lines, joined with " | ".
        last_lines: String,
    },
    /// QEMU exited.
    #[error("qemu-system-aarch64 exited ({status}); last console lines: {last_lines}")]
    QemuExited {
        /// Its exit status, and what it printed on stderr.
        status: String,
        /// The last console lines, joined with " | ".
        last_lines: String,
    },
    /// `/dev/kvm` could not be opened in the guest.
    #[error(
        "/dev/kvm could not be opened (errno {errno}): the kernel has no KVM or did not boot at EL2"
    )]
    NoKvm {
        /// The errno of open("/dev/kvm").
        errno: i32,
    },
    /// The kernel did not come up in the KVM mode that was asked for.
    #[error("asked for mode {wanted} but the kernel said: {said}")]
    WrongMode {
        /// The mode asked for.
        wanted: String,
        /// What the kernel log says (or that it says nothing).
        said: String,
    },
    /// The agent's reply was not understood, or the agent is of another protocol version.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The agent rejected a request (bad arguments, no such vcpu, ...).
    #[error("request rejected: {0}")]
    Rejected(String),
    /// An ioctl (or other system call) failed in the agent.
    #[error("{op} failed: {} ({errno}){}", errno_name(*.errno), detail_suffix(.message))]
    Kvm {
        /// The ioctl or system call.
        op: String,
        /// Its errno.
        errno: i32,
        /// The agent's message.
        message: String,
    },
    /// An earlier command timed out or broke the protocol: the machine must be rebooted.
    #[error("the agent is unusable after an earlier error: reboot the machine")]
    Poisoned,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn detail_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The symbolic name of the errno values KVM ioctls return.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        7 => "E2BIG",
        8 => "ENOEXEC",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        25 => "ENOTTY",
        28 => "ENOSPC",
        34 => "ERANGE",
        38 => "ENOSYS",
        95 => "EOPNOTSUPP",
        _ => "errno",
    }
}

/// An error of the real-kernel backend: the kernel it concerns, the stage and what happened.
///
/// Displayed as one line: `<kernel>: <stage>: <what>`.
#[derive(Debug, thiserror::Error)]
#[error("{}{stage}: {kind}", kernel_prefix(.kernel))]
pub struct Error {
    /// The kernel (its spec or version), when known.
    pub kernel: Option<String>,
    /// The stage.
    pub stage: Stage,
    /// What happened.
    pub kind: ErrorKind,
}

fn kernel_prefix(kernel: &Option<String>) -> String {
    match kernel {
        Some(k) => format!("{k}: "),
        None => String::new(),
    }
}

impl Error {
    /// An error at `stage` for `kernel`.
    pub fn new(kernel: Option<&str>, stage: Stage, kind: ErrorKind) -> Self {
        Error {
            kernel: kernel.map(str::to_string),
            stage,
            kind,
        }
    }

    /// The same error, naming `kernel` if it did not name one.
    pub fn for_kernel(mut self, kernel: &str) -> Self {
        if self.kernel.is_none() {
            self.kernel = Some(kernel.to_string());
        }
        self
    }

    /// The errno of a failed ioctl, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self.kind {
            ErrorKind::Kvm { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// Whether this is a command timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, ErrorKind::Timeout { .. })
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Join the last `n` lines with " | " for a one-line error.
pub(crate) fn last_lines<'a>(
    lines: impl DoubleEndedIterator<Item = &'a String>,
    n: usize,
) -> String {
    let mut v: Vec<&str> = lines
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| l.trim())
        .collect();
    v.reverse();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_with_kernel_and_stage() {
        let e = Error::new(
            Some("debian:6.1"),
            Stage::Boot,
            ErrorKind::Panicked {
                message: "Kernel panic - not syncing: VFS: Unable to mount root fs".into(),
                last_lines: last_lines(["a".to_string(), "b".to_string()].iter(), 5),
            },
        );
        assert_eq!(
            e.to_string(),
            "debian:6.1: boot: the kernel panicked: Kernel panic - not syncing: VFS: Unable to \
             mount root fs; last console lines: a | b"
        );
        let e = Error::new(
            None,
            Stage::Boot,
            ErrorKind::ToolMissing {
                tool: "qemu-system-aarch64",
                packages: "qemu-system-arm",
            },
        )
        .for_kernel("debian:7.3");
        assert_eq!(
            e.to_string(),
            "debian:7.3: boot: qemu-system-aarch64 not found: install the Debian package(s) qemu-system-arm"
        );
        let e = Error::new(
            Some("6.1.0-57-arm64"),
            Stage::Agent,
            ErrorKind::Kvm {
                op: "KVM_SET_ONE_REG".into(),
                errno: 22,
                message: String::new(),
            },
        );
        assert_eq!(
            e.to_string(),
            "6.1.0-57-arm64: agent: KVM_SET_ONE_REG failed: EINVAL (22)"
        );
        assert_eq!(e.errno(), Some(22));
        let e = Error::new(Some("k"), Stage::DevKvm, ErrorKind::NoKvm { errno: 2 });
        assert_eq!(
            e.to_string(),
            "k: /dev/kvm: /dev/kvm could not be opened (errno 2): the kernel has no KVM or did not boot at EL2"
        );
        let e = Error::new(
            Some("k"),
            Stage::Agent,
            ErrorKind::Timeout {
                what: "run".into(),
                after: Duration::from_millis(2500),
                last_lines: "(none)".into(),
            },
        );
        assert!(e.is_timeout());
        assert_eq!(
            e.to_string(),
            "k: agent: run: no answer within 2.5 s; last console lines: (none)"
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn last_lines_skips_blanks_and_keeps_order() {
        let l: Vec<String> = ["1", "", "2", "3", " "]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(last_lines(l.iter(), 2), "2 | 3");
        assert_eq!(last_lines([].iter(), 2), "(none)");
    }
}
