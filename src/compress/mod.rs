//! Parallel, deterministic gzip, as pigz does it: the input is cut into
//! fixed-size blocks, each deflated on its own core with the previous 32 KiB
//! of input as its dictionary, and the byte-aligned pieces are concatenated
//! into one ordinary gzip member (one header, one CRC-32, one trailer).
//!
//! Pages that will not shrink (disk images, already-compressed payloads)
//! are spotted by their byte entropy and written as stored deflate blocks,
//! spending no deflate effort on them, as klauspost/compress does.
//!
//! Deflating is igzip's (ISA-L, [`isal`]) for levels 1 to 3 and zlib-rs's
//! for 4 to 9. The output depends only on the input, the level,
//! [`BLOCK_SIZE`] and, for igzip, the class of CPU (see [`settings_id`]),
//! never on the number of threads or on timing. [`settings_id`] names these
//! parameters for the persistent digest cache.

use std::io::{self, Read, Write};

use flate2::{Compress, Compression, FlushCompress, Status};
use rayon::prelude::*;

use crate::buffers;
use crate::sha256_pair::Sha256Pair;

mod isal;

/// Uncompressed bytes per independently deflated block.
pub const BLOCK_SIZE: usize = 256 * 1024;
/// Unit of the store-or-deflate decision inside a block: a page. (32 KiB
/// pieces, the first choice, mixed random pages into deflated runs: the
/// bench's executables took 3x the CPU for a 9% larger output.)
const PIECE_SIZE: usize = 4 * 1024;
/// Deflate's window: how much history a block may refer back to.
const DICT_SIZE: usize = 32 * 1024;
/// Largest stored (uncompressed) deflate block.
const STORED_MAX: usize = 65_535;
/// Above this many bits of (collision) entropy per byte a page is stored,
/// not deflated.
const STORE_ENTROPY_BITS: f64 = 7.9;

/// Identifies the compressor's output format; part of every cache key
/// (through [`settings_id`]), so a change here must change this string.
pub const SETTINGS_ID: &str = "pgz4-256k-4k";

/// The cache key's name for what `level` produces on this machine.
///
/// igzip picks its code at run time by CPU features, and its paths are not
/// all the same algorithm (level 3 matches lazily from AVX2 on, greedily
/// below), so its output, and a layer's digest, is only the same on
/// machines of one class. A cache shared between CI runners of different
/// CPUs then keeps one entry per class instead of promising a digest the
/// other class would not produce. zlib-rs output does not depend on them.
pub fn settings_id(level: u32) -> String {
    if level <= ISAL_MAX_LEVEL {
        format!("{SETTINGS_ID}-l{level}-isal-{}", isal::cpu_class())
    } else {
        format!("{SETTINGS_ID}-l{level}")
    }
}

/// The gzip header kvpush writes: no name, mtime 0, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Collision (Renyi order 2) entropy in bits per byte of `n` bytes that
/// hold `pairs` ordered pairs of equal bytes: `-log2(p)`, where `p`, the
/// chance that two bytes drawn apart are equal, is estimated without bias
/// as `pairs / (n * (n - 1))`. Random bytes give 8 bits (give or take 0.03
/// for 1 KiB), whatever the sample size; it is never above Shannon's
/// entropy, so no compressible page reads as random.
fn entropy_of(pairs: u64, n: u64) -> f64 {
    if pairs == 0 {
        // No two bytes alike: as random as such a sample can show.
        return 8.0;
    }
    -(pairs as f64 / (n * (n - 1)) as f64).log2()
}

/// Ordered pairs of equal bytes among the bytes of `parts` taken together
/// (`sum(c * (c - 1))` over the byte counts `c`), counted as the bytes come:
/// each byte pairs with the ones of its value before it. Counting stops
/// once `stop` pairs are reached, which a compressible page does within a
/// few hundred bytes: more bytes only add pairs, so the page's verdict is
/// already known (zeros: 128 bytes of 1024).
fn equal_pairs(parts: &[&[u8]], stop: u64) -> u64 {
    let mut counts = [0u32; 256];
    // Unordered: each counted once, doubled at the end.
    let mut pairs = 0u64;
    for part in parts {
        for chunk in part.chunks(64) {
            for &b in chunk {
                let count = &mut counts[usize::from(b)];
                pairs += u64::from(*count);
                *count += 1;
            }
            if 2 * pairs >= stop {
                return 2 * pairs;
            }
        }
    }
    2 * pairs
}

