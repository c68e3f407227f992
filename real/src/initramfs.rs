//! A newc ("070701") cpio archive, the format the kernel unpacks as its initramfs.
//!
//! Each entry is a 110-byte ASCII header (magic and 13 fields of 8 hex digits), the
//! NUL-terminated name padded to a multiple of 4, then the data padded to a multiple of 4. The
//! archive ends with an entry named `TRAILER!!!`. Compression is optional for the kernel and not
//! used here.

/// The file type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// An archive being built.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    next_ino: u32,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Archive {
            bytes: Vec::new(),
            next_ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// A directory (`name` without a leading slash, e.g. `dev`).
    pub fn dir(&mut self, name: &str, perm: u32) -> &mut Self {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[]);
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> &mut Self {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
        self
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
        self
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.bytes
    }
}

/// The initramfs of the agent: `/init` and a `/dev/console` node (5, 1) so the kernel can give
/// init its console before devtmpfs is mounted, plus the mount points the agent uses.
pub fn agent_initramfs(init: &[u8]) -> Vec<u8> {
    let mut a = Archive::new();
    a.dir("dev", 0o755)
        .char_dev("dev/console", 0o600, 5, 1)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .file("init", 0o755, init);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal newc reader for the tests: (name, mode, rdevmajor, rdevminor, data).
    fn parse(mut b: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            let off = total - b.len();
            assert_eq!(off % 4, 0, "entry at unaligned offset {off}");
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&b[110..name_end - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[name_end - 1], 0);
            let data_start = name_end.next_multiple_of(4);
            let data = b[data_start..data_start + size as usize].to_vec();
            let next = (data_start + size as usize).next_multiple_of(4);
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, rmaj, rmin, data));
        }
    }

    #[test]
    fn newc_layout() {
        let bytes = agent_initramfs(b"\x7fELF12345");
        assert_eq!(bytes.len() % 4, 0);
        // The first header, field by field.
        let hdr = std::str::from_utf8(&bytes[..110]).unwrap();
        assert_eq!(
            hdr,
            "070701\
             00000001\
             000041ed\
             00000000\
             00000000\
             00000002\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000000\
             00000004\
             00000000"
        );
        assert_eq!(&bytes[110..114], b"dev\0");
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "proc", "sys", "init"]);
        let console = &entries[1];
        assert_eq!(
            (console.1, console.2, console.3),
            (0o020600, 5, 1),
            "a character device (5, 1)"
        );
        let init = &entries[4];
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.4, b"\x7fELF12345");
    }

    #[test]
    fn data_padding_for_every_length() {
        for n in 0..9 {
            let data = vec![0xabu8; n];
            let mut a = Archive::new();
            a.file("f", 0o644, &data).file("g", 0o644, b"x");
            let bytes = a.finish();
            let e = parse(&bytes);
            assert_eq!(e[0].4, data);
            assert_eq!(e[1].4, b"x");
        }
    }
}
