//! `sha256:<hex>` digests: of bytes in memory, and of everything a reader
//! yields. Knows nothing of layers, gzip or where the bytes come from.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// True when `s` is a well-formed `sha256:<64 lowercase hex>` digest.
pub fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Writer adapter that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
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

/// Hash everything `reader` yields; returns (digest, byte count).
pub(super) fn hash_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut sink = HashingWriter {
        inner: io::sink(),
        hasher: Sha256::new(),
        count: 0,
    };
    io::copy(&mut reader, &mut sink)?;
    Ok((
        format!("sha256:{}", hex::encode(sink.hasher.finalize())),
        sink.count,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_syntax() {
        assert!(is_sha256_digest(&sha256_digest(b"x")));
        assert!(!is_sha256_digest("sha256:abc"));
        assert!(!is_sha256_digest("md5:0123"));
    }
}
