//! Synthetic file contents with realistic compressibility.
//!
//! * [`ContentKind::Text`]: config files, docs, certificates: words from a
//!   small vocabulary, gzip shrinks it to roughly a quarter.
//! * [`ContentKind::Binary`]: executables and shared libraries: a mix of
//!   high-entropy pages, low-entropy "code" pages, zero pages and string
//!   tables; gzip shrinks it to roughly 60 %.
//! * [`ContentKind::Disk`]: VM disk images (qcow2/iso) inside container-disk
//!   images: almost all random, a few zero clusters; gzip gains nothing.

use crate::prng::Rng;

/// The flavour of a generated file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentKind {
    /// Text-like, very compressible.
    Text,
    /// Executable-like, moderately compressible.
    Binary,
    /// Disk-image-like, incompressible.
    Disk,
}

impl ContentKind {
    /// Rough gzip ratio (compressed / uncompressed), used to size layers when
    /// the workspace stores gzip layers.
    pub fn gzip_ratio(self) -> f64 {
        match self {
            ContentKind::Text => 0.3,
            ContentKind::Binary => 0.6,
            ContentKind::Disk => 0.95,
        }
    }
}

const BLOCK: usize = 64 * 1024;

const WORDS: [&[u8]; 64] = [
    b"the",
    b"kubevirt",
    b"virtual",
    b"machine",
    b"libvirt",
    b"qemu",
    b"domain",
    b"socket",
    b"config",
    b"enabled",
    b"true",
    b"false",
    b"path",
    b"/usr/lib64",
    b"/etc",
    b"version",
    b"license",
    b"copyright",
    b"apache",
    b"software",
    b"distributed",
    b"without",
    b"warranty",
    b"node",
    b"pod",
    b"namespace",
    b"container",
    b"image",
    b"volume",
    b"disk",
    b"network",
    b"interface",
    b"bridge",
    b"masquerade",
    b"migration",
    b"handler",
    b"controller",
    b"api",
    b"launcher",
    b"operator",
    b"=",
    b":",
    b"{",
    b"}",
    b"-",
    b"0",
    b"1",
    b"42",
    b"1024",
    b"error",
    b"warning",
    b"info",
    b"debug",
    b"return",
    b"function",
    b"string",
    b"int",
    b"struct",
    b"import",
    b"package",
    b"main",
    b"if",
    b"else",
    b"for",
];

const OPCODES: [u8; 16] = [
    0x48, 0x89, 0x8b, 0xe8, 0x00, 0xff, 0x0f, 0x85, 0x74, 0xc3, 0x83, 0xc4, 0x24, 0x45, 0x31, 0x41,
];

/// A deterministic, endless stream of bytes of one [`ContentKind`].
pub struct ContentGen {
    kind: ContentKind,
    rng: Rng,
    block: Vec<u8>,
    pos: usize,
    blocks: u64,
}

impl ContentGen {
    /// A stream of `kind` content determined by `seed`.
    pub fn new(kind: ContentKind, seed: u64) -> Self {
        ContentGen {
            kind,
            rng: Rng::new(seed),
            block: Vec::with_capacity(BLOCK + 64),
            pos: 0,
            blocks: 0,
        }
    }

    /// Fill `out` with the next bytes of the stream.
    pub fn fill(&mut self, mut out: &mut [u8]) {
        while !out.is_empty() {
            if self.pos >= self.block.len() {
                self.refill();
            }
            let n = out.len().min(self.block.len() - self.pos);
            out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
            self.pos += n;
            out = &mut out[n..];
        }
    }

    fn refill(&mut self) {
        self.block.clear();
        match self.kind {
            ContentKind::Text => text_block(&mut self.rng, &mut self.block, BLOCK),
            ContentKind::Binary => {
                for _ in 0..BLOCK / 4096 {
                    binary_page(&mut self.rng, &mut self.block);
                }
            }
            ContentKind::Disk => {
                let start = self.block.len();
                self.block.resize(BLOCK, 0);
                // One 64 KiB "cluster" in twelve is unallocated (zeros).
                if self.blocks == 0 || self.rng.below(12) != 0 {
                    self.rng.fill(&mut self.block[start..]);
                }
                if self.blocks == 0 {
                    // qcow2-looking header so a curious human recognises it.
                    self.block[..512].fill(0);
                    self.block[..8].copy_from_slice(b"QFI\xfb\x00\x00\x00\x03");
                }
            }
        }
        self.block.truncate(BLOCK);
        self.blocks += 1;
        self.pos = 0;
    }
}

fn text_block(rng: &mut Rng, out: &mut Vec<u8>, len: usize) {
    let mut since_newline = 0;
    while out.len() < len {
        let mut r = rng.next_u64();
        for _ in 0..10 {
            out.extend_from_slice(WORDS[(r & 63) as usize]);
            r >>= 6;
            since_newline += 1;
            if since_newline >= 6 + (r & 7) as usize {
                out.push(b'\n');
                since_newline = 0;
            } else {
                out.push(b' ');
            }
        }
    }
}

fn binary_page(rng: &mut Rng, out: &mut Vec<u8>) {
    let start = out.len();
    match rng.below(10) {
        // High-entropy data (constants, compressed sections).
        0..=3 => {
            out.resize(start + 4096, 0);
            rng.fill(&mut out[start..]);
        }
        // Machine code: few distinct byte values.
        4..=6 => {
            out.reserve(4096);
            for _ in 0..4096 / 16 {
                let r = rng.next_u64();
                for i in 0..16 {
                    out.push(OPCODES[((r >> (i * 4)) & 15) as usize]);
                }
            }
        }
        // Padding / bss.
        7 | 8 => out.resize(start + 4096, 0),
        // String table.
        _ => {
            text_block(rng, out, start + 4096);
            out.truncate(start + 4096);
            for b in &mut out[start..] {
                if *b == b' ' || *b == b'\n' {
                    *b = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz_ratio(kind: ContentKind) -> f64 {
        let mut data = vec![0u8; 1 << 20];
        ContentGen::new(kind, 3).fill(&mut data);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        enc.finish().unwrap().len() as f64 / data.len() as f64
    }

    #[test]
    fn compressibility_is_realistic() {
        let t = gz_ratio(ContentKind::Text);
        let b = gz_ratio(ContentKind::Binary);
        let d = gz_ratio(ContentKind::Disk);
        assert!(t < 0.45, "text ratio {t}");
        assert!(b > 0.4 && b < 0.8, "binary ratio {b}");
        assert!(d > 0.85, "disk ratio {d}");
    }

    #[test]
    fn stream_is_independent_of_read_sizes() {
        let mut a = vec![0u8; 200_000];
        ContentGen::new(ContentKind::Binary, 9).fill(&mut a);
        let mut b = vec![0u8; 200_000];
        let mut g = ContentGen::new(ContentKind::Binary, 9);
        for chunk in b.chunks_mut(777) {
            g.fill(chunk);
        }
        assert_eq!(a, b);
    }
}
