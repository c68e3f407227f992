//! Guest memory: sparse 4 KiB pages. Code is fetched only from pages a program mapped; data
//! pages appear on first access, zero-filled.

use std::collections::HashMap;

const PAGE: u64 = 4096;

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

    /// Read `buf.len()` bytes (unmapped bytes read as zero).
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr.wrapping_add(i as u64);
            *b = self
                .pages
                .get(&(a / PAGE))
                .map_or(0, |p| p[(a % PAGE) as usize]);
        }
    }

    /// Write bytes.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = addr.wrapping_add(i as u64);
            self.page_mut(a)[(a % PAGE) as usize] = *b;
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
        for (i, w) in words.iter().enumerate() {
            let a = addr + 4 * i as u64;
            self.write(a, &w.to_le_bytes());
            self.code_pages.insert(a / PAGE);
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
}
