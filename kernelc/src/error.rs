//! Everything that can stop a kernel source from becoming a variant, each a one-line message.

use std::path::PathBuf;

/// Why `--kernel-source` could not be compiled, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum KernelCError {
    /// The path does not exist or cannot be read.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// What the file system said.
        reason: String,
    },
    /// A directory without the arm64 KVM debug save/restore code.
    #[error(
        "{0}: not a kernel tree with arm64 KVM debug save/restore code (looked for arch/arm64/kvm/hyp/include/hyp/debug-sr.h and arch/arm64/kvm/hyp/debug-sr.c)"
    )]
    NotAKernelTree(PathBuf),
    /// A file that is neither a debug-sr header nor a C file.
    #[error("{0}: give a kernel tree, a debug-sr.h or a debug-sr.c")]
    NotDebugSr(PathBuf),
    /// A patch hunk that does not apply.
    #[error("--patch {patch}: {file}: hunk #{hunk} ({header}) does not apply")]
    PatchHunk {
        /// The patch file.
        patch: PathBuf,
        /// The file it patches (as the patch names it).
        file: String,
        /// The hunk's number in that file, from 1.
        hunk: usize,
        /// Its `@@ -a,b +c,d @@` line.
        header: String,
    },
    /// A patch that cannot be read or parsed, or names a file that is not there.
    #[error("--patch {patch}: {reason}")]
    Patch {
        /// The patch file.
        patch: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--era` with a value that is not an era.
    #[error("--era {0}: use 1, 2, 2-percpu or 3")]
    BadEra(String),
    /// Nothing in the source says which era it is.
    #[error(
        "{0}: cannot tell the era (no debug_owner, host_data_ptr, DEBUG_DIRTY or __debug_cond_save_host_state); pass --era 1|2|2-percpu|3"
    )]
    UnknownEra(String),
    /// The C compiler cannot be run.
    #[error(
        "no C compiler: `{cc}` could not be run ({reason}); install one (apt-get install gcc) or set CC"
    )]
    NoCompiler {
        /// The command tried.
        cc: String,
        /// Why it failed.
        reason: String,
    },
    /// `read_sysreg(x)` / `write_sysreg(v, x)` of a register the shim does not route.
    #[error(
        "{location}: unknown system register token `{token}`: hypdbg routes the debug registers, MDCCINT_EL1, MDSCR_EL1, ID_AA64DFR0_EL1, MDCR_EL2 and the SPE/TRBE/BRBE host-only registers"
    )]
    UnknownSysreg {
        /// `file:line:col` in the user's source.
        location: String,
        /// The token, as written.
        token: String,
    },
    /// `vcpu_get_flag(vcpu, X)` or `host_data_test_flag(X)` of a flag the shim does not know.
    #[error("{location}: unknown {kind} flag `{flag}`")]
    UnknownFlag {
        /// `file:line:col`.
        location: String,
        /// vcpu or host_data.
        kind: &'static str,
        /// The flag.
        flag: String,
    },
    /// A function the world switch calls is not defined by the source.
    #[error("{source_name} does not define {function}, which the world switch calls")]
    MissingFunction {
        /// Which source.
        source_name: String,
        /// The function.
        function: String,
    },
    /// The compiler's first error.
    #[error("{location}: {message}")]
    Compile {
        /// `file:line:col` in the user's source (or in hypdbg's shim).
        location: String,
        /// The compiler's message.
        message: String,
    },
    /// The compiled library could not be loaded.
    #[error("cannot load the compiled debug-sr code: {0}")]
    Load(String),
    /// A scratch-directory operation failed.
    #[error("scratch directory: {0}")]
    Scratch(String),
}
