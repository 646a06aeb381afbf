//! A network-shaping TCP relay to put in front of a real [`crate::Registry`]
//! on loopback, so that benches see what a CI runner pushing to a far
//! registry sees: every byte arrives half a round trip after it was sent, a
//! new connection pays its handshake round trip before its first byte, and
//! all connections share one bandwidth cap per direction (a full-duplex link:
//! one FIFO serializer for client -> registry, one for registry -> client).
//! It counts connections, HTTP requests (parsing request heads and bodies on
//! plain HTTP; a TLS ClientHello makes a connection opaque) and bytes each
//! way. It does not alter, answer or retry anything: bytes pass through
//! unchanged, and it knows nothing of registries beyond HTTP/1.1 framing.
//!
//! Plain std threads, as the other fixtures: per connection, a reader and a
//! writer thread each way, joined by a channel of (deliver-at, bytes).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The shape of the link.
#[derive(Clone, Copy, Debug)]
pub struct LinkShape {
    /// Round-trip time; each direction delays by half of it.
    pub rtt: Duration,
    /// Bandwidth cap per direction, shared by all connections, in bits/s.
    pub bits_per_sec: u64,
}

impl Default for LinkShape {
    /// 40 ms and 200 Mbit/s: a CI runner pushing to a public registry.
    fn default() -> LinkShape {
        LinkShape {
            rtt: Duration::from_millis(40),
            bits_per_sec: 200_000_000,
        }
    }
}

/// What went through the relay so far (cumulative; subtract two readings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperStats {
    pub connections: u64,
    /// HTTP requests sent by clients (heads parsed on plain HTTP).
    pub requests: u64,
    /// Bytes client -> registry, heads included.
    pub bytes_up: u64,
    /// Bytes registry -> client.
    pub bytes_down: u64,
    /// From the first request-body byte client -> registry to the last,
    /// since the last [`Shaper::open_window`]: the span a push uploads in.
    pub body_window: Duration,
    /// Request-body bytes client -> registry in that span.
    pub body_bytes_up: u64,
}

/// The counters are subtracted; the body window is the later reading's
/// (it counts from the last [`Shaper::open_window`]).
impl std::ops::Sub for ShaperStats {
    type Output = ShaperStats;
    fn sub(self, o: ShaperStats) -> ShaperStats {
        ShaperStats {
            connections: self.connections - o.connections,
            requests: self.requests - o.requests,
            bytes_up: self.bytes_up - o.bytes_up,
            bytes_down: self.bytes_down - o.bytes_down,
            body_window: self.body_window,
            body_bytes_up: self.body_bytes_up - o.body_bytes_up,
        }
    }
}

/// One direction of the link: a FIFO serializer at a fixed rate. Each chunk
/// takes the link from when it is free (or now) for `len / rate`.
struct Link {
    bytes_per_sec: f64,
    free_at: Mutex<Instant>,
}

impl Link {
    /// Reserve the link for `len` bytes; when their last byte is sent.
    fn reserve(&self, len: usize) -> Instant {
        let mut free_at = self.free_at.lock().expect("link poisoned");
        let start = (*free_at).max(Instant::now());
        *free_at = start + Duration::from_secs_f64(len as f64 / self.bytes_per_sec);
        *free_at
    }
}

struct Shared {
    upstream: String,
    shape: LinkShape,
    up: Link,
    down: Link,
    stop: AtomicBool,
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    body_bytes_up: AtomicU64,
    /// When the relay started: the origin of the two instants below.
    epoch: Instant,
    /// Nanoseconds after `epoch` when the window's first request-body
    /// byte went onto the link (u64::MAX: none yet), and when its last
    /// one left it.
    first_body: AtomicU64,
    last_body: AtomicU64,
}

impl Shared {
    /// Body bytes of one chunk took the link from `start` to `end`.
    fn note_body(&self, start: Instant, end: Instant) {
        let ns = |t: Instant| t.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.first_body.fetch_min(ns(start), Ordering::SeqCst);
        self.last_body.fetch_max(ns(end), Ordering::SeqCst);
    }
}

