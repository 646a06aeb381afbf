//! One process-wide pool of the large byte buffers that pass between the
//! compressor and the uploads: compressor input blocks and output pieces,
//! upload chunks (a few hundred KiB each).
//!
//! A fresh buffer that large is a fresh mapping (main.rs sets the mmap
//! threshold at 128 KiB), paid for in page faults and zeroing: upload
//! chunks that were not reused cost ~3% of a cold push's CPU, and the
//! compressor's per-layer buffers caused 90% of its page faults. A buffer
//! comes back with its length and bytes as they were left, so a reader
//! that resizes it zeroes only what it grows by.

use std::sync::Mutex;

/// Buffers the process keeps for reuse: at most about 16 MiB.
pub const KEPT: usize = 64;

static POOL: Pool = Pool::new(KEPT);

/// A buffer from the pool, of any length and contents, or a new empty one.
pub fn take() -> Vec<u8> {
    POOL.take()
}

/// Give `buf` back for reuse, if the pool has room and it is worth keeping.
pub fn give(buf: Vec<u8>) {
    POOL.give(buf)
}

/// Buffers in the pool now.
#[cfg(test)]
pub fn kept() -> usize {
    POOL.len()
}

/// At most `kept` buffers, last given first taken.
struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
    kept: usize,
}

impl Pool {
    const fn new(kept: usize) -> Pool {
        Pool {
            bufs: Mutex::new(Vec::new()),
            kept,
        }
    }

    fn take(&self) -> Vec<u8> {
        self.bufs
            .lock()
            .ok()
            .and_then(|mut bufs| bufs.pop())
            .unwrap_or_default()
    }

    fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        if let Ok(mut bufs) = self.bufs.lock() {
            if bufs.len() < self.kept {
                bufs.push(buf);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.bufs.lock().map(|bufs| bufs.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;

    #[test]
    fn a_buffer_given_back_is_taken_again_as_it_was() {
        let pool = Pool::new(2);
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(b"left over");
        let ptr = buf.as_ptr();
        pool.give(buf);
        let again = pool.take();
        assert_eq!((again.as_ptr(), &again[..]), (ptr, &b"left over"[..]));
        assert_eq!(
            pool.take().capacity(),
            0,
            "an empty pool gives a new buffer"
        );
    }

    #[test]
    fn the_pool_keeps_at_most_its_limit_and_no_empty_buffers() {
        let pool = Pool::new(2);
        pool.give(Vec::new());
        assert_eq!(pool.len(), 0);
        for _ in 0..3 {
            pool.give(Vec::with_capacity(4096));
        }
        assert_eq!(pool.len(), 2);
    }
}