/// Entropy of the bytes of `parts` taken together, counted in full.
#[cfg(test)]
fn entropy_bits(parts: &[&[u8]]) -> f64 {
    let n: u64 = parts.iter().map(|p| p.len() as u64).sum();
    if n < 2 {
        return 0.0;
    }
    entropy_of(equal_pairs(parts, u64::MAX), n)
}

/// The fewest pairs of equal bytes that make `n` bytes read as not random
/// ([`entropy_of`] at most [`STORE_ENTROPY_BITS`]), found with that very
/// function so the early stop of [`equal_pairs`] changes no verdict.
fn random_pairs_limit(n: u64) -> u64 {
    let reads_random = |pairs| entropy_of(pairs, n) > STORE_ENTROPY_BITS;
    let mut limit = ((n * (n - 1)) as f64 * (-STORE_ENTROPY_BITS).exp2()) as u64;
    while reads_random(limit) {
        limit += 1;
    }
    while limit > 0 && !reads_random(limit - 1) {
        limit -= 1;
    }
    limit
}

/// Contiguous bytes in each sample [`looks_random`] takes of a piece.
const SAMPLE_LEN: usize = 256;
/// Samples per piece.
const SAMPLES: usize = 4;

/// Whether a piece will not shrink: its collision entropy, from
/// [`SAMPLES`] samples of [`SAMPLE_LEN`] bytes spread over it, is above
/// [`STORE_ENTROPY_BITS`]. A quarter of the bytes costs a quarter of the
/// time of counting them all (it was 8% of a cold push's CPU), and
/// contiguous samples cannot be fooled by a stride in the data (every
/// fourth byte of an array of small integers looks random).
fn looks_random(piece: &[u8]) -> bool {
    /// The limit for a whole piece's samples, computed once.
    static SAMPLED_LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let step = piece.len() / SAMPLES;
    if step < 2 * SAMPLE_LEN {
        // A short last piece is judged on all its bytes.
        let n = piece.len() as u64;
        if n < 2 {
            return false;
        }
        let limit = random_pairs_limit(n);
        return equal_pairs(&[piece], limit) < limit;
    }
    let limit = *SAMPLED_LIMIT.get_or_init(|| random_pairs_limit((SAMPLES * SAMPLE_LEN) as u64));
    let samples: [&[u8]; SAMPLES] =
        std::array::from_fn(|i| &piece[i * step..i * step + SAMPLE_LEN]);
    equal_pairs(&samples, limit) < limit
}

