//! HTTP/1.1 `Transfer-Encoding: chunked` bodies, decoded: the one decoder
//! behind the fault proxy and the relay, for requests and answers alike,
//! and the sized read that a chunk (or a `Content-Length` body) is.

use std::io::{self, BufRead};

/// Decode a chunked body from `r`, passing its data to `sink` piece by
/// piece as it arrives (trailers are read and dropped).
pub(crate) fn read_chunked(
    r: &mut impl BufRead,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    loop {
        let line = read_line(r)?;
        let size = u64::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            while !read_line(r)?.is_empty() {}
            return Ok(());
        }
        read_sized(r, size, &mut sink)?;
        if !read_line(r)?.is_empty() {
            return Err(bad("chunk data longer than its size"));
        }
    }
}

/// Pass the next `n` bytes of `r` to `sink`, piece by piece as they
/// arrive; an error if `r` ends before.
pub(crate) fn read_sized(
    r: &mut impl BufRead,
    n: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let got = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        sink(&buf[..got])?;
        r.consume(got);
        left -= got as u64;
    }
    Ok(())
}

/// Decode a whole chunked body from `r`.
pub(crate) fn read_body(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    read_chunked(r, |b| {
        body.extend_from_slice(b);
        Ok(())
    })?;
    Ok(body)
}

/// Decode a whole chunked body held in memory.
pub(crate) fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    read_body(&mut data)
}

/// One line, without its CRLF; an error at the end of the input.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn chunked_bodies_decode_and_bad_ones_are_errors() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: t\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nhel").is_err(), "cut in a chunk");
        assert!(
            dechunk(b"2\r\nhello\r\n0\r\n\r\n").is_err(),
            "longer than its size"
        );
        assert!(dechunk(b"5\r\nhello\r\n").is_err(), "no last chunk");
    }
}