/// A running shaping relay; stopped on drop (open connections end with
/// their peers).
pub struct Shaper {
    addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Shaper {
    /// Listen on `127.0.0.1:0` and relay every connection to `upstream`
    /// (`HOST:PORT`) through a link of `shape`.
    pub fn start(upstream: &str, shape: LinkShape) -> io::Result<Shaper> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let rate = shape.bits_per_sec.max(8) as f64 / 8.0;
        let link = |rate| Link {
            bytes_per_sec: rate,
            free_at: Mutex::new(Instant::now()),
        };
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            shape,
            up: link(rate),
            down: link(rate),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            body_bytes_up: AtomicU64::new(0),
            epoch: Instant::now(),
            first_body: AtomicU64::new(u64::MAX),
            last_body: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    let _ = relay(conn, s);
                });
            }
        });
        Ok(Shaper {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `127.0.0.1:PORT` to give the client as the registry.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn shape(&self) -> LinkShape {
        self.shared.shape
    }

    pub fn stats(&self) -> ShaperStats {
        let s = &self.shared;
        let (first, last) = (
            s.first_body.load(Ordering::SeqCst),
            s.last_body.load(Ordering::SeqCst),
        );
        ShaperStats {
            connections: s.connections.load(Ordering::SeqCst),
            requests: s.requests.load(Ordering::SeqCst),
            bytes_up: s.bytes_up.load(Ordering::SeqCst),
            bytes_down: s.bytes_down.load(Ordering::SeqCst),
            body_window: Duration::from_nanos(last.saturating_sub(first)),
            body_bytes_up: s.body_bytes_up.load(Ordering::SeqCst),
        }
    }

    /// Start a new body window (see [`ShaperStats::body_window`]): before
    /// a measured run.
    pub fn open_window(&self) {
        self.shared.first_body.store(u64::MAX, Ordering::SeqCst);
        self.shared.last_body.store(0, Ordering::SeqCst);
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay(client: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    let accepted = Instant::now();
    shared.connections.fetch_add(1, Ordering::SeqCst);
    let upstream = TcpStream::connect(&shared.upstream)?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    // The client's first byte leaves after its SYN / SYN-ACK round trip.
    let first = accepted + shared.shape.rtt;
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let s = shared.clone();
    let up = thread::spawn(move || pump(client, upstream, &s, true, first));
    pump(u2, c2, &shared, false, accepted);
    let _ = up.join();
    Ok(())
}

/// Move bytes `from` -> `to` through one direction of the link: the reader
/// waits for the link (so a fast sender is held back, as by TCP's window),
/// the writer delivers each chunk half a round trip later.
fn pump(mut from: TcpStream, to: TcpStream, shared: &Shared, up: bool, not_before: Instant) {
    let (link, bytes) = if up {
        (&shared.up, &shared.bytes_up)
    } else {
        (&shared.down, &shared.bytes_down)
    };
    let delay = shared.shape.rtt / 2;
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut to_w = to.try_clone().expect("clone socket");
    let writer = thread::spawn(move || {
        for (at, chunk) in rx {
            sleep_until(at);
            if chunk.is_empty() || to_w.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to_w.shutdown(Shutdown::Write);
    });
    let mut parser = RequestCounter::default();
    let mut last = not_before + delay;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            let _ = tx.send((last, Vec::new()));
            break;
        }
        bytes.fetch_add(n as u64, Ordering::SeqCst);
        let mut body = 0;
        if up {
            let (heads, b) = parser.feed(&buf[..n]);
            shared.requests.fetch_add(heads, Ordering::SeqCst);
            shared.body_bytes_up.fetch_add(b, Ordering::SeqCst);
            body = b;
        }
        let sent = link.reserve(n);
        if body > 0 {
            let took = Duration::from_secs_f64(n as f64 / link.bytes_per_sec);
            shared.note_body(sent - took, sent);
        }
        sleep_until(sent);
        last = last.max(sent + delay);
        if tx.send((last, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Read);
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// Where a client's byte stream is in HTTP/1.1 framing.
#[derive(Default)]
enum Framing {
    /// In a request head (bytes so far).
    #[default]
    Start,
    Head(Vec<u8>),
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    Trailer(Vec<u8>),
    /// Not plain HTTP (TLS), or a head past any sane size: not parsed.
    Opaque,
}

/// Counts the request heads in a client's byte stream.
#[derive(Default)]
struct RequestCounter {
    state: Framing,
}

const MAX_HEAD: usize = 256 << 10;

impl RequestCounter {
    /// Feed the next bytes; how many request heads they completed, and how
    /// many of them were request-body bytes (chunk framing included).
    fn feed(&mut self, mut buf: &[u8]) -> (u64, u64) {
        let (mut heads, mut body) = (0, 0);
        while !buf.is_empty() {
            match &mut self.state {
                Framing::Opaque => return (heads, body),
                Framing::Start => {
                    self.state = if buf[0] == 0x16 {
                        Framing::Opaque
                    } else {
                        Framing::Head(Vec::new())
                    };
                }
                Framing::Head(head) => {
                    let (line, rest) = take_line(head, buf);
                    buf = rest;
                    if !line {
                        if head.len() > MAX_HEAD {
                            self.state = Framing::Opaque;
                        }
                        continue;
                    }
                    if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
                        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
                        if text.trim().is_empty() {
                            head.clear(); // a stray CRLF between requests
                            continue;
                        }
                        heads += 1;
                        self.state = next_after_head(&text);
                    }
                }
                Framing::Body(left) => {
                    let n = (*left).min(buf.len() as u64);
                    body += n;
                    *left -= n;
                    buf = &buf[n as usize..];
                    if *left == 0 {
                        self.state = Framing::Start;
                    }
                }
                Framing::ChunkSize(line) => {
                    let (done, rest) = take_line(line, buf);
                    buf = rest;
                    if done {
                        let text = String::from_utf8_lossy(line);
                        let hex = text.trim().split(';').next().unwrap_or("").trim();
                        self.state = match u64::from_str_radix(hex, 16) {
                            Ok(0) => Framing::Trailer(Vec::new()),
                            // The chunk and the CRLF after it.
                            Ok(n) => Framing::ChunkData(n + 2),
                            Err(_) => Framing::Opaque,
                        };
                    } else if line.len() > MAX_HEAD {
                        self.state = Framing::Opaque;
                    }
                }
                Framing::ChunkData(left) => {
                    let n = (*left).min(buf.len() as u64);
                    body += n;
                    *left -= n;
                    buf = &buf[n as usize..];
                    if *left == 0 {
                        self.state = Framing::ChunkSize(Vec::new());
                    }
                }
                Framing::Trailer(line) => {
                    let (done, rest) = take_line(line, buf);
                    buf = rest;
                    if done {
                        self.state = if line.trim_ascii().is_empty() {
                            Framing::Start
                        } else {
                            Framing::Trailer(Vec::new())
                        };
                    } else if line.len() > MAX_HEAD {
                        self.state = Framing::Opaque;
                    }
                }
            }
        }
        (heads, body)
    }
}

/// Append `buf` to `acc` up to and including the first `\n`; whether one
/// was found, and the bytes after it. For heads, `acc` keeps every line.
fn take_line<'a>(acc: &mut Vec<u8>, buf: &'a [u8]) -> (bool, &'a [u8]) {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            acc.extend_from_slice(&buf[..=i]);
            (true, &buf[i + 1..])
        }
        None => {
            acc.extend_from_slice(buf);
            (false, &[])
        }
    }
}

/// The framing of the body after a request head (lower-cased text).
fn next_after_head(head: &str) -> Framing {
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return Framing::ChunkSize(Vec::new());
    }
    match header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Some(n) if n > 0 => Framing::Body(n),
        _ => Framing::Start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_with_length_chunked_and_empty_bodies_split_anywhere() {
        let stream = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n\
PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /\
PATCH /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nPUT\r\n4;x=y\r\n\r\n\r\n\r\n0\r\n\r\n\
HEAD /c HTTP/1.1\r\n\r\n";
        for split in [1, 2, 7, 64, stream.len()] {
            let mut c = RequestCounter::default();
            let (n, body) = stream
                .chunks(split)
                .map(|part| c.feed(part))
                .fold((0, 0), |(h, b), (h2, b2)| (h + h2, b + b2));
            assert_eq!(n, 4, "split every {split}");
            // "GET /", and the chunks "PUT" and "\r\n\r\n" with their CRLFs.
            assert_eq!(body, 5 + 5 + 6, "split every {split}");
        }
        let mut tls = RequestCounter::default();
        assert_eq!(tls.feed(b"\x16\x03\x01GET / HTTP/1.1\r\n\r\n"), (0, 0));
    }

    #[test]
    fn bytes_pass_through_unchanged_both_ways() {
        // An echo server upstream.
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        thread::spawn(move || {
            let (mut conn, _) = echo.accept().unwrap();
            let mut back = conn.try_clone().unwrap();
            io::copy(&mut conn, &mut back).unwrap();
        });
        let shape = LinkShape {
            rtt: Duration::from_millis(2),
            bits_per_sec: 800_000_000,
        };
        let shaper = Shaper::start(&upstream, shape).unwrap();
        let mut conn = TcpStream::connect(shaper.addr()).unwrap();
        let mut payload = b"POST /x HTTP/1.1\r\nContent-Length: 300000\r\n\r\n".to_vec();
        payload.extend((0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        let mut reader = conn.try_clone().unwrap();
        let expect = payload.len();
        let got = thread::spawn(move || {
            let mut got = vec![0u8; expect];
            reader.read_exact(&mut got).unwrap();
            got
        });
        conn.write_all(&payload).unwrap();
        assert_eq!(got.join().unwrap(), payload);
        conn.shutdown(Shutdown::Write).unwrap();
        let stats = shaper.stats();
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.requests, 1);
        assert_eq!(stats.bytes_up, payload.len() as u64);
        assert_eq!(stats.bytes_down, payload.len() as u64);
        assert_eq!(stats.body_bytes_up, 300_000);
        assert!(stats.body_window > Duration::ZERO);
    }
}
