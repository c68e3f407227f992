//! Debian arm64 packages through apt with a private state per suite.
//!
//! Every suite gets its own directory under `<cache>/apt/<suite>/` with its own `sources.list`
//! (`deb [arch=arm64 signed-by=<debian-archive-keyring>] <mirror> <suite> main`), package lists
//! and package cache. apt runs with `-o APT::Architecture=arm64 -o APT::Architectures::=arm64`
//! and the private directories, so `/etc/apt`, `/var/lib/apt` and dpkg's architecture list are
//! never touched. The mirror is the one this machine's own apt sources use (override with
//! `HYPDBG_DEBIAN_MIRROR` / `HYPDBG_DEBIAN_SECURITY_MIRROR`).

use std::fs;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cache::Cache;
use crate::error::{Error, ErrorKind, Result, Stage};

/// The keyring that signs Debian's archive (bookworm's holds the trixie keys too).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A set of Debian suites with one private apt state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// bookworm, bookworm-updates and bookworm-security: kernels 6.1 and 6.12,
    /// `linux-source-6.1`, `linux-source-6.12`.
    Bookworm,
    /// trixie-backports: kernels 6.16 and newer (7.x included), `linux-source-7.x`.
    TrixieBackports,
}

impl Suite {
    /// The directory name of its apt state.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::TrixieBackports => "trixie-backports",
        }
    }

    /// The suite that carries the Debian kernel (and `linux-source-*`) of a series ("6.1").
    pub fn for_series(series: &str) -> Suite {
        match series {
            "6.1" | "6.12" => Suite::Bookworm,
            _ => Suite::TrixieBackports,
        }
    }

    /// The `sources.list` of the suite for the given mirrors.
    pub fn sources_list(self, mirrors: &Mirrors) -> String {
        let opts = format!("[arch=arm64 signed-by={KEYRING}]");
        let m = &mirrors.debian;
        match self {
            Suite::Bookworm => format!(
                "deb {opts} {m} bookworm main\n\
                 deb {opts} {m} bookworm-updates main\n\
                 deb {opts} {} bookworm-security main\n",
                mirrors.security
            ),
            Suite::TrixieBackports => format!("deb {opts} {m} trixie-backports main\n"),
        }
    }
}

/// The Debian mirror URIs to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrors {
    /// The main archive (`.../debian`).
    pub debian: String,
    /// The security archive (`.../debian-security`).
    pub security: String,
}

