//! Levels 10 to 12: libdeflate's near-optimal parsing, for fewer bytes at
//! a higher CPU cost (5.5% smaller than `gzip -6` on a bench layer, but
//! only 0.15-0.2% smaller than kvpush's own level 6, which already stores
//! random pages and splits Huffman blocks by page class; `auto` picks them
//! only when even they outrun the link, see `level::LADDER`). Owns how
//! one block becomes complete gzip members;
//! knows nothing of the block-parallel driver ([`super::gzip`]) nor of
//! what the output is for.
//!
//! libdeflate has no preset dictionary and ends every call with a final
//! deflate block (BFINAL set, at a bit position only a full decode finds),
//! so its outputs cannot be joined into one deflate stream as igzip's and
//! zlib's flushed runs are. Each run is instead its own gzip member (RFC
//! 1952 allows any number; gzip, Go's and containerd's readers, Python's
//! and flate2's `MultiGzDecoder` read them all as one stream): 18 bytes
//! of header and trailer per member, a few per MiB, where independent
//! 256 KiB blocks lose only ~0.2% against one whole-file libdeflate pass.

use std::cell::RefCell;
use std::io;

use libdeflater::{CompressionLvl, Compressor};

use super::deflate::push_stored;
use super::entropy::page_runs;

/// The gzip header kvpush writes, before its one member (levels 1 to 9)
/// or each member (here): no name, mtime 0, OS unknown.
pub(super) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The levels served here (libdeflate's own 10 to 12).
pub(super) const MIN_LEVEL: u32 = 10;
pub const MAX_LEVEL: u32 = 12;

/// Uncompressed bytes per block at these levels: four times the other
/// levels', as no dictionary carries history from block to block (0.07%
/// to 0.25% smaller than 256 KiB on the bench's layers, same speed).
pub(super) const BLOCK_SIZE: usize = 1024 * 1024;

/// The vendored libdeflate's version (libdeflate-sys, pinned exactly in
/// Cargo.toml): its output, and so a layer's digest, may change with it,
/// so it is part of [`super::settings_id`].
pub(super) const LIBDEFLATE_VERSION: &str = "1.26";

thread_local! {
    /// One compressor per worker thread: level 12's tables are a few MiB,
    /// too many to allocate per block. libdeflate keeps no state between
    /// calls, so reuse cannot change the output.
    static COMPRESSOR: RefCell<Option<(u32, Compressor)>> = const { RefCell::new(None) };
}

/// Write `block` to `out` (cleared first) as complete gzip members: one
/// per deflated run of pages, led by the stored run before it if any, and
/// one for a stored run that ends the block. Random pages are stored as
/// at the other levels, costing libdeflate no effort.
pub(super) fn block_members(out: &mut Vec<u8>, block: &[u8], level: u32) -> io::Result<()> {
    out.clear();
    let mut from = 0;
    for (range, stored) in page_runs(block) {
        if stored {
            continue;
        }
        let start = out.len();
        out.extend_from_slice(&GZIP_HEADER);
        push_stored_unless_empty(out, &block[from..range.start]);
        libdeflate_run(out, &block[range.clone()], level)?;
        trailer(out, &block[from..range.end]);
        debug_assert!(out.len() > start);
        from = range.end;
    }
    if from < block.len() {
        out.extend_from_slice(&GZIP_HEADER);
        push_stored(out, &block[from..], true);
        trailer(out, &block[from..]);
    }
    Ok(())
}

/// Stored blocks, not final, for the random pages a member starts with.
fn push_stored_unless_empty(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        push_stored(out, data, false);
    }
}

/// A member's trailer: the CRC-32 and length of what it holds.
fn trailer(out: &mut Vec<u8>, data: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
}

/// Append `data` deflated by this thread's libdeflate at `level`; it ends
/// with a final block.
fn libdeflate_run(out: &mut Vec<u8>, data: &[u8], level: u32) -> io::Result<()> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let lvl = CompressionLvl::new(level as i32)
                .map_err(|e| io::Error::other(format!("libdeflate has no level {level}: {e:?}")))?;
            *slot = Some((level, Compressor::new(lvl)));
        }
        let (_, c) = slot.as_mut().expect("just set");
        let start = out.len();
        out.resize(start + c.deflate_compress_bound(data.len()), 0);
        let n = c.deflate_compress(data, &mut out[start..]).map_err(|e| {
            io::Error::other(format!(
                "libdeflate failed on {} bytes: {e:?}; please report this as a kvpush bug",
                data.len()
            ))
        })?;
        out.truncate(start + n);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::entropy::PIECE_SIZE;
    use crate::compress::tests::{pseudo_random, records, text};
    use std::io::Read;

    fn gunzip_all(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("valid multi-member gzip");
        out
    }

    #[test]
    fn the_pinned_libdeflate_is_the_one_named_in_the_settings() {
        let lock = include_str!("../../Cargo.lock");
        let entry = "name = \"libdeflate-sys\"\nversion = \"";
        let at = lock.find(entry).expect("libdeflate-sys in Cargo.lock");
        let version = &lock[at + entry.len()..];
        assert!(
            version.starts_with(&format!("{LIBDEFLATE_VERSION}.")),
            "libdeflate-sys changed: update LIBDEFLATE_VERSION ({})",
            &version[..10]
        );
    }

    #[test]
    fn every_mix_of_pages_is_members_that_decode_to_the_block() {
        let mut mixed = pseudo_random(3 * PIECE_SIZE + 5, 2);
        mixed.extend(text(5 * PIECE_SIZE));
        mixed.extend(pseudo_random(2 * PIECE_SIZE, 3));
        mixed.extend(records(4 * PIECE_SIZE, 4));
        mixed.extend(pseudo_random(PIECE_SIZE + 9, 5));
        let shapes: [&[u8]; 5] = [
            b"",
            b"x",
            &text(PIECE_SIZE * 7),
            &pseudo_random(9000, 1),
            &mixed,
        ];
        for block in shapes {
            for level in MIN_LEVEL..=MAX_LEVEL {
                let mut out = Vec::new();
                block_members(&mut out, block, level).unwrap();
                assert_eq!(gunzip_all(&out), block, "level {level}");
            }
        }
    }

    #[test]
    fn random_pages_are_stored_and_start_or_end_members() {
        let random = pseudo_random(5 * PIECE_SIZE, 7);
        let mut out = Vec::new();
        block_members(&mut out, &random, 12).unwrap();
        // One member of stored blocks: header, one 5-byte stored header
        // (under 64 KiB), the bytes, trailer.
        assert_eq!(out.len(), 10 + 5 + random.len() + 8);
        let mut block = text(3 * PIECE_SIZE);
        block.extend_from_slice(&random);
        block_members(&mut out, &block, 12).unwrap();
        assert!(
            out.len() < random.len() + 3 * PIECE_SIZE / 3,
            "{}",
            out.len()
        );
        assert_eq!(gunzip_all(&out), block);
    }
}
