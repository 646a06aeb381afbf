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
/// `auto`'s level when the link is the bottleneck but too fast for
/// libdeflate's levels: zlib-rs at 6 with Huffman blocks split by page
/// class, 2-3% smaller than level 3 on the bench's layers (level 9 is no
/// smaller there, at twice the CPU).
pub const STRONG_LEVEL: u32 = 6;

/// The levels `auto` may pick when the link is the bottleneck, strongest
/// first, each with the input bytes a second one core deflates at it on
/// layers like the bench's (random pages stored): level 6's 40 MB/s
/// (about 45 on this project's 2-core EPYC, unloaded) scaled by how much
/// longer the other levels took, rounded down. Measured as whole
/// `--no-cache` pushes of the `--scale 128MiB` workspace (135 MB of
/// tarballs, 21 images) to a loopback registry on the shared 2-core VM at
/// load ~8 (2026-12-08), rounded down so a busy machine keeps up:
///
/// | level | push | layer bytes |
/// | --- | --- | --- |
/// | 3 (igzip) | 1.52 s | 69,508,463 |
/// | 6 (zlib-rs, class splits) | 3.03 s | 68,621,244 |
/// | 10 (libdeflate members) | 3.57 s | 68,514,139 |
/// | 11 | 4.39 s | 68,483,504 |
/// | 12 | 6.23 s | 68,472,002 |
///
/// The strongest level whose output keeps the link busy is picked: on 2
/// cores a 200 Mbit/s link gets level 11, the 400 Mbit/s assumed for a far
/// registry level 6.
const LADDER: [(u32, f64); 4] = [(12, 17e6), (11, 25e6), (10, 30e6), (STRONG_LEVEL, 40e6)];
/// Compressed size over input size on such layers, taken high (0.51 on
/// the bench's) so the link is rather kept busy.
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
/// Set (to anything) by the wan bench, whose shaping relay listens on
/// loopback in place of a far registry: judge it by its connect time, as
/// a far registry would be (not a user setting).
pub const TEST_LOOPBACK_IS_FAR_ENV: &str = "KVPUSH_TEST_LOOPBACK_IS_FAR";

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
    /// Every registry of the run is on this machine (a loopback address):
    /// no link to wait on, whatever a busy machine's connect time says.
    Loopback,
}

impl LinkEstimate {
    /// The forced estimate if [`TEST_LINK_ENV`] holds a number, else
    /// the one from `connect`.
    /// `all_loopback`: every registry of the run has a loopback address.
    pub fn from_env_or(connect: Duration, all_loopback: bool) -> LinkEstimate {
        let measured = if all_loopback && std::env::var_os(TEST_LOOPBACK_IS_FAR_ENV).is_none() {
            LinkEstimate::Loopback
        } else {
            LinkEstimate::Connect(connect)
        };
        std::env::var(TEST_LINK_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|bps| *bps > 0.0)
            .map_or(measured, |bps| LinkEstimate::Forced(bps / 8.0))
    }

    /// Bytes a second.
    pub fn bytes_per_sec(&self) -> f64 {
        match *self {
            LinkEstimate::Forced(b) => b,
            LinkEstimate::Loopback => LOCAL_LINK,
            LinkEstimate::Connect(t) if t < LOCAL_CONNECT => LOCAL_LINK,
            LinkEstimate::Connect(_) => FAR_LINK,
        }
    }

