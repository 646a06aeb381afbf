//! The store-or-deflate decision: a page whose bytes look random (a disk
//! image's clusters, compressed payloads) is stored, costing no deflate
//! effort. Judges bytes only; knows nothing of deflate or gzip.

/// Unit of the store-or-deflate decision inside a block: a page. (32 KiB
/// pieces, the first choice, mixed random pages into deflated runs: the
/// bench's executables took 3x the CPU for a 9% larger output.)
pub(super) const PIECE_SIZE: usize = 4 * 1024;
/// Above this many bits of (collision) entropy per byte a page is stored,
/// not deflated.
const STORE_ENTROPY_BITS: f64 = 7.9;

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

/// A page's class for the strong settings' Huffman-table splits:
/// `floor(2 * H2)`, twice its collision entropy in bits per byte, rounded
/// down, from all its bytes in integer arithmetic only (no float, so no
/// libm rounding can differ between machines and change a digest).
/// Machine code, string tables, text and zeros land in different classes.
pub(super) fn page_class(piece: &[u8]) -> u32 {
    let n = piece.len() as u64;
    if n < 2 {
        return 0;
    }
    let pairs = equal_pairs(&[piece], u64::MAX).max(1);
    // 1/p = n(n-1)/pairs <= n(n-1) < 2^24 for a 4 KiB page: squared fits.
    let inverse = (n * (n - 1) / pairs).max(1);
    (inverse * inverse).ilog2()
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
pub(super) fn looks_random(piece: &[u8]) -> bool {
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

/// Runs of whole pages of `block`, each stored (its pages look random) or
/// deflated, in order; an empty block is one empty deflated run.
pub(super) fn page_runs(block: &[u8]) -> Vec<(std::ops::Range<usize>, bool)> {
    let stored: Vec<bool> = block.chunks(PIECE_SIZE).map(looks_random).collect();
    let mut runs: Vec<(std::ops::Range<usize>, bool)> = Vec::new();
    for (i, &s) in stored.iter().enumerate() {
        let end = ((i + 1) * PIECE_SIZE).min(block.len());
        match runs.last_mut() {
            Some((range, class)) if *class == s => range.end = end,
            _ => runs.push((i * PIECE_SIZE..end, s)),
        }
    }
    if runs.is_empty() {
        runs.push((0..0, false));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::tests::{pseudo_random, text};

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
