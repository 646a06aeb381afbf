//! Minimal streaming USTAR writer (what Go's `archive/tar` emits for short
//! names) and a hashing/counting writer.

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// Entry type of a tar header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file (`'0'`).
    File,
    /// Directory (`'5'`).
    Dir,
}

/// Metadata of one tar entry. mtime is always 0 (Bazel is reproducible).
#[derive(Clone, Debug)]
pub struct EntryMeta<'a> {
    /// Path inside the archive (directories should end in `/`).
    pub path: &'a str,
    /// Payload size (0 for directories).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid and gid.
    pub uid: u32,
    /// File or directory.
    pub kind: EntryKind,
}

impl<'a> EntryMeta<'a> {
    /// A regular 0644 root-owned file, as go-containerregistry writes them.
    pub fn file(path: &'a str, size: u64) -> Self {
        EntryMeta {
            path,
            size,
            mode: 0o644,
            uid: 0,
            kind: EntryKind::File,
        }
    }
}

fn octal(field: &mut [u8], value: u64) {
    // Width-1 octal digits, NUL terminated, zero padded.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    assert!(s.len() <= digits, "value {value} does not fit a tar field");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// Encode a 512-byte USTAR header.
pub fn header(meta: &EntryMeta<'_>) -> io::Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let path = meta.path.as_bytes();
    if path.len() <= 100 {
        h[..path.len()].copy_from_slice(path);
    } else {
        // Split into prefix (155) / name (100) at a slash.
        let split = path
            .iter()
            .enumerate()
            .filter(|(i, &b)| b == b'/' && *i <= 155 && path.len() - i - 1 <= 100 && *i > 0)
            .map(|(i, _)| i)
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("tar path too long: {}", meta.path),
                )
            })?;
        h[..path.len() - split - 1].copy_from_slice(&path[split + 1..]);
        h[345..345 + split].copy_from_slice(&path[..split]);
    }
    octal(&mut h[100..108], u64::from(meta.mode));
    octal(&mut h[108..116], u64::from(meta.uid));
    octal(&mut h[116..124], u64::from(meta.uid));
    octal(&mut h[124..136], meta.size);
    octal(&mut h[136..148], 0);
    h[156] = match meta.kind {
        EntryKind::File => b'0',
        EntryKind::Dir => b'5',
    };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// Zero padding needed after `size` payload bytes.
pub fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Write one complete entry from a byte slice.
/// Write a directory entry (mode 0755) for every parent directory of
/// `paths`, sorted, as a layer lists them before its files (`./` itself
/// is left out).
pub fn write_parent_dirs<'a, W: Write>(
    w: &mut W,
    paths: impl IntoIterator<Item = &'a str>,
) -> io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for path in paths {
        let parts: Vec<&str> = path.split('/').collect();
        let mut acc = String::new();
        for part in &parts[..parts.len() - 1] {
            acc.push_str(part);
            acc.push('/');
            if acc != "./" {
                dirs.insert(acc.clone());
            }
        }
    }
    for d in &dirs {
        let meta = EntryMeta {
            path: d,
            size: 0,
            mode: 0o755,
            uid: 0,
            kind: EntryKind::Dir,
        };
        write_entry(w, &meta, &[])?;
    }
    Ok(())
}

pub fn write_entry<W: Write>(w: &mut W, meta: &EntryMeta<'_>, data: &[u8]) -> io::Result<()> {
    debug_assert_eq!(meta.size, data.len() as u64);
    w.write_all(&header(meta)?)?;
    w.write_all(data)?;
    w.write_all(&[0u8; 512][..padding(meta.size)])
}

/// Write one complete entry whose payload is read from `r` (exactly `size` bytes).
pub fn write_entry_from<W: Write, R: Read>(
    w: &mut W,
    meta: &EntryMeta<'_>,
    r: &mut R,
) -> io::Result<()> {
    w.write_all(&header(meta)?)?;
    let n = io::copy(&mut r.take(meta.size), w)?;
    if n != meta.size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{}: expected {} bytes, got {n}", meta.path, meta.size),
        ));
    }
    w.write_all(&[0u8; 512][..padding(meta.size)])
}

/// End-of-archive marker: two zero blocks.
pub fn write_trailer<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; 1024])
}

/// Writer adaptor computing the sha256 and byte count of everything written.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Finish: `(inner writer, sha256 hex, byte count)`.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_crate_reads_our_headers() {
        let mut buf = Vec::new();
        write_entry(
            &mut buf,
            &EntryMeta {
                path: "./usr/",
                size: 0,
                mode: 0o755,
                uid: 0,
                kind: EntryKind::Dir,
            },
            &[],
        )
        .unwrap();
        let long = format!("{}/{}", "d".repeat(120), "file.txt");
        write_entry(&mut buf, &EntryMeta::file(&long, 3), b"abc").unwrap();
        write_entry(&mut buf, &EntryMeta::file("x/layer.tar", 5), b"hello").unwrap();
        write_trailer(&mut buf).unwrap();
        let mut ar = tar::Archive::new(&buf[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            seen.push((
                p,
                s,
                e.header().mode().unwrap(),
                e.header().mtime().unwrap(),
            ));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].0, "./usr/");
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[1].1, "abc");
        assert_eq!(seen[2], ("x/layer.tar".into(), "hello".into(), 0o644, 0));
    }
}
