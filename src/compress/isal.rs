//! ISA-L's igzip deflate (its levels 1 to 3), the fast backend of
//! [`super`]: on KubeVirt-like layers it deflates about twice as fast as
//! zlib-rs at level 2 for a similar size.
//!
//! `isal-sys` provides the raw bindings (and builds ISA-L from source);
//! this is the small safe layer kvpush needs on top: one raw-deflate run
//! primed with a preset dictionary and ended by a flush. The `isal-rs`
//! wrapper offers neither a dictionary nor a flush mode.

use std::io;
use std::mem::MaybeUninit;

use isal_sys::igzip_lib as sys;

/// One reusable igzip stream at a fixed level.
pub struct IsalDeflater {
    /// Boxed: 80 KiB of state that must not move once initialised.
    stream: Box<sys::isal_zstream>,
    /// The level's working memory; `stream.level_buf` points into it.
    _level_buf: Vec<u8>,
}

impl IsalDeflater {
    /// A stream for igzip `level` (1 to 3).
    pub fn new(level: u32) -> Self {
        let size = match level {
            1 => sys::ISAL_DEF_LVL1_DEFAULT,
            2 => sys::ISAL_DEF_LVL2_DEFAULT,
            3 => sys::ISAL_DEF_LVL3_DEFAULT,
            _ => panic!("igzip has no level {level}"),
        };
        let mut stream: Box<MaybeUninit<sys::isal_zstream>> = Box::new_uninit();
        // SAFETY: isal_deflate_init writes every field of the stream.
        let mut stream = unsafe {
            sys::isal_deflate_init(stream.as_mut_ptr());
            stream.assume_init()
        };
        let mut level_buf = vec![0u8; size as usize];
        stream.level = level;
        stream.level_buf = level_buf.as_mut_ptr();
        stream.level_buf_size = size;
        stream.gzip_flag = sys::IGZIP_DEFLATE as u16;
        IsalDeflater {
            stream,
            _level_buf: level_buf,
        }
    }

    /// Append `data` to `out` as raw deflate, back-references allowed into
    /// `dict` (at most the last 32 KiB count). Not `last`: ends with a full
    /// flush (byte-aligned, no final block), so another run may follow;
    /// `last`: ends the deflate stream.
    pub fn run(
        &mut self,
        out: &mut Vec<u8>,
        dict: &[u8],
        data: &[u8],
        last: bool,
    ) -> io::Result<()> {
        let s = &mut *self.stream;
        let len = u32::try_from(data.len()).map_err(io::Error::other)?;
        // SAFETY: the stream was initialised in `new`; reset only clears
        // its bookkeeping (level and level_buf are kept).
        unsafe { sys::isal_deflate_reset(s) };
        s.end_of_stream = u16::from(last);
        // A full flush, not a sync one: each run is independent anyway,
        // and it lets igzip clear a smaller hash table for a short run.
        s.flush = if last { sys::NO_FLUSH } else { sys::FULL_FLUSH } as u16;
        if !dict.is_empty() {
            let dict_len = u32::try_from(dict.len()).map_err(io::Error::other)?;
            // SAFETY: igzip copies the dictionary; it does not write to it.
            check("setting the dictionary", unsafe {
                sys::isal_deflate_set_dict(s, dict.as_ptr().cast_mut(), dict_len)
            })?;
        }
        // igzip reads the input only; the pointer is mut in its C header.
        s.next_in = data.as_ptr().cast_mut();
        s.avail_in = len;
        // igzip's choices depend on the room it is given for its output
        // (a full buffer ends a block early), so the room is a function of
        // the input alone, never of the buffer's capacity: enough for
        // deflate's worst case (9-bit literals), so one call does it.
        let window = data.len() + data.len() / 8 + 1024;
        let room = u32::try_from(window).map_err(io::Error::other)?;
        loop {
            out.reserve(window);
            let spare = &mut out.spare_capacity_mut()[..window];
            s.next_out = spare.as_mut_ptr().cast::<u8>();
            s.avail_out = room;
            // SAFETY: next_in/avail_in describe `data`, next_out/avail_out
            // the spare capacity of `out`, both valid for this call.
            check("deflating", unsafe { sys::isal_deflate(s) })?;
            let written = (room - s.avail_out) as usize;
            // SAFETY: igzip initialised the first `written` spare bytes.
            unsafe { out.set_len(out.len() + written) };
            // Room left over means igzip has written all it will (the
            // flush or the stream end included).
            if s.avail_out > 0 {
                break;
            }
        }
        let ended = !last || s.internal_state.state == sys::isal_zstate_state_ZSTATE_END;
        if s.avail_in != 0 || !ended {
            return Err(io::Error::other(format!(
                "igzip stopped early ({} of {} bytes taken, state {}); please report this as a kvpush bug",
                len - s.avail_in,
                len,
                s.internal_state.state
            )));
        }
        Ok(())
    }
}

/// The class of code igzip's dispatcher picks on this CPU (the feature
/// tests of ISA-L's `multibinary.asm`): `avx512`, `avx2`, `avx`, `sse4.2`
/// or `base`.
pub fn cpu_class() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512vl")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
        {
            return "avx512";
        }
        if has!("avx2") {
            return "avx2";
        }
        if has!("avx") {
            return "avx";
        }
        if has!("sse4.2") {
            return "sse4.2";
        }
    }
    "base"
}

fn check(what: &str, code: std::os::raw::c_int) -> io::Result<()> {
    if code == sys::COMP_OK as std::os::raw::c_int {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "igzip failed {what}: error code {code}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn inflate_with_dict(dict: &[u8], deflated: &[u8], expect_len: usize) -> Vec<u8> {
        let mut d = Decompress::new(false);
        if !dict.is_empty() {
            d.set_dictionary(dict).unwrap();
        }
        let mut out = Vec::with_capacity(expect_len + 1024);
        d.decompress_vec(deflated, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn runs_decode_with_their_dictionary_at_every_level() {
        let dict: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 5000) as u8)
            .collect();
        for level in 1..=3 {
            let mut z = IsalDeflater::new(level);
            for last in [false, true] {
                let mut out = Vec::new();
                z.run(&mut out, &dict, &data, last).unwrap();
                assert!(
                    out.len() < data.len() / 4,
                    "level {level}: {} bytes",
                    out.len()
                );
                if !last {
                    // A full flush ends with an empty stored block.
                    assert_eq!(&out[out.len() - 4..], &[0, 0, 0xff, 0xff]);
                }
                assert_eq!(inflate_with_dict(&dict, &out, data.len()), data);
            }
        }
    }

    #[test]
    fn empty_and_tiny_runs() {
        let mut z = IsalDeflater::new(3);
        for data in [&b""[..], b"x", b"abcabcabc"] {
            for last in [false, true] {
                let mut out = Vec::new();
                z.run(&mut out, b"", data, last).unwrap();
                assert_eq!(inflate_with_dict(b"", &out, data.len()), data);
            }
        }
    }
}
