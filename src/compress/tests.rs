//! Test data shared by the compressor's tests (and by those of the modules
//! that feed it): text, random bytes and binary records, all deterministic.

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

/// Text that deflates well: words of a small vocabulary, in a
/// pseudo-random order.
pub(crate) fn text(len: usize) -> Vec<u8> {
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

/// Binary records full of small integers and zero bytes, like the
/// symbol tables of an executable.
pub(crate) fn records(len: usize, seed: u64) -> Vec<u8> {
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