impl Mirrors {
    /// The mirrors of this machine's apt sources (`/etc/apt/sources.list` and
    /// `/etc/apt/sources.list.d/*.{list,sources}`), overridden by `HYPDBG_DEBIAN_MIRROR` and
    /// `HYPDBG_DEBIAN_SECURITY_MIRROR`.
    pub fn from_system() -> Result<Mirrors> {
        let mut texts = Vec::new();
        if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
            texts.push(t);
        }
        if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if (ext == "list" || ext == "sources")
                    && let Ok(t) = fs::read_to_string(&p)
                {
                    texts.push(t);
                }
            }
        }
        let found = Self::parse(&texts.join("\n"));
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let debian =
            env("HYPDBG_DEBIAN_MIRROR").or_else(|| found.as_ref().map(|m| m.debian.clone()));
        let Some(debian) = debian else {
            return Err(Error::new(
                None,
                Stage::Fetch,
                ErrorKind::Spec(
                    "no Debian mirror in /etc/apt/sources.list{,.d}: set HYPDBG_DEBIAN_MIRROR"
                        .to_string(),
                ),
            ));
        };
        let security = env("HYPDBG_DEBIAN_SECURITY_MIRROR")
            .or_else(|| found.map(|m| m.security))
            .unwrap_or_else(|| security_from(&debian));
        Ok(Mirrors { debian, security })
    }

    /// The mirrors named by apt source text, one-line (`deb URI SUITE ...`) or deb822
    /// (`URIs:`/`Suites:`): the first URI serving a suite that is not `*-security`, and the first
    /// serving a `*-security` suite (else the main one with `-security` appended to its path).
    pub fn parse(text: &str) -> Option<Mirrors> {
        let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
        // One-line format.
        for line in text.lines() {
            let l = line.trim();
            if l.starts_with('#') {
                continue;
            }
            let mut words = l.split_whitespace().peekable();
            if words.next() != Some("deb") {
                continue;
            }
            if words.peek().is_some_and(|w| w.starts_with('[')) {
                for w in words.by_ref() {
                    if w.ends_with(']') {
                        break;
                    }
                }
            }
            if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                pairs.push((uri.to_string(), vec![suite.to_string()]));
            }
        }
        // deb822 stanzas.
        for stanza in text.split("\n\n") {
            let mut uris = Vec::new();
            let mut suites = Vec::new();
            let mut is_deb = true;
            for line in stanza.lines() {
                let l = line.trim();
                if l.starts_with('#') {
                    continue;
                }
                if let Some((k, v)) = l.split_once(':') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "types" => is_deb = v.split_whitespace().any(|t| t == "deb"),
                        "uris" => uris = v.split_whitespace().map(String::from).collect(),
                        "suites" => suites = v.split_whitespace().map(String::from).collect(),
                        "enabled" => is_deb &= v.trim() != "no",
                        _ => {}
                    }
                }
            }
            if is_deb {
                for u in uris {
                    pairs.push((u, suites.clone()));
                }
            }
        }
        let debianish = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        let is_sec = |s: &str| s.ends_with("-security") || s.ends_with("/updates");
        let debian = pairs
            .iter()
            .find(|(u, s)| {
                debianish(u)
                    && u.trim_end_matches('/').ends_with("/debian")
                    && s.iter().any(|s| !is_sec(s))
            })
            .map(|(u, _)| u.trim_end_matches('/').to_string())?;
        let security = pairs
            .iter()
            .find(|(u, s)| debianish(u) && s.iter().any(|s| is_sec(s)))
            .map(|(u, _)| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| security_from(&debian));
        Some(Mirrors { debian, security })
    }
}

fn security_from(debian: &str) -> String {
    format!("{}-security", debian.trim_end_matches('/'))
}

/// One suite's private apt state.
#[derive(Clone, Debug)]
pub struct AptState {
    suite: Suite,
    dir: PathBuf,
}

fn fetch_err(kind: ErrorKind) -> Error {
    Error::new(None, Stage::Fetch, kind)
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| fetch_err(ErrorKind::Io { what, source })
}

/// Run a host command, mapping "not installed" to a package hint and a failure to its stderr.
pub(crate) fn run_tool(
    cmd: &mut Command,
    tool: &'static str,
    packages: &'static str,
    stage: Stage,
) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        if e.kind() == IoErrorKind::NotFound {
            Error::new(None, stage, ErrorKind::ToolMissing { tool, packages })
        } else {
            Error::new(
                None,
                stage,
                ErrorKind::Io {
                    what: format!("running {tool}"),
                    source: e,
                },
            )
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("W: "))
            .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("(no error output)")
            .trim()
            .to_string();
        return Err(Error::new(
            None,
            stage,
            ErrorKind::Command {
                command: shorten(&shown),
                detail: format!("{}: {last}", out.status),
            },
        ));
    }
    Ok(out)
}

fn shorten(s: &str) -> String {
    if s.len() > 160 {
        format!("{}...", s.chars().take(157).collect::<String>())
    } else {
        s.to_string()
    }
}

