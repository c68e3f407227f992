//! Kernels: Debian's arm64 kernels fetched with apt, or the user's own `Image`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::apt::{self, AptState, Mirrors, Suite};
use crate::cache::{self, Cache};
use crate::error::{Error, ErrorKind, Result, Stage};

/// The arm64 `Image` header magic, "ARM\x64" at offset 0x38.
pub const ARM64_IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
/// Its offset in the header.
pub const ARM64_IMAGE_MAGIC_OFFSET: usize = 0x38;

/// Which kernel to boot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KernelSpec {
    /// Debian's newest arm64 kernel of a series, e.g. "6.1", "6.12", "6.18", "7.3".
    Debian(String),
    /// Debian's newest arm64 kernel in trixie-backports.
    DebianLatest,
    /// An arm64 `Image` (optionally gzip'd) on disk.
    Path(PathBuf),
}

impl KernelSpec {
    /// Parse `debian:SERIES`, `debian:latest` or a path.
    ///
    /// ```
    /// use hypdbg_real::KernelSpec;
    /// assert_eq!(KernelSpec::parse("debian:6.12").unwrap(), KernelSpec::Debian("6.12".into()));
    /// assert!(KernelSpec::parse("debian:six").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<KernelSpec> {
        let bad = |why: String| Error::new(Some(s), Stage::Fetch, ErrorKind::Spec(why));
        if let Some(rest) = s.strip_prefix("debian:") {
            if rest == "latest" {
                return Ok(KernelSpec::DebianLatest);
            }
            let parts: Vec<&str> = rest.split('.').collect();
            let numeric =
                |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
            if parts.len() == 2 && parts.iter().all(|p| numeric(p)) {
                return Ok(KernelSpec::Debian(rest.to_string()));
            }
            return Err(bad(format!(
                "'{rest}' is not a kernel series: use debian:MAJOR.MINOR (6.1, 6.12, 6.18, 7.3) or debian:latest"
            )));
        }
        if s.is_empty() {
            return Err(bad(
                "empty kernel: use debian:SERIES, debian:latest or a path to an arm64 Image".into(),
            ));
        }
        Ok(KernelSpec::Path(PathBuf::from(s)))
    }

    fn cache_key(&self) -> Option<String> {
        match self {
            KernelSpec::Debian(s) => Some(format!("debian-{s}")),
            KernelSpec::DebianLatest => Some("debian-latest".to_string()),
            KernelSpec::Path(_) => None,
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Debian(s) => write!(f, "debian:{s}"),
            KernelSpec::DebianLatest => f.write_str("debian:latest"),
            KernelSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A kernel image ready to boot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelImage {
    /// What was asked for (`debian:6.1`, a path).
    pub spec: String,
    /// The uncompressed arm64 `Image`.
    pub path: PathBuf,
    /// The kernel release, e.g. `6.1.0-57-arm64` (`uname -r`), from the package or the Image's
    /// banner.
    pub version: String,
    /// MAJOR.MINOR, e.g. `6.1`.
    pub series: String,
    /// The Debian package the image came from, if any.
    pub package: Option<String>,
}

impl KernelImage {
    /// How errors and reports name this kernel: `debian:6.1 (6.1.0-57-arm64)`.
    pub fn name(&self) -> String {
        if self.spec == self.version {
            self.spec.clone()
        } else {
            format!("{} ({})", self.spec, self.version)
        }
    }
}

fn fetch_err(spec: &KernelSpec, kind: ErrorKind) -> Error {
    Error::new(Some(&spec.to_string()), Stage::Fetch, kind)
}

/// What an `Image` file says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The release in the banner ("Linux version 6.1.0-57-arm64 ..."), if found.
    pub version: Option<String>,
}

/// Check that `bytes` is an uncompressed arm64 `Image` and read its version banner.
pub fn inspect_image(bytes: &[u8]) -> std::result::Result<ImageInfo, String> {
    if bytes.len() < 64 {
        return Err(format!(
            "{} bytes is too short for an arm64 Image",
            bytes.len()
        ));
    }
    if &bytes[ARM64_IMAGE_MAGIC_OFFSET..ARM64_IMAGE_MAGIC_OFFSET + 4] != ARM64_IMAGE_MAGIC {
        return Err("not an arm64 Linux Image (no \"ARM\\x64\" magic at offset 0x38)".to_string());
    }
    Ok(ImageInfo {
        version: banner_version(bytes),
    })
}

/// The release after "Linux version " in the kernel banner.
pub fn banner_version(bytes: &[u8]) -> Option<String> {
    let needle = b"Linux version ";
    let mut start = 0;
    while let Some(i) = find(&bytes[start..], needle) {
        let at = start + i + needle.len();
        let tail = &bytes[at..bytes.len().min(at + 128)];
        let end = tail
            .iter()
            .position(|&b| b == b' ' || b == 0 || b == b'\n')
            .unwrap_or(tail.len());
        let v = &tail[..end];
        // The banner proper: the release starts with a digit and "(" follows it.
        if v.first().is_some_and(u8::is_ascii_digit)
            && tail.get(end) == Some(&b' ')
            && tail.get(end + 1) == Some(&b'(')
        {
            return std::str::from_utf8(v).ok().map(str::to_string);
        }
        start = at;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// MAJOR.MINOR of a release ("6.1.0-57-arm64" -> "6.1", "7.3.4+deb13-arm64" -> "7.3").
pub fn series_of(version: &str) -> Option<String> {
    let mut it = version.split(|c: char| !c.is_ascii_digit());
    let major = it.next().filter(|s| !s.is_empty())?;
    let minor = it.next().filter(|s| !s.is_empty())?;
    Some(format!("{major}.{minor}"))
}

/// The Debian arm64 kernel packages of `series` among `names`, newest last; the release of each.
/// `linux-image-6.1.0-57-arm64` is release `6.1.0-57-arm64`; flavours (cloud, rt, 16k), debug
/// and unsigned variants are left out.
pub fn debian_candidates(names: &[String], series: Option<&str>) -> Vec<(String, String)> {
    let mut v: Vec<(Vec<u64>, String, String)> = names
        .iter()
        .filter_map(|n| {
            let release = n.strip_prefix("linux-image-")?;
            let body = release.strip_suffix("-arm64")?;
            if body.ends_with("-cloud") || body.ends_with("-rt") {
                return None;
            }
            if !body.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            if let Some(s) = series {
                let rest = body.strip_prefix(s)?;
                if !(rest.starts_with('.') || rest.starts_with('-')) {
                    return None;
                }
            }
            // A meta package ("linux-image-6.12-arm64") has no patch level.
            if series_of(body).as_deref() == Some(body) {
                return None;
            }
            let key: Vec<u64> = body
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            Some((key, n.clone(), release.to_string()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n, r)| (n, r)).collect()
}

/// The kernel image member of a package's file list: `./boot/vmlinuz-RELEASE` (up to 6.x) or
/// `./usr/lib/modules/RELEASE/vmlinuz` (7.x).
pub fn vmlinuz_member(members: &[String]) -> Option<String> {
    members
        .iter()
        .find(|m| {
            m.starts_with("./boot/vmlinuz-")
                || (m.starts_with("./usr/lib/modules/") && m.ends_with("/vmlinuz"))
        })
        .cloned()
}

/// The packages named in a Depends field that may hold the image (`linux-binary-*`).
pub fn binary_packages(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .filter(|n| n.starts_with("linux-binary-"))
        .map(str::to_string)
        .collect()
}

/// Get the kernel named by `spec`: for `debian:*`, download the package into the cache with a
/// private apt state and pull the image out (cached: a second fetch does not run apt); for a
/// path, check it is an arm64 `Image` and gunzip it into the cache if it is gzip'd.
pub fn fetch(spec: &KernelSpec, cache: &Cache) -> Result<KernelImage> {
    match spec {
        KernelSpec::Path(p) => fetch_path(spec, p, cache),
        KernelSpec::Debian(_) | KernelSpec::DebianLatest => fetch_debian(spec, cache),
    }
}

fn fetch_path(spec: &KernelSpec, path: &Path, cache: &Cache) -> Result<KernelImage> {
    let bytes = fs::read(path).map_err(|source| {
        fetch_err(
            spec,
            ErrorKind::Io {
                what: format!("reading {}", path.display()),
                source,
            },
        )
    })?;
    let (image_path, image_bytes) = if is_gzip(&bytes) {
        let key = format!("{:016x}", cache::fnv1a64(&[&bytes]));
        let dir = cache
            .dir(Path::new("kernels").join(format!("local-{key}")))
            .map_err(|source| {
                fetch_err(
                    spec,
                    ErrorKind::Io {
                        what: "creating the kernel cache directory".into(),
                        source,
                    },
                )
            })?;
        let out = dir.join("Image");
        let raw = if out.exists() {
            fs::read(&out).map_err(|source| {
                fetch_err(
                    spec,
                    ErrorKind::Io {
                        what: format!("reading {}", out.display()),
                        source,
                    },
                )
            })?
        } else {
            let o = apt::run_tool(
                Command::new("gzip").arg("-dc").arg(path),
                "gzip",
                "gzip",
                Stage::Fetch,
            )
            .map_err(|e| e.for_kernel(&spec.to_string()))?;
            cache::write_atomic(&out, &o.stdout).map_err(|source| {
                fetch_err(
                    spec,
                    ErrorKind::Io {
                        what: format!("writing {}", out.display()),
                        source,
                    },
                )
            })?;
            o.stdout
        };
        (out, raw)
    } else {
        (path.to_path_buf(), bytes)
    };
    let info = inspect_image(&image_bytes).map_err(|why| {
        fetch_err(
            spec,
            ErrorKind::BadImage(format!("{}: {why}", path.display())),
        )
    })?;
    let version = info.version.unwrap_or_else(|| "unknown".to_string());
    let series = series_of(&version).unwrap_or_else(|| "unknown".to_string());
    Ok(KernelImage {
        spec: spec.to_string(),
        path: image_path,
        version,
        series,
        package: None,
    })
}

fn fetch_debian(spec: &KernelSpec, cache: &Cache) -> Result<KernelImage> {
    let Some(key) = spec.cache_key() else {
        return Err(fetch_err(
            spec,
            ErrorKind::Spec("not a Debian kernel".into()),
        ));
    };
    let io = |what: String| {
        let spec = spec.clone();
        move |source| fetch_err(&spec, ErrorKind::Io { what, source })
    };
    let dir = cache
        .dir(Path::new("kernels").join(&key))
        .map_err(io("creating the kernel cache directory".into()))?;
    let meta = dir.join("kernel.json");
    if let Ok(text) = fs::read_to_string(&meta)
        && let Ok(k) = serde_json::from_str::<KernelImage>(&text)
        && k.path.exists()
    {
        return Ok(k);
    }
    let lbl = |e: Error| e.for_kernel(&spec.to_string());
    let (suite, series) = match spec {
        KernelSpec::Debian(s) => (Suite::for_series(s), Some(s.as_str())),
        _ => (Suite::TrixieBackports, None),
    };
    let mirrors = Mirrors::from_system().map_err(lbl)?;
    let apt = AptState::open(cache, suite, &mirrors).map_err(lbl)?;
    apt.update().map_err(lbl)?;
    let names = apt
        .search_names("^linux-image-[0-9].*-arm64$")
        .map_err(lbl)?;
    let candidates = debian_candidates(&names, series);
    let Some((package, release)) = candidates.last().cloned() else {
        let mut seen: Vec<String> = debian_candidates(&names, None)
            .iter()
            .filter_map(|(_, r)| series_of(r))
            .collect();
        seen.dedup();
        return Err(fetch_err(
            spec,
            ErrorKind::Spec(format!(
                "no arm64 kernel of that series in {} (it has: {})",
                suite.name(),
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            )),
        ));
    };
    let (deb, members, from) = download_image_package(&apt, &package).map_err(lbl)?;
    let Some(member) = vmlinuz_member(&members) else {
        return Err(fetch_err(
            spec,
            ErrorKind::Spec(format!(
                "{package} (and the linux-binary-* it depends on) holds no vmlinuz"
            )),
        ));
    };
    let image = dir.join("Image");
    apt::extract_member(&deb, &member, &image).map_err(lbl)?;
    let mut bytes = fs::read(&image).map_err(io(format!("reading {}", image.display())))?;
    if is_gzip(&bytes) {
        let o = apt::run_tool(
            Command::new("gzip").arg("-dc").arg(&image),
            "gzip",
            "gzip",
            Stage::Fetch,
        )
        .map_err(lbl)?;
        cache::write_atomic(&image, &o.stdout)
            .map_err(io(format!("writing {}", image.display())))?;
        bytes = o.stdout;
    }
    inspect_image(&bytes).map_err(|why| {
        fetch_err(
            spec,
            ErrorKind::BadImage(format!("{member} of {from}: {why}")),
        )
    })?;
    let k = KernelImage {
        spec: spec.to_string(),
        path: image,
        series: series_of(&release).unwrap_or_default(),
        version: release,
        package: Some(from),
    };
    let json = serde_json::to_string_pretty(&k).map_err(|e| {
        fetch_err(
            spec,
            ErrorKind::Spec(format!("serialising kernel.json: {e}")),
        )
    })?;
    cache::write_atomic(&meta, json.as_bytes())
        .map_err(io(format!("writing {}", meta.display())))?;
    remove_kernel_debs(&apt);
    Ok(k)
}

/// Download `package` and, when it holds no vmlinuz (7.x: linux-image-* is a shell), the
/// linux-binary-* it depends on that does: the .deb, its members, the package's name.
fn download_image_package(apt: &AptState, package: &str) -> Result<(PathBuf, Vec<String>, String)> {
    let deb = apt.download(package)?;
    let members = apt::deb_members(&deb)?;
    if vmlinuz_member(&members).is_some() {
        return Ok((deb, members, package.to_string()));
    }
    let depends = apt::deb_field(&deb, "Depends")?;
    for bin in binary_packages(&depends) {
        let d = apt.download(&bin)?;
        let m = apt::deb_members(&d)?;
        if vmlinuz_member(&m).is_some() {
            return Ok((d, m, bin));
        }
    }
    Ok((deb, members, package.to_string()))
}

/// The kernel .debs are not needed once the image is out (60-130 MB each).
fn remove_kernel_debs(apt: &AptState) {
    for d in fs::read_dir(apt.dir().join("debs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = d.file_name().to_string_lossy().into_owned();
        if n.starts_with("linux-image-") || n.starts_with("linux-binary-") {
            let _ = fs::remove_file(d.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        assert_eq!(
            KernelSpec::parse("debian:6.1").unwrap(),
            KernelSpec::Debian("6.1".into())
        );
        assert_eq!(
            KernelSpec::parse("debian:7.3").unwrap(),
            KernelSpec::Debian("7.3".into())
        );
        assert_eq!(
            KernelSpec::parse("debian:latest").unwrap(),
            KernelSpec::DebianLatest
        );
        assert_eq!(
            KernelSpec::parse("/boot/Image.gz").unwrap(),
            KernelSpec::Path("/boot/Image.gz".into())
        );
        for bad in ["debian:", "debian:6", "debian:6.1.2", "debian:x.y", ""] {
            let e = KernelSpec::parse(bad).unwrap_err();
            assert_eq!(e.stage, Stage::Fetch);
            assert!(e.to_string().contains(": fetch: "), "{e}");
        }
        assert_eq!(
            KernelSpec::parse("debian:6.18").unwrap().to_string(),
            "debian:6.18"
        );
    }

    fn fake_image(banner: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x40];
        b[0x38..0x3c].copy_from_slice(ARM64_IMAGE_MAGIC);
        b.extend_from_slice(b"junk Linux version %s (gcc)\0");
        b.extend_from_slice(banner.as_bytes());
        b
    }

    #[test]
    fn image_magic_and_banner() {
        let img = fake_image("Linux version 6.1.0-57-arm64 (debian-kernel@lists) #1 SMP\n");
        assert_eq!(
            inspect_image(&img).unwrap().version.as_deref(),
            Some("6.1.0-57-arm64")
        );
        let mut not = img.clone();
        not[0x38] = b'X';
        assert!(inspect_image(&not).unwrap_err().contains("ARM\\x64"));
        assert!(inspect_image(&[0; 10]).is_err());
        assert!(is_gzip(&[0x1f, 0x8b, 8]));
        assert!(!is_gzip(&img));
    }

    #[test]
    fn series_from_release() {
        assert_eq!(series_of("6.1.0-57-arm64").as_deref(), Some("6.1"));
        assert_eq!(series_of("6.12.117+deb12-arm64").as_deref(), Some("6.12"));
        assert_eq!(series_of("7.3.4+deb13-arm64").as_deref(), Some("7.3"));
        assert_eq!(series_of("unknown"), None);
    }

    #[test]
    fn candidate_selection() {
        let names: Vec<String> = [
            "linux-image-6.1.0-9-arm64",
            "linux-image-6.1.0-57-arm64",
            "linux-image-6.1.0-57-arm64-unsigned",
            "linux-image-6.1.0-57-cloud-arm64",
            "linux-image-6.1.0-57-rt-arm64",
            "linux-image-6.12-arm64",
            "linux-image-6.12.9+deb12-arm64",
            "linux-image-6.12.117+deb12-arm64",
            "linux-image-6.12.117+deb12-arm64-16k",
            "linux-image-7.3.4+deb13-arm64",
            "linux-image-7.3.4+deb13-arm64-dbg",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let six_one = debian_candidates(&names, Some("6.1"));
        assert_eq!(
            six_one.last().unwrap(),
            &(
                "linux-image-6.1.0-57-arm64".to_string(),
                "6.1.0-57-arm64".to_string()
            )
        );
        assert_eq!(six_one.len(), 2, "9 and 57; not 6.12: {six_one:?}");
        let twelve = debian_candidates(&names, Some("6.12"));
        assert_eq!(twelve.last().unwrap().1, "6.12.117+deb12-arm64");
        assert_eq!(twelve.len(), 2);
        assert_eq!(
            debian_candidates(&names, None).last().unwrap().1,
            "7.3.4+deb13-arm64"
        );
        assert!(debian_candidates(&names, Some("6.18")).is_empty());
    }

    #[test]
    fn image_member_and_binary_packages() {
        let old = vec![
            "./boot/".to_string(),
            "./boot/config-6.1.0-57-arm64".to_string(),
            "./boot/vmlinuz-6.1.0-57-arm64".to_string(),
        ];
        assert_eq!(
            vmlinuz_member(&old).as_deref(),
            Some("./boot/vmlinuz-6.1.0-57-arm64")
        );
        let new = vec!["./usr/lib/modules/7.3.4+deb13-arm64/vmlinuz".to_string()];
        assert_eq!(
            vmlinuz_member(&new).as_deref(),
            Some("./usr/lib/modules/7.3.4+deb13-arm64/vmlinuz")
        );
        assert_eq!(vmlinuz_member(&["./usr/share/doc/x".to_string()]), None);
        let dep = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                   linux-base-7.3.4+deb13-arm64 (= 7.3.4-1~bpo13+1), \
                   linux-binary-7.3.4+deb13-arm64 (= 7.3.4-1~bpo13+1), \
                   linux-modules-7.3.4+deb13-arm64 (= 7.3.4-1~bpo13+1)";
        assert_eq!(binary_packages(dep), ["linux-binary-7.3.4+deb13-arm64"]);
    }

    #[test]
    fn local_images_plain_gzip_and_bad() {
        let dir = std::env::temp_dir().join(format!("hypdbg-real-kernel-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let cache = Cache::at(dir.join("cache"));
        let img = fake_image("Linux version 6.19.0-custom (me@host) #1\n");
        let plain = dir.join("Image");
        fs::write(&plain, &img).unwrap();
        let spec = KernelSpec::Path(plain.clone());
        let k = fetch(&spec, &cache).unwrap();
        assert_eq!(k.path, plain);
        assert_eq!(k.version, "6.19.0-custom");
        assert_eq!(k.series, "6.19");

        // gzip'd: decompressed into the cache (gzip is Essential on Debian).
        let gz = dir.join("Image.gz");
        let st = Command::new("gzip")
            .arg("-kn")
            .arg(&plain)
            .status()
            .unwrap();
        assert!(st.success());
        let k = fetch(&KernelSpec::Path(gz.clone()), &cache).unwrap();
        assert!(k.path.starts_with(cache.root()));
        assert_eq!(fs::read(&k.path).unwrap(), img);
        assert_eq!(k.version, "6.19.0-custom");

        let bad = dir.join("notes.txt");
        fs::write(&bad, vec![b'x'; 100]).unwrap();
        let e = fetch(&KernelSpec::Path(bad.clone()), &cache).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: fetch: ", bad.display())),
            "{msg}"
        );
        assert!(msg.contains("not an arm64 Linux Image"), "{msg}");
        let e = fetch(&KernelSpec::Path(dir.join("missing")), &cache).unwrap_err();
        assert_eq!(e.stage, Stage::Fetch);
        fs::remove_dir_all(&dir).unwrap();
    }
}
