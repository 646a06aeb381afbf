//! Parallel, deterministic gzip, as pigz does it: the input is cut into
//! fixed-size blocks, each deflated on its own core with the previous 32 KiB
//! of input as its dictionary, and the byte-aligned pieces are concatenated
//! into one ordinary gzip member (one header, one CRC-32, one trailer).
//!
//! Pages that will not shrink (disk images, already-compressed payloads)
//! are spotted by their byte entropy and written as stored deflate blocks,
//! spending no deflate effort on them, as klauspost/compress does.
//!
//! Deflating is igzip's (ISA-L, [`isal`]) for levels 1 to 3, zlib-rs's
//! for 4 to 9 and libdeflate's for 10 to 12, whose runs are gzip members
//! of their own ([`members`]: libdeflate has neither dictionaries nor
//! flushes). The output depends only on the input, the level,
//! [`BLOCK_SIZE`] and, for igzip, the class of CPU, for libdeflate its
//! version (see [`settings_id`]), never on the number of threads or on
//! timing. [`settings_id`] names these
//! parameters for the persistent digest cache.
//!
//! - `gzip`: [`compress`], the block-parallel driver, and the gzip member
//!   around the blocks (header, CRC-32, trailer, both SHA-256s).
//! - `deflate`: one block deflated with its dictionary, by igzip or zlib.
//! - `entropy`: which pages of a block are stored instead of deflated, and
//!   (zlib levels) where a deflated run starts a new Huffman block.
//! - `members`: one block as gzip members deflated by libdeflate.
//! - `level`: `--compression-level`, and the level `auto` picks for a run.
//!
//! Knows nothing of layers, images or registries: bytes in, gzip out.

mod deflate;
mod entropy;
mod gzip;
mod isal;
mod level;
mod members;
#[cfg(test)]
pub(crate) mod tests;

pub use gzip::{compress, CompressStats, GzipSink, BLOCK_SIZE};

pub use level::{choose, CompressionLevel, LevelChoice, LinkEstimate, FAST_LEVEL, STRONG_LEVEL};

use deflate::ISAL_MAX_LEVEL;
pub use members::MAX_LEVEL;

/// Identifies the compressor's output format; part of every cache key
/// (through [`settings_id`]), so a change here must change this string.
pub const SETTINGS_ID: &str = "pgz4-256k-4k";
/// The same for zlib's levels (4 to 9), whose deflated runs also end a
/// Huffman block where the page class changes (`-cls`).
pub const ZLIB_SETTINGS_ID: &str = "pgz5-256k-4k-cls";

/// The same for libdeflate's levels (10 to 12): each run of pages its own
/// gzip member, in 1 MiB blocks; the library's version follows.
pub const LIBDEFLATE_SETTINGS_ID: &str = "ldm1-1m-4k";

/// The cache key's name for what `level` produces on this machine.
///
/// igzip picks its code at run time by CPU features, and its paths are not
/// all the same algorithm (level 3 matches lazily from AVX2 on, greedily
/// below), so its output, and a layer's digest, is only the same on
/// machines of one class. A cache shared between CI runners of different
/// CPUs then keeps one entry per class instead of promising a digest the
/// other class would not produce. zlib-rs and libdeflate output does not
/// depend on the CPU; libdeflate's may on its version, which is named.
pub fn settings_id(level: u32) -> String {
    if level <= ISAL_MAX_LEVEL {
        format!("{SETTINGS_ID}-l{level}-isal-{}", isal::cpu_class())
    } else if level >= members::MIN_LEVEL {
        format!(
            "{LIBDEFLATE_SETTINGS_ID}-l{level}-libdeflate-{}",
            members::LIBDEFLATE_VERSION
        )
    } else {
        format!("{ZLIB_SETTINGS_ID}-l{level}")
    }
}

/// The settings of every level this machine can reproduce, `first` first,
/// then the others from the strongest down: where `auto` looks for a layer
/// that an earlier run compressed at another level (its blob is reused,
/// never compressed again because the link changed).
pub fn reproducible_settings(first: u32) -> Vec<(u32, String)> {
    std::iter::once(first)
        .chain((1..=MAX_LEVEL).rev().filter(|&l| l != first))
        .map(|l| (l, settings_id(l)))
        .collect()
}
