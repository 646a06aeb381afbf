//! One block deflated on its own: stored or deflated page runs (see
//! [`super::entropy`]), each deflated run primed with the block's
//! dictionary by this thread's engine, igzip ([`super::isal`]) or zlib-rs,
//! so that its bytes depend on the input and level only. Knows nothing of
//! gzip framing, threads or where blocks come from.

use std::io;

use flate2::{Compress, Compression, FlushCompress, Status};

use super::entropy::{page_class, page_runs, PIECE_SIZE};
use super::isal;

/// Deflate's window: how much history a block may refer back to.
pub(super) const DICT_SIZE: usize = 32 * 1024;
/// Largest stored (uncompressed) deflate block.
const STORED_MAX: usize = 65_535;

/// Append `data` as stored deflate blocks (the stream is byte-aligned here).
pub(super) fn push_stored(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let mut chunks = data.chunks(STORED_MAX).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let final_bit = last && chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(final_bit));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// A deflate engine for one [`level`](super::compress): igzip for levels 1 to 3
/// (fast), zlib-rs for 4 to 9 (smaller output, several times the CPU).
enum Deflater {
    Isal(isal::IsalDeflater),
    Zlib(Compress),
}

/// The highest level served by igzip.
pub(super) const ISAL_MAX_LEVEL: u32 = 3;

impl Deflater {
    fn new(level: u32) -> Self {
        if level <= ISAL_MAX_LEVEL {
            Deflater::Isal(isal::IsalDeflater::new(level.max(1)))
        } else {
            Deflater::Zlib(Compress::new(Compression::new(level), false))
        }
    }

    /// Deflate `data` primed with `dict`, appending to `out`. Not `last`:
    /// ends byte-aligned; `last`: ends the stream. Falls back to stored
    /// blocks when deflate did not shrink it. zlib (the strong levels)
    /// ends its Huffman block wherever the page class changes (see
    /// [`class_splits`]); igzip keeps one stream.
    fn run(&mut self, out: &mut Vec<u8>, dict: &[u8], data: &[u8], last: bool) -> io::Result<()> {
        let start = out.len();
        match self {
            Deflater::Isal(z) => z.run(out, dict, data, last)?,
            Deflater::Zlib(z) => zlib_run(z, out, dict, data, &class_splits(data), last)?,
        }
        // Deflating made it no smaller: storing is as good and decodes faster.
        if out.len() - start >= data.len() {
            out.truncate(start);
            push_stored(out, data, last);
        }
        Ok(())
    }
}

thread_local! {
    /// One deflater per worker thread, reset for every run: a fresh one
    /// is a few hundred KiB of tables, and allocating one per run cost
    /// more than deflating a 4 KiB run (the mmap threshold set in main.rs
    /// hands those tables back to the system on every free).
    static DEFLATER: std::cell::RefCell<Option<(u32, Deflater)>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's deflater for `level` (a zlib one with its
/// window wiped, see [`wipe_window`]).
fn with_deflater<R>(level: u32, f: impl FnOnce(&mut Deflater) -> io::Result<R>) -> io::Result<R> {
    DEFLATER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, Deflater::new(level)));
        }
        let (_, z) = slot.as_mut().expect("just set");
        if let Deflater::Zlib(z) = z {
            wipe_window(z)?;
        }
        f(z)
    })
}

/// Fill a reused zlib deflater's whole window with zeros.
///
/// A reset keeps the window's bytes, and near the end of its input the
/// matcher compares a few hundred bytes past it: leftovers of whatever
/// block the thread deflated before would change which of two equal
/// matches it keeps, so the output (and the blob digest) would depend on
/// thread scheduling. Deflating a window's worth of zeros overwrites them
/// all for a few microseconds; every run of the block after that sees only
/// the block's own bytes.
fn wipe_window(z: &mut Compress) -> io::Result<()> {
    static ZEROS: [u8; 2 * DICT_SIZE + 4096] = [0; 2 * DICT_SIZE + 4096];
    z.reset();
    // Ended like any run (a stream left open would leak into the next).
    let mut sink = Vec::with_capacity(4096);
    let mut input = &ZEROS[..];
    loop {
        sink.clear();
        let before = z.total_in();
        let status = z
            .compress_vec(input, &mut sink, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        input = &input[(z.total_in() - before) as usize..];
        if status == Status::StreamEnd {
            break;
        }
    }
    // No reset here: every run starts with one (zlib_run).
    Ok(())
}

/// Where the page class ([`page_class`]) changes inside a deflated run:
/// offsets at which the strong settings end one Huffman block and start
/// another. A run mixing machine code, string tables and zero pages under
/// one Huffman table spends bits on each for the others' symbols; a sync
/// flush costs 5 bytes and a new table ~100, far less than it saves there
/// (-1.4% to -2.5% on the bench's executable-like layers).
fn class_splits(data: &[u8]) -> Vec<usize> {
    let classes: Vec<u32> = data.chunks(PIECE_SIZE).map(page_class).collect();
    (1..classes.len())
        .filter(|&i| classes[i] != classes[i - 1])
        .map(|i| i * PIECE_SIZE)
        .collect()
}

/// Deflate `data` with zlib `z` (reset here) primed with `dict`, appending
/// to `out`, with a sync flush (a new Huffman block, same window) at each
/// offset of `splits`. Not `last`: ends with a sync flush, byte-aligned;
/// `last`: ends the stream.
fn zlib_run(
    z: &mut Compress,
    out: &mut Vec<u8>,
    dict: &[u8],
    data: &[u8],
    splits: &[usize],
    last: bool,
) -> io::Result<()> {
    z.reset();
    if !dict.is_empty() {
        z.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut from = 0;
    for &at in splits {
        zlib_segment(z, out, &data[from..at], false)?;
        from = at;
    }
    zlib_segment(z, out, &data[from..], last)
}

/// Feed `data` to `z` and flush: sync (byte-aligned, window kept), or, when
/// `last`, finish the stream.
fn zlib_segment(z: &mut Compress, out: &mut Vec<u8>, data: &[u8], last: bool) -> io::Result<()> {
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let before = z.total_in();
        let status = z
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        input = &input[(z.total_in() - before) as usize..];
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete once all input is taken and the
            // output buffer was not filled up.
            Status::Ok | Status::BufError => {
                !last && input.is_empty() && out.len() < out.capacity()
            }
        };
        if done {
            break;
        }
    }
    Ok(())
}

