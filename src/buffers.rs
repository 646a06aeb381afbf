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

/// Buffers kept for reuse: at most about 16 MiB.
pub const KEPT: usize = 64;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer from the pool, of any length and contents, or a new empty one.
pub fn take() -> Vec<u8> {
    POOL.lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_default()
}

/// Give `buf` back for reuse, if the pool has room and it is worth keeping.
pub fn give(buf: Vec<u8>) {
    if buf.capacity() == 0 {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < KEPT {
            pool.push(buf);
        }
    }
}

/// Buffers in the pool now.
#[cfg(test)]
pub fn kept() -> usize {
    POOL.lock().map(|pool| pool.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_buffer_given_back_is_taken_again_as_it_was() {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(b"left over");
        let ptr = buf.as_ptr();
        super::give(buf);
        // Other tests share the pool: look for this buffer among a few.
        let taken: Vec<Vec<u8>> = (0..super::KEPT).map(|_| super::take()).collect();
        let again = taken.iter().find(|b| b.as_ptr() == ptr).expect("reused");
        assert_eq!(&again[..], b"left over");
        assert!(super::kept() <= super::KEPT);
        taken.into_iter().for_each(super::give);
        assert!(super::kept() <= super::KEPT);
    }
}
