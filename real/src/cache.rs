//! The cache directory: downloaded packages, kernel images, the built agent and initramfs.
//! Nothing of it belongs in the repository.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result, Stage};

/// The cache directory: `$HYPDBG_CACHE` if set, else `$XDG_CACHE_HOME/hypdbg`, else
/// `~/.cache/hypdbg`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache named by the environment.
    pub fn from_env() -> Result<Cache> {
        Self::resolve(
            std::env::var_os("HYPDBG_CACHE"),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )
        .map(Cache::at)
        .ok_or_else(|| {
            Error::new(
                None,
                Stage::Fetch,
                ErrorKind::Spec(
                    "no cache directory: set HYPDBG_CACHE, XDG_CACHE_HOME or HOME".to_string(),
                ),
            )
        })
    }

    /// The rule of [`Cache::from_env`], on given values (empty values count as unset).
    pub fn resolve(
        hypdbg_cache: Option<OsString>,
        xdg_cache_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Option<PathBuf> {
        let set = |v: Option<OsString>| v.filter(|v| !v.is_empty());
        if let Some(d) = set(hypdbg_cache) {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = set(xdg_cache_home) {
            return Some(PathBuf::from(d).join("hypdbg"));
        }
        set(home).map(|h| PathBuf::from(h).join(".cache").join("hypdbg"))
    }

    /// A cache rooted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/sub`, created if missing.
    pub fn dir(&self, sub: impl AsRef<Path>) -> std::io::Result<PathBuf> {
        let d = self.root.join(sub);
        fs::create_dir_all(&d)?;
        Ok(d)
    }
}

/// FNV-1a, 64 bits: a content key for cache entries (not a security hash).
pub(crate) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file (and two writers do not corrupt it).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_rule() {
        let s = |x: &str| Some(OsString::from(x));
        assert_eq!(
            Cache::resolve(s("/c"), s("/x"), s("/h")),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            Cache::resolve(s(""), s("/x"), s("/h")),
            Some(PathBuf::from("/x/hypdbg"))
        );
        assert_eq!(
            Cache::resolve(None, None, s("/h")),
            Some(PathBuf::from("/h/.cache/hypdbg"))
        );
        assert_eq!(Cache::resolve(None, None, None), None);
    }

    #[test]
    fn fnv_separates_parts() {
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
        assert_eq!(fnv1a64(&[b"x"]), fnv1a64(&[b"x"]));
    }
}