impl AptState {
    /// The state of `suite` in `cache`, its directories and `sources.list` written.
    pub fn open(cache: &Cache, suite: Suite, mirrors: &Mirrors) -> Result<AptState> {
        if !Path::new(KEYRING).exists() {
            return Err(fetch_err(ErrorKind::ToolMissing {
                tool: KEYRING,
                packages: "debian-archive-keyring",
            }));
        }
        let dir = cache
            .dir(Path::new("apt").join(suite.name()))
            .map_err(io_err("creating the apt state directory"))?;
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(io_err("creating the apt state directory"))?;
        }
        fs::write(dir.join("sources.list"), suite.sources_list(mirrors))
            .map_err(io_err("writing sources.list"))?;
        fs::write(dir.join("status"), "").map_err(io_err("writing the empty dpkg status"))?;
        Ok(AptState { suite, dir })
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The directory of this state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `-o` options that make apt use this state only.
    pub fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            "-oDir::Etc::SourceParts=/dev/null".to_string(),
            "-oDir::Etc::Preferences=/dev/null".to_string(),
            "-oDir::Etc::PreferencesParts=/dev/null".to_string(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::State::status={d}/status"),
            format!("-oDir::Cache={d}/cache"),
            "-oAPT::Architecture=arm64".to_string(),
            "-oAPT::Architectures::=arm64".to_string(),
            "-oAcquire::Languages=none".to_string(),
            "-oAPT::Sandbox::User=root".to_string(),
        ]
    }

    fn apt(&self, tool: &'static str, args: &[&str], cwd: Option<&Path>) -> Result<String> {
        let mut c = Command::new(tool);
        c.args(self.options())
            .args(args)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        if let Some(cwd) = cwd {
            c.current_dir(cwd);
        }
        let out = run_tool(&mut c, tool, "apt", Stage::Fetch)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether `apt-get update` has run for this state.
    pub fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("lists")).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
    }

    /// `apt-get update` into the private lists.
    pub fn update(&self) -> Result<()> {
        self.apt("apt-get", &["-q", "update"], None).map(|_| ())
    }

    /// Package names matching an extended regular expression (`apt-cache search --names-only`).
    pub fn search_names(&self, regex: &str) -> Result<Vec<String>> {
        let out = self.apt("apt-cache", &["search", "--names-only", regex], None)?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }

    /// `apt-get download PACKAGE` into this state's `debs/` directory; the `.deb` path. A
    /// package already downloaded is not downloaded again.
    pub fn download(&self, package: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        if let Some(p) = find_deb(&debs, package) {
            return Ok(p);
        }
        if !self.has_lists() {
            self.update()?;
        }
        let first = self.apt("apt-get", &["-q", "download", package], Some(&debs));
        if first.is_err() {
            // Stale lists name a version the mirror no longer has: refresh and retry once.
            self.update()?;
            self.apt("apt-get", &["-q", "download", package], Some(&debs))?;
        }
        find_deb(&debs, package).ok_or_else(|| {
            fetch_err(ErrorKind::Spec(format!(
                "apt-get download {package} left no {package}_*.deb in {}",
                debs.display()
            )))
        })
    }
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Download Debian package `package` from `suite` into the cache (the generic step that kernel
/// images and, later, `linux-source-*` packages go through); the `.deb` path. Cached: a second
/// call does not touch the network.
pub fn download_package(cache: &Cache, suite: Suite, package: &str) -> Result<PathBuf> {
    let mirrors = Mirrors::from_system()?;
    AptState::open(cache, suite, &mirrors)?.download(package)
}

/// The members of a `.deb`'s data archive (`dpkg-deb -c`), as paths like `./boot/vmlinuz-...`.
pub fn deb_members(deb: &Path) -> Result<Vec<String>> {
    let out = run_tool(
        Command::new("dpkg-deb").arg("-c").arg(deb),
        "dpkg-deb",
        "dpkg",
        Stage::Fetch,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(str::to_string)
        .collect())
}

/// A control field of a `.deb` (`dpkg-deb -f`).
pub fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = run_tool(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(field),
        "dpkg-deb",
        "dpkg",
        Stage::Fetch,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One member of a `.deb`'s data archive, written to `dest`
/// (`dpkg-deb --fsys-tarfile DEB | tar -x -O MEMBER`).
pub fn extract_member(deb: &Path, member: &str, dest: &Path) -> Result<()> {
    let mut deb_proc = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == IoErrorKind::NotFound {
                fetch_err(ErrorKind::ToolMissing {
                    tool: "dpkg-deb",
                    packages: "dpkg",
                })
            } else {
                io_err("running dpkg-deb")(e)
            }
        })?;
    let Some(stdout) = deb_proc.stdout.take() else {
        return Err(fetch_err(ErrorKind::Spec("dpkg-deb gave no stdout".into())));
    };
    let out = run_tool(
        Command::new("tar")
            .arg("-x")
            .arg("-O")
            .arg(member)
            .stdin(stdout),
        "tar",
        "tar",
        Stage::Fetch,
    );
    let status = deb_proc.wait();
    let out = out?;
    if !status.is_ok_and(|s| s.success()) {
        return Err(fetch_err(ErrorKind::Spec(format!(
            "dpkg-deb --fsys-tarfile {} failed",
            deb.display()
        ))));
    }
    if out.stdout.is_empty() {
        return Err(fetch_err(ErrorKind::Spec(format!(
            "{member} is empty or missing in {}",
            deb.display()
        ))));
    }
    crate::cache::write_atomic(dest, &out.stdout)
        .map_err(io_err(format!("writing {}", dest.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_one_line_and_deb822_sources() {
        let one = "# comment\n\
                   deb http://mirror.example/debian bookworm main\n\
                   deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian-security bookworm-security main\n";
        assert_eq!(
            Mirrors::parse(one),
            Some(Mirrors {
                debian: "http://mirror.example/debian".into(),
                security: "http://mirror.example/debian-security".into()
            })
        );
        let deb822 = "Types: deb\n\
                      URIs: http://m.example/debian/\n\
                      Suites: bookworm bookworm-updates\n\
                      Components: main\n\
                      \n\
                      Types: deb\n\
                      URIs: http://s.example/debian-security\n\
                      Suites: bookworm-security\n\
                      Components: main\n\
                      \n\
                      Types: deb\n\
                      URIs: https://elsewhere.example/node\n\
                      Suites: nodistro\n";
        assert_eq!(
            Mirrors::parse(deb822),
            Some(Mirrors {
                debian: "http://m.example/debian".into(),
                security: "http://s.example/debian-security".into()
            })
        );
        // No security line: derived from the main mirror.
        assert_eq!(
            Mirrors::parse("deb http://m.example/debian bookworm main").map(|m| m.security),
            Some("http://m.example/debian-security".into())
        );
        assert_eq!(
            Mirrors::parse("deb http://x.example/ubuntu jammy main"),
            None
        );
    }

    #[test]
    fn sources_lists_per_suite() {
        let m = Mirrors {
            debian: "http://m.example/debian".into(),
            security: "http://m.example/debian-security".into(),
        };
        let b = Suite::Bookworm.sources_list(&m);
        assert_eq!(b.lines().count(), 3);
        assert!(
            b.contains("[arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]")
        );
        assert!(b.contains("http://m.example/debian-security bookworm-security main"));
        assert!(b.contains("http://m.example/debian bookworm-updates main"));
        assert_eq!(
            Suite::TrixieBackports.sources_list(&m),
            "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://m.example/debian trixie-backports main\n"
        );
        assert_eq!(Suite::for_series("6.1"), Suite::Bookworm);
        assert_eq!(Suite::for_series("6.12"), Suite::Bookworm);
        assert_eq!(Suite::for_series("6.18"), Suite::TrixieBackports);
        assert_eq!(Suite::for_series("7.3"), Suite::TrixieBackports);
    }

    #[test]
    fn private_state_options_never_name_etc_apt() {
        let s = AptState {
            suite: Suite::Bookworm,
            dir: PathBuf::from("/c/apt/bookworm"),
        };
        let o = s.options().join(" ");
        assert!(o.contains("-oDir::Etc::SourceList=/c/apt/bookworm/sources.list"));
        assert!(o.contains("-oDir::State::Lists=/c/apt/bookworm/lists"));
        assert!(o.contains("-oDir::State::status=/c/apt/bookworm/status"));
        assert!(o.contains("-oAPT::Architectures::=arm64"));
        assert!(!o.contains("/etc/apt"));
    }
}
