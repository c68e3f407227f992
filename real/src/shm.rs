//! The bulk-data channel: QEMU backs guest RAM with a file the host keeps open; the agent
//! reports the physical frames of a locked buffer; the host reads and writes those frames
//! through the file. Serial input into the guest was measured at about 12 us per byte
//! (80 KB/s), so guest memory, requests and replies do not go over the serial line when this
//! is available.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::proto::SharedPages;

/// Where QEMU's `virt` machine puts RAM.
pub const VIRT_RAM_BASE: u64 = 0x4000_0000;

/// A file that backs guest RAM, removed from the file system when dropped (or earlier, by
/// [`RamFile::unlink`], once QEMU has it mapped).
#[derive(Debug)]
pub(crate) struct RamFile {
    path: Option<PathBuf>,
    file: File,
    size: u64,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl RamFile {
    /// A sparse file of `size` bytes in `dir`.
    pub(crate) fn create(dir: &Path, size: u64) -> std::io::Result<RamFile> {
        fs::create_dir_all(dir)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("hypdbg-ram-{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len(size)?;
        Ok(RamFile {
            path: Some(path),
            file,
            size,
        })
    }

    /// The path QEMU maps (until unlinked).
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Remove the name; QEMU and this handle keep the file.
    pub(crate) fn unlink(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}

impl Drop for RamFile {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// A run of the agent's buffer: the file offsets of its pages.
#[derive(Debug)]
struct Region {
    offsets: Vec<u64>,
}

/// The agent's shared buffer, seen through the RAM file: a data region for guest memory and
/// the two mailboxes.
#[derive(Debug)]
pub(crate) struct SharedBuffer {
    ram: RamFile,
    page: u64,
    data: Region,
    req: Region,
    rep: Region,
}

impl SharedBuffer {
    /// The buffer the agent reported, if its frames lie inside the file and its regions add
    /// up.
    pub(crate) fn new(ram: RamFile, pages: &SharedPages) -> Option<SharedBuffer> {
        let page = pages.page;
        let total = pages.data_pages + pages.req_pages + pages.rep_pages;
        if page < 64 || pages.pfns.len() != total || pages.req_pages == 0 || pages.rep_pages == 0 {
            return None;
        }
        let mut offsets = Vec::with_capacity(total);
        for pfn in &pages.pfns {
            let off = pfn.checked_mul(page)?.checked_sub(VIRT_RAM_BASE)?;
            if off.checked_add(page)? > ram.size {
                return None;
            }
            offsets.push(off);
        }
        let rep = offsets.split_off(pages.data_pages + pages.req_pages);
        let req = offsets.split_off(pages.data_pages);
        Some(SharedBuffer {
            ram,
            page,
            data: Region { offsets },
            req: Region { offsets: req },
            rep: Region { offsets: rep },
        })
    }

    fn capacity_of(&self, r: &Region) -> usize {
        (self.page as usize) * r.offsets.len()
    }

    fn write_at(&self, r: &Region, start: usize, bytes: &[u8]) -> std::io::Result<()> {
        let page = self.page as usize;
        let mut done = 0;
        while done < bytes.len() {
            let pos = start + done;
            let (idx, within) = (pos / page, pos % page);
            let n = (page - within).min(bytes.len() - done);
            let off = r.offsets.get(idx).ok_or_else(too_big)?;
            self.ram
                .file
                .write_all_at(&bytes[done..done + n], off + within as u64)?;
            done += n;
        }
        Ok(())
    }

    fn read_at(&self, r: &Region, start: usize, len: usize) -> std::io::Result<Vec<u8>> {
        let page = self.page as usize;
        let mut out = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let pos = start + done;
            let (idx, within) = (pos / page, pos % page);
            let n = (page - within).min(len - done);
            let off = r.offsets.get(idx).ok_or_else(too_big)?;
            self.ram
                .file
                .read_exact_at(&mut out[done..done + n], off + within as u64)?;
            done += n;
        }
        Ok(out)
    }

    /// How many bytes one guest-memory transfer moves at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity_of(&self.data)
    }

    /// Put `data` (at most [`SharedBuffer::capacity`]) at the start of the data region.
    pub(crate) fn write(&self, data: &[u8]) -> std::io::Result<()> {
        self.write_at(&self.data, 0, data)
    }

    /// The first `len` bytes of the data region.
    pub(crate) fn read(&self, len: usize) -> std::io::Result<Vec<u8>> {
        self.read_at(&self.data, 0, len)
    }

    /// The longest request the request mailbox takes.
    pub(crate) fn request_capacity(&self) -> usize {
        self.capacity_of(&self.req) - 8
    }

    /// Put a request line (no newline) in the request mailbox: its length (u64, little endian),
    /// then the bytes.
    pub(crate) fn put_request(&self, line: &[u8]) -> std::io::Result<()> {
        if line.len() > self.request_capacity() {
            return Err(too_big());
        }
        self.write_at(&self.req, 8, line)?;
        self.write_at(&self.req, 0, &(line.len() as u64).to_le_bytes())
    }

    /// The reply in the reply mailbox.
    pub(crate) fn take_reply(&self) -> std::io::Result<Vec<u8>> {
        let len = self.read_at(&self.rep, 0, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&len);
        let len = u64::from_le_bytes(b) as usize;
        if len + 8 > self.capacity_of(&self.rep) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("reply mailbox claims {len} bytes"),
            ));
        }
        self.read_at(&self.rep, 8, len)
    }
}