    fn describe(&self) -> String {
        let mbs = self.bytes_per_sec() / 1e6;
        match *self {
            LinkEstimate::Forced(_) => format!("link ~{mbs:.0} MB/s, from {TEST_LINK_ENV}"),
            LinkEstimate::Loopback => {
                format!("link ~{mbs:.0} MB/s: the registry is on this machine")
            }
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

/// The level for a run: a fixed one as given; `auto` takes the strongest
/// level of [`LADDER`] whose output on these cores comes faster than the
/// link carries it (the link is the bottleneck even at that level), and
/// [`FAST_LEVEL`] when none does (the CPU is the bottleneck: the link
/// would wait on a stronger deflate).
pub fn choose(asked: CompressionLevel, link: LinkEstimate, cores: usize) -> LevelChoice {
    if let CompressionLevel::Fixed(level) = asked {
        return LevelChoice {
            level,
            auto: false,
            why: "as given by --compression-level".into(),
        };
    }
    let cores = cores.max(1);
    let out_rate = |per_core: f64| per_core * cores as f64 * TYPICAL_RATIO;
    let link_bps = link.bytes_per_sec();
    let strong = LADDER
        .iter()
        .find(|(_, per_core)| out_rate(*per_core) > link_bps);
    let why = match strong {
        Some(&(level, per_core)) => format!(
            "auto: {}; level-{level} deflate ~{:.0} MB/s out on {cores} cores: the link is the bottleneck",
            link.describe(),
            out_rate(per_core) / 1e6,
        ),
        None => format!(
            "auto: {}; level-{STRONG_LEVEL} deflate ~{:.0} MB/s out on {cores} cores: the CPU is the bottleneck",
            link.describe(),
            out_rate(LADDER[LADDER.len() - 1].1) / 1e6,
        ),
    };
    LevelChoice {
        level: strong.map_or(FAST_LEVEL, |&(level, _)| level),
        auto: true,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::MAX_LEVEL;

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
        // The wan bench's 200 Mbit/s on 2 cores: libdeflate's 11 keeps
        // up, its 12 would not; 4 cores afford 12.
        let wan = auto(LinkEstimate::Forced(25e6), 2);
        assert_eq!((wan.level, wan.auto), (11, true));
        assert!(wan.why.contains("link is the bottleneck"), "{}", wan.why);
        assert_eq!(auto(LinkEstimate::Forced(25e6), 4).level, 12);
        // 400 Mbit/s: zlib's 6 on 2 cores, libdeflate's 11 on 3.
        assert_eq!(auto(LinkEstimate::Forced(50e6), 2).level, STRONG_LEVEL);
        assert_eq!(auto(LinkEstimate::Forced(50e6), 3).level, 11);
        // 10 Gbit/s: the CPU is the bottleneck even on 32 cores.
        let lan = auto(LinkEstimate::Forced(1.25e9), 2);
        assert_eq!(lan.level, FAST_LEVEL);
        assert!(lan.why.contains("CPU is the bottleneck"), "{}", lan.why);
        assert_eq!(auto(LinkEstimate::Forced(1.25e9), 32).level, FAST_LEVEL);
        // 1 Gbit/s: too fast for 2 cores, not for 8.
        assert_eq!(auto(LinkEstimate::Forced(125e6), 2).level, FAST_LEVEL);
        assert_eq!(auto(LinkEstimate::Forced(125e6), 8).level, 11);
        // Zero cores reported reads as one; a slow link gets the strongest.
        assert_eq!(auto(LinkEstimate::Forced(1e6), 0).level, MAX_LEVEL);
    }

    #[test]
    fn a_loopback_registry_is_local_whatever_its_connect_time() {
        let busy = choose(CompressionLevel::Auto, LinkEstimate::Loopback, 2);
        assert_eq!(busy.level, FAST_LEVEL, "{}", busy.why);
        assert!(busy.why.contains("on this machine"), "{}", busy.why);
    }

    #[test]
    fn connect_time_tells_a_local_registry_from_a_far_one() {
        let local = LinkEstimate::Connect(Duration::from_millis(2));
        let far = LinkEstimate::Connect(Duration::from_millis(85));
        assert_eq!(choose(CompressionLevel::Auto, local, 2).level, FAST_LEVEL);
        // 400 Mbit/s assumed: level 6 on 2 cores.
        let c = choose(CompressionLevel::Auto, far, 2);
        assert_eq!(c.level, STRONG_LEVEL);
        assert!(c.why.contains("connected in 85 ms, a far one"), "{}", c.why);
    }
}