/// Append `data` as stored deflate blocks (the stream is byte-aligned here).
fn push_stored(out: &mut Vec<u8>, data: &[u8], last: bool) {
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

/// A deflate engine for one [`level`](compress): igzip for levels 1 to 3
/// (fast), zlib-rs for 4 to 9 (smaller output, several times the CPU).
enum Deflater {
    Isal(isal::IsalDeflater),
    Zlib(Compress),
}

/// The highest level served by igzip.
const ISAL_MAX_LEVEL: u32 = 3;

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
    /// blocks when deflate did not shrink it.
    fn run(&mut self, out: &mut Vec<u8>, dict: &[u8], data: &[u8], last: bool) -> io::Result<()> {
        let start = out.len();
        match self {
            Deflater::Isal(z) => z.run(out, dict, data, last)?,
            Deflater::Zlib(z) => zlib_run(z, out, dict, data, last)?,
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

/// Deflate `data` with zlib `z` (reset here) primed with `dict`, appending
/// to `out`. Not `last`: ends with a sync flush, byte-aligned; `last`:
/// ends the stream.
fn zlib_run(
    z: &mut Compress,
    out: &mut Vec<u8>,
    dict: &[u8],
    data: &[u8],
    last: bool,
) -> io::Result<()> {
    z.reset();
    if !dict.is_empty() {
        z.set_dictionary(dict).map_err(io::Error::other)?;
    }
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
fn deflate_block(
    out: &mut Vec<u8>,
    dict: &[u8],
    block: &[u8],
    last: bool,
    level: u32,
) -> io::Result<()> {
    out.clear();
    let pieces: Vec<&[u8]> = block.chunks(PIECE_SIZE).collect();
    let stored: Vec<bool> = pieces.iter().map(|p| looks_random(p)).collect();
    if !pieces.is_empty() && stored.iter().all(|s| *s) {
        push_stored(out, block, last);
        return Ok(());
    }
    with_deflater(level, |z| {
        let mut start = 0;
        while start < pieces.len() || (start == 0 && pieces.is_empty()) {
            let class = stored.get(start).copied().unwrap_or(false);
            let mut end = start + 1;
            while end < pieces.len() && stored[end] == class {
                end += 1;
            }
            let run = &block[start * PIECE_SIZE..(end * PIECE_SIZE).min(block.len())];
            let last_run = last && end >= pieces.len();
            if class {
                push_stored(out, run, last_run);
            } else {
                // History: the previous block's tail for the block's first
                // run. A later run follows a stored one, whose random bytes
                // would cost more to prime the compressor with than they
                // would ever match.
                let history = if start == 0 { dict } else { &[][..] };
                z.run(out, history, run, last_run)?;
            }
            start = end;
        }
        Ok(())
    })
}

/// Where [`compress`] writes: any writer, and, for one that can keep a
/// compressed block's buffer as it is (a streamed blob's queue), without
/// copying its bytes again.
pub trait GzipSink: Write {
    /// Write all of `piece`. The sink may take the buffer, leaving an
    /// empty one (of any capacity) in its place.
    fn write_piece(&mut self, piece: &mut Vec<u8>) -> io::Result<()> {
        self.write_all(piece)
    }
}

impl GzipSink for Vec<u8> {}
impl GzipSink for io::Sink {}
impl<W: Write> GzipSink for io::BufWriter<W> {}
impl<S: GzipSink + ?Sized> GzipSink for &mut S {
    fn write_piece(&mut self, piece: &mut Vec<u8>) -> io::Result<()> {
        (**self).write_piece(piece)
    }
}

/// What [`compress`] measured about its input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressStats {
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// SHA-256 of the input (a layer's diff_id).
    pub input_sha256: [u8; 32],
    /// SHA-256 of the gzip output (the blob digest).
    pub output_sha256: [u8; 32],
}

/// Each buffer of a batch, as a slice.
fn slices(buffers: &[Vec<u8>]) -> Vec<&[u8]> {
    buffers.iter().map(Vec::as_slice).collect()
}

/// Read `input` to its end and write it to `output` as one gzip member,
/// deflating blocks in parallel on the global rayon pool. Memory use is
/// bounded: at most four blocks per pool thread are in flight.
///
/// Reading the next batch of blocks, writing the previous one and hashing
/// both (the input's and the output's SHA-256, side by side) overlap with
/// deflating the current batch, so the serial work does not leave the
/// other cores idle.
pub fn compress(
    mut input: impl Read + Send,
    mut output: impl GzipSink + Send,
    level: u32,
) -> io::Result<CompressStats> {
    let batch_len = 2 * rayon::current_num_threads().max(1);
    let mut crc = crc32fast::Hasher::new();
    let mut stats = CompressStats {
        input_bytes: 0,
        output_bytes: GZIP_HEADER.len() as u64,
        input_sha256: [0; 32],
        output_sha256: [0; 32],
    };
    // Input and output digests, computed side by side (see sha256_pair).
    let mut hashes = Sha256Pair::default();
    output.write_all(&GZIP_HEADER)?;
    hashes.update(&[], &[&GZIP_HEADER]);

    // Buffers are recycled from batch to batch, and from layer to layer
    // through the pool: memory stays at a few blocks per thread, and the
    // allocator sees no churn.
    let mut reader = BatchReader {
        pending: buffers::take(),
        spare: Vec::new(),
        batch_len,
    };
    read_block(&mut input, &mut reader.pending)?;
    let (mut batch, mut last) = reader.next_batch(&mut input)?;
    hashes.update(&slices(&batch), &[]);
    let mut outs: Vec<Vec<u8>> = (0..batch_len).map(|_| buffers::take()).collect();
    // The previous batch's output, written while this batch is deflated.
    let mut written: Vec<Vec<u8>> = (0..batch_len).map(|_| buffers::take()).collect();
    let mut to_write = 0;
    let mut dict: Vec<u8> = Vec::with_capacity(DICT_SIZE);
    loop {
        // Each block's dictionary is the tail of the block before it.
        let dicts: Vec<&[u8]> = std::iter::once(dict.as_slice())
            .chain(
                batch
                    .iter()
                    .map(|b| &b[b.len().saturating_sub(DICT_SIZE)..]),
            )
            .take(batch.len())
            .collect();
        let count = batch.len();
        let (results, next) = rayon::join(
            || {
                batch
                    .par_iter()
                    .zip(dicts.par_iter())
                    .zip(outs[..count].par_iter_mut())
                    .enumerate()
                    .map(|(i, ((block, d), out))| {
                        deflate_block(out, d, block, last && i + 1 == count, level)?;
                        let mut crc = crc32fast::Hasher::new();
                        crc.update(block);
                        Ok(crc)
                    })
                    .collect::<Vec<io::Result<crc32fast::Hasher>>>()
            },
            || -> io::Result<Option<(Vec<Vec<u8>>, bool)>> {
                let next = if last {
                    None
                } else {
                    Some(reader.next_batch(&mut input)?)
                };
                let read = next.as_ref().map_or_else(Vec::new, |(b, _)| slices(b));
                // Hashed before they are written: the sink may take them.
                hashes.update(&read, &slices(&written[..to_write]));
                for piece in &mut written[..to_write] {
                    output.write_piece(piece)?;
                }
                Ok(next)
            },
        );
        let next = next?;
        for (block, (piece, block_crc)) in batch.iter().zip(outs.iter().zip(results)) {
            crc.combine(&block_crc?);
            stats.input_bytes += block.len() as u64;
            stats.output_bytes += piece.len() as u64;
        }
        if let Some(b) = batch.last() {
            dict.clear();
            dict.extend_from_slice(&b[b.len().saturating_sub(DICT_SIZE)..]);
        }
        std::mem::swap(&mut outs, &mut written);
        to_write = count;
        reader.spare.append(&mut batch);
        match next {
            Some((next_batch, next_last)) => (batch, last) = (next_batch, next_last),
            None => break,
        }
    }
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    trailer[4..].copy_from_slice(&(stats.input_bytes as u32).to_le_bytes());
    let mut tail = slices(&written[..to_write]);
    tail.push(&trailer);
    hashes.update(&[], &tail);
    for piece in &mut written[..to_write] {
        output.write_piece(piece)?;
    }
    output.write_all(&trailer)?;
    stats.output_bytes += 8;
    (stats.input_sha256, stats.output_sha256) = hashes.finish();
    output.flush()?;
    let BatchReader { pending, spare, .. } = reader;
    for buf in outs
        .into_iter()
        .chain(written)
        .chain(spare)
        .chain([pending])
    {
        buffers::give(buf);
    }
    Ok(stats)
}

/// Reads the input a batch of blocks at a time, one block ahead, so that
/// it knows whether a batch holds the last block.
struct BatchReader {
    /// The block read ahead.
    pending: Vec<u8>,
    /// Block buffers to read into, given back after each batch.
    spare: Vec<Vec<u8>>,
    batch_len: usize,
}

impl BatchReader {
    /// The next batch (at least one block, possibly empty at the end of
    /// the input) and whether it ends the input.
    fn next_batch(&mut self, input: &mut impl Read) -> io::Result<(Vec<Vec<u8>>, bool)> {
        let mut batch = Vec::with_capacity(self.batch_len);
        let mut last = false;
        while batch.len() < self.batch_len && !last {
            let mut next = self.spare.pop().unwrap_or_else(buffers::take);
            read_block(input, &mut next)?;
            last = next.is_empty();
            batch.push(std::mem::replace(&mut self.pending, next));
        }
        Ok((batch, last))
    }
}

/// Read up to one block into `block`; shorter only at the end of the input.
///
/// Into the buffer's initialised bytes, not with `read_to_end`, which
/// zeroes a recycled buffer's spare capacity before every read (2% of a
/// cold push's CPU): a buffer is zeroed once, when it is first grown.
fn read_block(input: &mut impl Read, block: &mut Vec<u8>) -> io::Result<()> {
    block.resize(BLOCK_SIZE, 0);
    let mut filled = 0;
    while filled < BLOCK_SIZE {
        match input.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    block.truncate(filled);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::read::GzDecoder;

    const DEFAULT_LEVEL_FOR_TESTS: u32 = crate::blob::DEFAULT_COMPRESSION_LEVEL;

    /// Deterministic bytes that look random (xorshift).
    pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        let words = [
            "kubevirt ",
            "virt-handler ",
            "layer ",
            "registry ",
            "\n",
            "sha256 ",
            "push ",
        ];
        let mut x = 7u64;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.extend_from_slice(words[(x >> 60) as usize % words.len()].as_bytes());
        }
        out.truncate(len);
        out
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    fn roundtrip(data: &[u8], level: u32) -> Vec<u8> {
        let mut gz = Vec::new();
        let stats = compress(data, &mut gz, level).unwrap();
        assert_eq!(stats.input_bytes, data.len() as u64);
        assert_eq!(stats.output_bytes, gz.len() as u64);
        assert_eq!(gunzip(&gz), data);
        gz
    }

    #[test]
    fn round_trips_for_every_shape_of_input() {
        for len in [
            0,
            1,
            1000,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            5 * BLOCK_SIZE + 17,
        ] {
            for level in [1, 3, 6] {
                roundtrip(&text(len), level);
                roundtrip(&pseudo_random(len, len as u64 + 1), level);
            }
        }
        // Mixed: compressible and incompressible blocks interleaved.
        let mut mixed = text(3 * BLOCK_SIZE);
        mixed.extend(pseudo_random(2 * BLOCK_SIZE + 5, 9));
        mixed.extend(text(BLOCK_SIZE / 3));
        for level in 1..=9 {
            roundtrip(&mixed, level);
        }
    }

    #[test]
    fn output_is_deterministic_and_independent_of_threads() {
        let mut data = text(4 * BLOCK_SIZE);
        data.extend(pseudo_random(3 * BLOCK_SIZE, 3));
        data.extend(records(2 * BLOCK_SIZE, 4));
        for level in [DEFAULT_LEVEL_FOR_TESTS, 6] {
            let a = roundtrip(&data, level);
            let one_thread = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let b = one_thread.install(|| roundtrip(&data, level));
            let many = rayon::ThreadPoolBuilder::new()
                .num_threads(5)
                .build()
                .unwrap();
            let c = many.install(|| roundtrip(&data, level));
            assert_eq!(a, b, "level {level}");
            assert_eq!(a, c, "level {level}");
        }
    }

    /// Binary records full of small integers and zero bytes, like the
    /// symbol tables of an executable.
    fn records(len: usize, seed: u64) -> Vec<u8> {
        let random = pseudo_random(len, seed);
        let mut out = Vec::with_capacity(len + 24);
        for r in random
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        {
            out.extend_from_slice(&((r % 4) as u32).to_le_bytes());
            out.extend_from_slice(&(((r >> 8) % 3) as u32).to_le_bytes());
            out.extend_from_slice(&((r >> 16) % 65_536).to_le_bytes());
            out.extend_from_slice(&((r >> 40) % 3_000).to_le_bytes());
            if out.len() >= len {
                break;
            }
        }
        out.truncate(len);
        out
    }

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
    fn incompressible_blocks_are_stored_and_text_shrinks() {
        let random = pseudo_random(3 * BLOCK_SIZE, 5);
        let gz = roundtrip(&random, 6);
        // Stored: 5 bytes per 64 KiB, plus header and trailer.
        assert!(
            gz.len() < random.len() + random.len() / 10_000 + 64,
            "{} vs {}",
            gz.len(),
            random.len()
        );
        let words = text(3 * BLOCK_SIZE);
        assert!(roundtrip(&words, 6).len() < words.len() / 3);
    }

    #[test]
    fn disk_images_store_random_clusters_and_deflate_zero_ones() {
        // 64 KiB clusters, every fourth unallocated: most of every block is
        // random, so the random pieces are stored, the zeros deflated.
        let mut disk = Vec::new();
        for i in 0..16 {
            if i % 4 == 3 {
                disk.extend(std::iter::repeat_n(0u8, 65536));
            } else {
                disk.extend(pseudo_random(65536, i + 100));
            }
        }
        let gz = roundtrip(&disk, 6);
        let random = 12 * 65536;
        assert!(
            gz.len() < random + random / 1000 + 1024,
            "zeros compressed away: {}",
            gz.len()
        );
        assert!(gz.len() > random, "random bytes stay: {}", gz.len());
    }

    #[test]
    fn dictionaries_carry_history_across_blocks() {
        // The same random block twice: the second copy is all back-references
        // into the first, reachable only through the dictionary window.
        let block = pseudo_random(DICT_SIZE - 100, 11);
        let mut data = text(BLOCK_SIZE - block.len());
        data.extend_from_slice(&block);
        data.extend_from_slice(&block);
        data.extend(text(BLOCK_SIZE / 2));
        let gz = roundtrip(&data, 6);
        assert!(gz.len() < data.len() - block.len() / 2, "{}", gz.len());
    }

    #[test]
    fn entropy_estimate() {
        assert!(entropy_bits(&[&pseudo_random(65536, 1)]) > 7.9);
        assert!(entropy_bits(&[&text(65536)]) < 5.0);
        assert_eq!(entropy_bits(&[&[0u8; 100]]), 0.0);
        // The estimate has no bias: 1 KiB of random bytes still reads as
        // nearly 8 bits (Shannon's plug-in estimate: about 7.82).
        let random = pseudo_random(4096, 7);
        let quarter: Vec<&[u8]> = random.chunks(256).step_by(4).collect();
        let h = entropy_bits(&quarter);
        assert!(h > 7.9 && h < 8.1, "{h}");
    }

    #[test]
    fn pages_are_judged_by_samples_that_a_stride_cannot_fool() {
        assert!(looks_random(&pseudo_random(PIECE_SIZE, 3)));
        assert!(!looks_random(&text(PIECE_SIZE)));
        // Little-endian u32s below 2^16: every fourth byte alone would
        // look random, the page as a whole does not.
        let words: Vec<u8> = pseudo_random(PIECE_SIZE / 2, 5)
            .chunks(2)
            .flat_map(|w| [w[0], w[1], 0, 0])
            .collect();
        assert_eq!(words.len(), PIECE_SIZE);
        assert!(!looks_random(&words));
        // A short last piece is judged on all its bytes.
        assert!(looks_random(&pseudo_random(1500, 9)));
        assert!(!looks_random(&[7u8; 1500]));
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

    #[test]
    fn the_pairs_limit_gives_the_verdict_of_the_entropy() {
        for n in [2u64, 3, 100, 1024, 1500, 2047] {
            let limit = random_pairs_limit(n);
            assert!(entropy_of(limit, n) <= STORE_ENTROPY_BITS, "n={n}");
            assert!(
                limit == 0 || entropy_of(limit - 1, n) > STORE_ENTROPY_BITS,
                "n={n}"
            );
        }
        // 1 KiB of samples: random bytes hold about n*(n-1)/256 = 4092
        // pairs, the limit (2^-7.9 of them) is 7% above that.
        assert_eq!(random_pairs_limit(1024), 4386);
    }

    #[test]
    fn counting_stops_early_only_past_the_limit() {
        let limit = random_pairs_limit(1024);
        let zeros = [0u8; 1024];
        // 128 zeros already hold 128 * 127 pairs.
        assert_eq!(equal_pairs(&[&zeros], limit), 128 * 127);
        let random = pseudo_random(1024, 13);
        let full = equal_pairs(&[&random], u64::MAX);
        assert!(full < limit, "{full}");
        assert_eq!(equal_pairs(&[&random], limit), full);
        // Pages around the threshold (random bytes, every k-th one zeroed)
        // get the verdict of the full count.
        for k in 2..200 {
            let mut page = pseudo_random(PIECE_SIZE, k as u64);
            page.iter_mut().step_by(k).for_each(|b| *b = 0);
            let samples: Vec<&[u8]> = page
                .chunks(SAMPLE_LEN)
                .step_by(PIECE_SIZE / SAMPLES / SAMPLE_LEN)
                .collect();
            assert_eq!(
                looks_random(&page),
                entropy_bits(&samples) > STORE_ENTROPY_BITS,
                "k={k}"
            );
        }
        // Counted across parts as one sequence.
        let (a, b) = random.split_at(300);
        assert_eq!(equal_pairs(&[a, b], u64::MAX), full);
    }
}