/// Deflate one block. Non-final blocks end byte-aligned, so blocks can be
/// concatenated; the final one ends the stream.
///
/// The block is judged in [`PIECE_SIZE`] pieces: runs of pieces that look
/// random are stored, the others deflated, each deflated run by the
/// thread's compressor, reset, so back-references always see the same
/// history the decompressor has. A piece is the size of a page, so random
/// pages inside an executable (packed data, compressed sections) or the
/// random clusters of a disk image cost no deflate effort, and do not
/// spoil the Huffman codes of the compressible code around them.
pub(super) fn deflate_block(
    out: &mut Vec<u8>,
    dict: &[u8],
    block: &[u8],
    last: bool,
    level: u32,
) -> io::Result<()> {
    out.clear();
    let runs = page_runs(block);
    if let [(_, true)] = runs[..] {
        push_stored(out, block, last);
        return Ok(());
    }
    with_deflater(level, |z| {
        let count = runs.len();
        for (i, (range, stored)) in runs.into_iter().enumerate() {
            let last_run = last && i + 1 == count;
            let run = &block[range.clone()];
            if stored {
                push_stored(out, run, last_run);
            } else {
                // History: the previous block's tail for the block's first
                // run. A later run follows a stored one, whose random bytes
                // would cost more to prime the compressor with than they
                // would ever match.
                let history = if range.start == 0 { dict } else { &[][..] };
                z.run(out, history, run, last_run)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::tests::{pseudo_random, records};
    use crate::compress::BLOCK_SIZE;

    #[test]
    fn output_does_not_depend_on_what_a_thread_compressed_before() {
        // Priming a compressor with a block's dictionary hashes its last
        // strings together with the window bytes that follow, left over
        // from the thread's previous block: without wiping the window,
        // these blocks came out differently after other input (at level
        // 6 here; at level 2 too on real layers), so a layer's digest
        // depended on which thread compressed which block.
        for seed in 0..10 {
            let dict = records(DICT_SIZE, seed);
            let block = records(2 * DICT_SIZE, seed + 100);
            let other: Vec<u8> = records(70_000, seed + 200)
                .iter()
                .map(|b| b ^ 0x5a)
                .collect();
            for level in [1, 2, 3, 6] {
                let (dict, block, other) = (dict.clone(), block.clone(), other.clone());
                std::thread::spawn(move || {
                    let mut fresh = Vec::new();
                    deflate_block(&mut fresh, &dict, &block, false, level).unwrap();
                    let mut scratch = Vec::new();
                    deflate_block(&mut scratch, &[], &other, false, level).unwrap();
                    let mut after = Vec::new();
                    deflate_block(&mut after, &dict, &block, false, level).unwrap();
                    assert!(
                        fresh == after,
                        "seed {seed} level {level}: output changed after other input"
                    );
                })
                .join()
                .unwrap();
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_the_room_of_the_buffer_it_goes_into() {
        // Six bits of entropy per byte: it deflates to about 3/4, more
        // than a quarter of the block, so a small buffer would fill up.
        // (igzip decides by the room it is given: its output once changed
        // with the capacity of pooled buffers.)
        let data: Vec<u8> = pseudo_random(BLOCK_SIZE, 5)
            .iter()
            .map(|b| b & 0x3f)
            .collect();
        for level in 1..=9 {
            let outs: Vec<Vec<u8>> = [0, BLOCK_SIZE / 4, 4 << 20]
                .into_iter()
                .map(|capacity| {
                    let mut out = Vec::with_capacity(capacity);
                    deflate_block(&mut out, &[], &data, false, level).unwrap();
                    out
                })
                .collect();
            assert!(outs.windows(2).all(|w| w[0] == w[1]), "level {level}");
        }
    }
}
