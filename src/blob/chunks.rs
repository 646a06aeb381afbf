//! Upload bodies in chunks of [`UPLOAD_CHUNK`] bytes, held in buffers of
//! the [`buffers`] pool that go back to it once the HTTP client is done with
//! them. Knows nothing of registries or of how a blob was made.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use futures::Stream;

use crate::buffers;

use super::range::FileRange;

/// Largest upload chunk: read from a file, or filled by a streamed blob's
/// writer.
pub const UPLOAD_CHUNK: usize = 256 * 1024;
/// Upload bytes in a buffer that goes back to the [`buffers`] pool once
/// the HTTP client has sent and dropped it.
pub(super) struct PooledChunk {
    pub(super) buf: Vec<u8>,
    pub(super) len: usize,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.buf));
    }
}

/// `len` (at most [`UPLOAD_CHUNK`]) bytes of `file` from `offset`, read
/// into a pooled buffer.
pub(super) fn read_chunk(file: &File, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    let mut buf = buffers::take();
    buf.resize(UPLOAD_CHUNK, 0);
    let mut chunk = PooledChunk { buf, len };
    file.read_exact_at(&mut chunk.buf[..len], offset)?;
    Ok(bytes::Bytes::from_owner(chunk))
}

/// The bytes of `range` of the already opened `file`, in pooled chunks of
/// [`UPLOAD_CHUNK`]: an upload body.
pub fn range_chunks(
    file: File,
    range: &FileRange,
) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    let (start, len) = (range.offset, range.len);
    futures::stream::unfold(Some((file, 0u64)), move |state| async move {
        let (file, done) = state?;
        if done >= len {
            return None;
        }
        let n = (len - done).min(UPLOAD_CHUNK as u64) as usize;
        Some(match read_chunk(&file, start + done, n) {
            Ok(chunk) => (Ok(chunk), Some((file, done + n as u64))),
            Err(e) => (Err(e), None),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::range::tests::range_of;

    #[test]
    fn a_range_streams_in_pooled_chunks_and_fails_on_a_short_file() {
        use futures::TryStreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..(2 * UPLOAD_CHUNK + 1000) as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let other: Vec<u8> = content
            .iter()
            .rev()
            .take(UPLOAD_CHUNK + 7)
            .copied()
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // The second blob is read into the buffers the first one gave
        // back: no old byte may show in its chunks.
        for (name, bytes, lens) in [
            ("blob", &content, &[UPLOAD_CHUNK, UPLOAD_CHUNK, 1000][..]),
            ("other", &other, &[UPLOAD_CHUNK, 7][..]),
        ] {
            let range = range_of(bytes, dir.path(), name);
            let file = File::open(&range.path).unwrap();
            let chunks: Vec<bytes::Bytes> = runtime
                .block_on(range_chunks(file, &range).try_collect())
                .unwrap();
            let got: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            assert_eq!(got, lens);
            assert_eq!(&chunks.concat(), bytes);
        }
        let range = range_of(&content, dir.path(), "blob");
        assert!(buffers::kept() <= buffers::KEPT);
        let too_long = FileRange {
            len: range.len + 10,
            ..range.clone()
        };
        let file = File::open(&range.path).unwrap();
        let got: io::Result<Vec<bytes::Bytes>> =
            runtime.block_on(range_chunks(file, &too_long).try_collect());
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
