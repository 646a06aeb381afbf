//! [`compress`]: the block-parallel driver (read a batch, deflate it on
//! the rayon pool while the previous one is written and hashed) and the
//! gzip member around the blocks: header, CRC-32 and length trailer, and
//! the input's and output's SHA-256. Knows nothing of how a block is
//! deflated ([`super::deflate`]) or of what the output is for.

use std::io::{self, Read, Write};

use rayon::prelude::*;

use super::deflate::{deflate_block, DICT_SIZE};
use super::members::{self, block_members, GZIP_HEADER};
use crate::buffers;
use crate::sha256_pair::Sha256Pair;

/// Uncompressed bytes per independently deflated block.
pub const BLOCK_SIZE: usize = 256 * 1024;

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

/// Read `input` to its end and write it to `output` as one gzip member
/// (levels 10 to 12: one member per run of pages, see [`super::members`]),
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
    // Blocks that are whole gzip members need no header or trailer around.
    let as_members = level >= members::MIN_LEVEL;
    let header: &[u8] = if as_members { &[] } else { &GZIP_HEADER };
    let mut crc = crc32fast::Hasher::new();
    let mut stats = CompressStats {
        input_bytes: 0,
        output_bytes: header.len() as u64,
        input_sha256: [0; 32],
        output_sha256: [0; 32],
    };
    // Input and output digests, computed side by side (see sha256_pair).
    let mut hashes = Sha256Pair::default();
    output.write_all(header)?;
    hashes.update(&[], &[header]);

    // Buffers are recycled from batch to batch, and from layer to layer
    // through the pool: memory stays at a few blocks per thread, and the
    // allocator sees no churn.
    let mut reader = BatchReader {
        pending: buffers::take(),
        spare: Vec::new(),
        batch_len,
        block_size: if as_members {
            members::BLOCK_SIZE
        } else {
            BLOCK_SIZE
        },
    };
    read_block(&mut input, &mut reader.pending, reader.block_size)?;
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
                        if as_members {
                            block_members(out, block, level)?;
                        } else {
                            deflate_block(out, d, block, last && i + 1 == count, level)?;
                        }
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
    let trailer: &[u8] = if as_members { &[] } else { &trailer };
    let mut tail = slices(&written[..to_write]);
    tail.push(trailer);
    hashes.update(&[], &tail);
    for piece in &mut written[..to_write] {
        output.write_piece(piece)?;
    }
    output.write_all(trailer)?;
    stats.output_bytes += trailer.len() as u64;
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
    /// Uncompressed bytes per block.
    block_size: usize,
}

impl BatchReader {
    /// The next batch (at least one block, possibly empty at the end of
    /// the input) and whether it ends the input.
    fn next_batch(&mut self, input: &mut impl Read) -> io::Result<(Vec<Vec<u8>>, bool)> {
        let mut batch = Vec::with_capacity(self.batch_len);
        let mut last = false;
        while batch.len() < self.batch_len && !last {
            let mut next = self.spare.pop().unwrap_or_else(buffers::take);
            read_block(input, &mut next, self.block_size)?;
            last = next.is_empty();
            batch.push(std::mem::replace(&mut self.pending, next));
        }
        Ok((batch, last))
    }
}

/// Read up to one block of `size` bytes into `block`; shorter only at the
/// end of the input.
///
/// Into the buffer's initialised bytes, not with `read_to_end`, which
/// zeroes a recycled buffer's spare capacity before every read (2% of a
/// cold push's CPU): a buffer is zeroed once, when it is first grown.
fn read_block(input: &mut impl Read, block: &mut Vec<u8>, size: usize) -> io::Result<()> {
    block.resize(size, 0);
    let mut filled = 0;
    while filled < size {
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
mod tests {
    use super::*;
    use crate::compress::tests::{pseudo_random, records, text};
    use flate2::read::MultiGzDecoder;

    const DEFAULT_LEVEL_FOR_TESTS: u32 = crate::blob::DEFAULT_COMPRESSION_LEVEL;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // Every member (levels 10-12 write several).
        MultiGzDecoder::new(gz)
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
            for level in [1, 3, 6, 10] {
                roundtrip(&text(len), level);
                roundtrip(&pseudo_random(len, len as u64 + 1), level);
            }
        }
        // Mixed: compressible and incompressible blocks interleaved.
        let mut mixed = text(3 * BLOCK_SIZE);
        mixed.extend(pseudo_random(2 * BLOCK_SIZE + 5, 9));
        mixed.extend(text(BLOCK_SIZE / 3));
        for level in 1..=crate::compress::MAX_LEVEL {
            roundtrip(&mixed, level);
        }
    }

    #[test]
    fn output_is_deterministic_and_independent_of_threads() {
        let mut data = text(4 * BLOCK_SIZE);
        data.extend(pseudo_random(3 * BLOCK_SIZE, 3));
        data.extend(records(2 * BLOCK_SIZE, 4));
        for level in [DEFAULT_LEVEL_FOR_TESTS, 6, 10, 12] {
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

    #[test]
    fn incompressible_blocks_are_stored_and_text_shrinks() {
        let random = pseudo_random(3 * BLOCK_SIZE, 5);
        for level in [6, 12] {
            let gz = roundtrip(&random, level);
            // Stored: 5 bytes per 64 KiB, plus header and trailer (one
            // member per 1 MiB block at level 12).
            assert!(
                gz.len() < random.len() + random.len() / 10_000 + 64,
                "level {level}: {} vs {}",
                gz.len(),
                random.len()
            );
        }
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
    fn strong_levels_write_one_gzip_member_per_run_and_shrink_text() {
        // Empty input is still one valid member.
        let gz = roundtrip(b"", 12);
        assert_eq!(&gz[..10], &GZIP_HEADER);
        let words = text(3 * BLOCK_SIZE);
        let gz = roundtrip(&words, 10);
        assert!(gz.len() < roundtrip(&words, 6).len(), "{}", gz.len());
        // Whole members from the start: each begins with the header.
        assert_eq!(&gz[..10], &GZIP_HEADER);
        let members = gz.windows(10).filter(|w| *w == GZIP_HEADER).count();
        assert!(members >= 1, "{members}");
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
}
