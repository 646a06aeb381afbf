//! `--compression-level`: a fixed gzip level, or `auto` (the default),
//! which picks one level per run from how fast the link to the registry
//! is estimated to be ([`LinkEstimate`]) against how fast this machine's
//! cores compress at the strong level ([`choose`]). Owns only that rule
//! and its constants; it measures nothing itself (the push times its
//! connections and hands the estimate in) and knows nothing of caches or
//! registries.

use std::fmt;
use std::time::Duration;

/// `auto`'s level when the CPU is the bottleneck (loopback, a LAN):
/// igzip's best, today's default.
pub const FAST_LEVEL: u32 = 3;
/// `auto`'s level when the link is the bottleneck: zlib-rs at 6 with
/// Huffman blocks split by page class, 2-3% smaller than level 3 on the
/// bench's layers. Nothing stronger pays there: measured on the 135 MB of
/// the `--scale 128MiB` workspace's tarballs, 2 threads on the shared
/// 2-core VM (load ~12), input MB/s and output bytes:
///
/// | level | in MB/s | out MB |
/// | --- | --- | --- |
/// | 3 (igzip) | 79 | 92.67 |
/// | 6 (zlib-rs, class splits) | 33 | 90.17 |
/// | 10 (libdeflate, 1 MiB members) | 12 | 90.24 |
/// | 12 (libdeflate, 1 MiB members) | 7.5 | 90.11 |
///
/// Level 10 is larger than 6 and level 12 0.07% smaller at four times
/// the CPU, too slow to keep a 200 Mbit/s link busy on 2 cores: the
/// random pages, most of the bytes, are stored at every level, and on the
/// rest page-class splits already win what libdeflate's parsing does.
pub const STRONG_LEVEL: u32 = 6;

/// Input bytes a second one core deflates at [`STRONG_LEVEL`] on layers
/// like the bench's (about 45 on this project's 2-core EPYC, random pages
/// stored; taken a little low so a busy machine still keeps up).
const STRONG_INPUT_PER_CORE: f64 = 40e6;
/// Compressed size over input size on such layers at the strong level.
const TYPICAL_RATIO: f64 = 0.7;

/// A registry whose connection (TCP handshake and the `/v2/` check, two
/// round trips) is made faster than this is on this machine or its LAN.
const LOCAL_CONNECT: Duration = Duration::from_millis(10);
/// Link assumed for a local registry: 10 Gbit/s.
const LOCAL_LINK: f64 = 1.25e9;
/// Link assumed for a far one (a CI runner to a public registry):
/// 400 Mbit/s, twice what the bench's wan profile shapes to.
const FAR_LINK: f64 = 50e6;

/// The environment variable that forces `auto`'s link estimate, in bits a
/// second (tests and benches; not a user setting).
pub const TEST_LINK_ENV: &str = "KVPUSH_TEST_LINK_BPS";

/// What `--compression-level` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompressionLevel {
    /// Pick per run from the link ([`choose`]).
    #[default]
    Auto,
    /// This level (1-12), whatever the link.
    Fixed(u32),
}

impl CompressionLevel {
    /// `auto` or 1 to 12 (10 to 12: libdeflate, see `compress::members`).
    pub fn parse(s: &str) -> Result<CompressionLevel, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(CompressionLevel::Auto);
        }
        match s.parse::<u32>() {
            Ok(n @ 1..=super::MAX_LEVEL) => Ok(CompressionLevel::Fixed(n)),
            _ => Err(format!(
                "{s:?} is not a compression level: give auto or 1 to {}",
                super::MAX_LEVEL
            )),
        }
    }
}

impl fmt::Display for CompressionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressionLevel::Auto => f.write_str("auto"),
            CompressionLevel::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// How fast the link to the registry is taken to be, and from what.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinkEstimate {
    /// [`TEST_LINK_ENV`] set: bytes a second.
    Forced(f64),
    /// From how long connecting to the registry took (the slowest host).
    Connect(Duration),
}

impl LinkEstimate {
    /// The forced estimate if [`TEST_LINK_ENV`] holds a number, else
    /// the one from `connect`.
    pub fn from_env_or(connect: Duration) -> LinkEstimate {
        std::env::var(TEST_LINK_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|bps| *bps > 0.0)
            .map_or(LinkEstimate::Connect(connect), |bps| {
                LinkEstimate::Forced(bps / 8.0)
            })
    }

    /// Bytes a second.
    pub fn bytes_per_sec(&self) -> f64 {
        match *self {
            LinkEstimate::Forced(b) => b,
            LinkEstimate::Connect(t) if t < LOCAL_CONNECT => LOCAL_LINK,
            LinkEstimate::Connect(_) => FAR_LINK,
        }
    }

