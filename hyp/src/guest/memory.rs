//! Guest memory: sparse 4 KiB pages. Code is fetched only from pages a program mapped; data
//! pages appear on first access, zero-filled.

use std::collections::HashMap;

const PAGE: u64 = 4096;

/// The offset of `addr` in its page and how many of `len` bytes from it stay in that page.
fn page_span(addr: u64, len: usize) -> (usize, usize) {
    let off = (addr % PAGE) as usize;
    (off, len.min(PAGE as usize - off))
}

/// A guest's physical (= virtual, the model has no MMU) memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestMemory {
    pages: HashMap<u64, Box<[u8; PAGE as usize]>>,
    code_pages: std::collections::BTreeSet<u64>,
}

impl GuestMemory {
    /// Empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    fn page_mut(&mut self, addr: u64) -> &mut [u8; PAGE as usize] {
        self.pages
            .entry(addr / PAGE)
            .or_insert_with(|| Box::new([0; PAGE as usize]))
    }

    /// Read `buf.len()` bytes (unmapped bytes read as zero), a page at a time.
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = addr.wrapping_add(done as u64);
            let (off, n) = page_span(a, buf.len() - done);
            let out = &mut buf[done..done + n];
            match self.pages.get(&(a / PAGE)) {
                Some(p) => out.copy_from_slice(&p[off..off + n]),
                None => out.fill(0),
            }
            done += n;
        }
    }

    /// Write bytes, a page at a time.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = addr.wrapping_add(done as u64);
            let (off, n) = page_span(a, data.len() - done);
            self.page_mut(a)[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// Read a little-endian value of `size` bytes (1..=8).
    pub fn read_uint(&self, addr: u64, size: usize) -> u64 {
        let mut b = [0u8; 8];
        self.read(addr, &mut b[..size.min(8)]);
        u64::from_le_bytes(b)
    }

    /// Write a little-endian value of `size` bytes.
    pub fn write_uint(&mut self, addr: u64, size: usize, v: u64) {
        self.write(addr, &v.to_le_bytes()[..size.min(8)]);
    }

    /// Place instructions at `addr` and mark their pages executable.
    pub fn load_code(&mut self, addr: u64, words: &[u32]) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(addr, &bytes);
        let pages = (addr % PAGE + bytes.len() as u64).div_ceil(PAGE);
        for i in 0..pages {
            self.code_pages
                .insert((addr / PAGE).wrapping_add(i) % (u64::MAX / PAGE + 1));
        }
    }

    /// Fetch the instruction at `pc`, if `pc` is on a code page.
    pub fn fetch(&self, pc: u64) -> Option<u32> {
        if !pc.is_multiple_of(4) || !self.code_pages.contains(&(pc / PAGE)) {
            return None;
        }
        Some(self.read_uint(pc, 4) as u32)
    }

    /// Whether `addr` is on a code page.
    pub fn is_code(&self, addr: u64) -> bool {
        self.code_pages.contains(&(addr / PAGE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_data() {
        let mut m = GuestMemory::new();
        m.load_code(0x1000, &[0xd503_201f, 0xd420_0000]);
        assert_eq!(m.fetch(0x1004), Some(0xd420_0000));
        assert_eq!(m.fetch(0x2000), None);
        assert_eq!(m.fetch(0x1002), None);
        m.write_uint(0x8ffe, 4, 0xaabb_ccdd);
        assert_eq!(m.read_uint(0x8ffe, 4), 0xaabb_ccdd);
        assert_eq!(m.read_uint(0x9000, 1), 0xbb);
        assert_eq!(m.read_uint(0x5000, 8), 0);
    }

    #[test]
    fn writes_and_reads_across_pages() {
        let mut m = GuestMemory::new();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        m.write(0x1ff0, &data);
        let mut back = vec![0xaa; data.len() + 16];
        m.read(0x1ff0, &mut back);
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(
            back[data.len()..].iter().all(|&b| b == 0),
            "unwritten bytes read 0"
        );
        let words = [0xd503_201f_u32; 1030]; // 4120 bytes from 0x3ff8: pages 3, 4 and 5
        m.load_code(0x3ff8, &words);
        assert!(m.is_code(0x3ff8) && m.is_code(0x4000) && m.is_code(0x5010));
        assert!(!m.is_code(0x6000) && !m.is_code(0x2000));
        assert_eq!(m.fetch(0x500c), Some(0xd503_201f));
        assert_eq!(m.fetch(0x5010), Some(0), "the rest of a code page reads 0");
        // Code that wraps past the top of the address space marks both ends' pages.
        let mut w = GuestMemory::new();
        w.load_code(u64::MAX - 3, &[0xd503_201f, 0xd420_0000]);
        assert!(w.is_code(u64::MAX - 3) && w.is_code(0));
        assert_eq!(w.fetch(0), Some(0xd420_0000));
    }
}