fn too_big() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "more bytes than the shared region holds",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_map_to_file_offsets_and_back() {
        let dir = std::env::temp_dir().join(format!("hypdbg-shm-test-{}", std::process::id()));
        let ram = RamFile::create(&dir, 1 << 20).unwrap();
        let path = ram.path().unwrap().to_path_buf();
        assert!(path.exists());
        // Data frames 0x40003 and 0x40001 (offsets 0x3000 and 0x1000, in that order), request
        // mailbox 0x40005, reply mailbox 0x40000 and 0x40002.
        let pages = SharedPages {
            page: 4096,
            data_pages: 2,
            req_pages: 1,
            rep_pages: 2,
            pfns: vec![0x40003, 0x40001, 0x40005, 0x40000, 0x40002],
        };
        let buf = SharedBuffer::new(ram, &pages).unwrap();
        assert_eq!(buf.capacity(), 8192);
        let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
        buf.write(&data).unwrap();
        assert_eq!(buf.read(6000).unwrap(), data);
        let raw = fs::read(&path).unwrap();
        assert_eq!(&raw[0x3000..0x4000], &data[..4096]);
        assert_eq!(&raw[0x1000..0x1000 + 1904], &data[4096..]);
        // The request mailbox: length then bytes, in frame 0x40005.
        assert_eq!(buf.request_capacity(), 4088);
        buf.put_request(b"7 ping").unwrap();
        let raw = fs::read(&path).unwrap();
        assert_eq!(&raw[0x5000..0x5008], &6u64.to_le_bytes());
        assert_eq!(&raw[0x5008..0x500e], b"7 ping");
        assert!(buf.put_request(&[b'x'; 4089]).is_err());
        // A reply that spans the two reply frames, as the agent would leave it.
        let reply: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut both = (reply.len() as u64).to_le_bytes().to_vec();
        both.extend_from_slice(&reply);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&both[..4096], 0).unwrap();
        f.write_all_at(&both[4096..], 0x2000).unwrap();
        assert_eq!(buf.take_reply().unwrap(), reply);
        f.write_all_at(&(1u64 << 20).to_le_bytes(), 0).unwrap();
        assert!(
            buf.take_reply().is_err(),
            "a length past the mailbox is refused"
        );
        drop(buf);
        assert!(!path.exists(), "the RAM file is removed on drop");
        // Frames outside the file or below RAM, or regions that do not add up, are refused.
        for pfns in [
            vec![0x3ffff, 0x40001],
            vec![0x40000 + 256, 0x40001],
            vec![0x40001],
        ] {
            let ram = RamFile::create(&dir, 1 << 20).unwrap();
            let pages = SharedPages {
                page: 4096,
                data_pages: 0,
                req_pages: 1,
                rep_pages: 1,
                pfns: pfns.clone(),
            };
            assert!(SharedBuffer::new(ram, &pages).is_none(), "{pfns:x?}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