    fn describe(&self) -> String {
        let mbs = self.bytes_per_sec() / 1e6;
        match *self {
            LinkEstimate::Forced(_) => format!("link ~{mbs:.0} MB/s, from {TEST_LINK_ENV}"),
            LinkEstimate::Connect(t) => format!(
                "link ~{mbs:.0} MB/s: the registry connected in {} ms, {}",
                t.as_millis(),
                if t < LOCAL_CONNECT {
                    "a local one"
                } else {
                    "a far one"
                }
            ),
        }
    }
}

/// The level a run compresses at, and why, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelChoice {
    pub level: u32,
    /// Picked by `auto` (so an earlier run's blob at another level may be
    /// reused); false for a level the user gave.
    pub auto: bool,
    pub why: String,
}

/// The level for a run: a fixed one as given; `auto` takes
/// [`STRONG_LEVEL`] when the link is the bottleneck, i.e. when the cores
/// compress at the strong level faster than the link carries the output,
/// and [`FAST_LEVEL`] when they do not (the CPU is the bottleneck: the
/// link would wait on a stronger deflate).
pub fn choose(asked: CompressionLevel, link: LinkEstimate, cores: usize) -> LevelChoice {
    if let CompressionLevel::Fixed(level) = asked {
        return LevelChoice {
            level,
            auto: false,
            why: "as given by --compression-level".into(),
        };
    }
    let cores = cores.max(1);
    let strong_out = STRONG_INPUT_PER_CORE * cores as f64 * TYPICAL_RATIO;
    let link_bps = link.bytes_per_sec();
    let level = if strong_out > link_bps {
        STRONG_LEVEL
    } else {
        FAST_LEVEL
    };
    let why = format!(
        "auto: {}; level-{STRONG_LEVEL} deflate ~{:.0} MB/s out on {cores} cores: the {} is the bottleneck",
        link.describe(),
        strong_out / 1e6,
        if level == STRONG_LEVEL { "link" } else { "CPU" }
    );
    LevelChoice {
        level,
        auto: true,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auto_and_levels_only() {
        assert_eq!(CompressionLevel::parse("auto"), Ok(CompressionLevel::Auto));
        assert_eq!(CompressionLevel::parse("AUTO"), Ok(CompressionLevel::Auto));
        assert_eq!(CompressionLevel::parse("9"), Ok(CompressionLevel::Fixed(9)));
        assert_eq!(
            CompressionLevel::parse("12"),
            Ok(CompressionLevel::Fixed(12))
        );
        for bad in ["0", "13", "", "fast", "-1"] {
            let err = CompressionLevel::parse(bad).unwrap_err();
            assert!(err.contains("auto or 1 to 12"), "{err}");
        }
        assert_eq!(CompressionLevel::default().to_string(), "auto");
        assert_eq!(CompressionLevel::Fixed(4).to_string(), "4");
    }

    #[test]
    fn a_given_level_is_kept_whatever_the_link() {
        for link in [LinkEstimate::Forced(1e3), LinkEstimate::Forced(1e12)] {
            let c = choose(CompressionLevel::Fixed(2), link, 8);
            assert_eq!((c.level, c.auto), (2, false));
        }
    }

    #[test]
    fn auto_goes_strong_only_when_the_link_is_slower_than_the_cores() {
        let auto = |link, cores| choose(CompressionLevel::Auto, link, cores);
        // The wan bench: 200 Mbit/s, 2 cores.
        let wan = auto(LinkEstimate::Forced(25e6), 2);
        assert_eq!((wan.level, wan.auto), (STRONG_LEVEL, true));
        assert!(wan.why.contains("link is the bottleneck"), "{}", wan.why);
        // 10 Gbit/s: the CPU is the bottleneck even on 32 cores.
        assert_eq!(auto(LinkEstimate::Forced(1.25e9), 2).level, FAST_LEVEL);
        assert_eq!(auto(LinkEstimate::Forced(1.25e9), 32).level, FAST_LEVEL);
        // 1 Gbit/s: too fast for 2 cores, not for 8.
        assert_eq!(auto(LinkEstimate::Forced(125e6), 2).level, FAST_LEVEL);
        assert_eq!(auto(LinkEstimate::Forced(125e6), 8).level, STRONG_LEVEL);
        // Zero cores reported reads as one.
        assert_eq!(auto(LinkEstimate::Forced(1e6), 0).level, STRONG_LEVEL);
    }

    #[test]
    fn connect_time_tells_a_local_registry_from_a_far_one() {
        let local = LinkEstimate::Connect(Duration::from_millis(2));
        let far = LinkEstimate::Connect(Duration::from_millis(85));
        assert_eq!(choose(CompressionLevel::Auto, local, 2).level, FAST_LEVEL);
        let c = choose(CompressionLevel::Auto, far, 2);
        assert_eq!(c.level, STRONG_LEVEL);
        assert!(c.why.contains("connected in 85 ms, a far one"), "{}", c.why);
    }
}
