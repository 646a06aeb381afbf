//! A fault-injecting HTTP/1.1 reverse proxy to put in front of a real
//! registry in tests: on a seeded schedule it answers 5xx/429 (with or
//! without `Retry-After`), resets or closes connections in the middle of a
//! request body, stalls, and truncates the registry's answers; it can also
//! refuse bodies above a size (413, as nginx's `client_max_body_size`),
//! announce `OCI-Chunk-Min-Length`, and slow every request down. Hostile
//! answers too: a body trickled a few bytes a second, a body padded past
//! a size (with or without `Content-Length`), a redirect to itself. It can
//! refuse `GET` on upload sessions (405, a registry that cannot say how much
//! of an upload it holds) and counts the request body bytes it received
//! and passed on, the measure of what an upload cost.
//!
//! Plain std threads and `TcpStream`s: one thread per client connection
//! (kept alive between requests), a fresh upstream connection per request.
//! The `Host` header is passed on unchanged, so the registry builds upload
//! `Location`s for the proxy; absolute ones naming the registry itself are
//! rewritten to the proxy all the same. Nothing else is altered.
//!
//! ```no_run
//! use kvpush_fixtures::{FaultPlan, FaultProxy, Registry, RegistryKind};
//! let registry = Registry::start(RegistryKind::Plain);
//! let proxy = FaultProxy::start(registry.addr(), FaultPlan::flaky(7, 0.2));
//! // push to proxy.addr(), verify against registry.addr()
//! ```

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::chunked;
use crate::prng::Rng;

/// What the proxy may do to one request instead of passing it on faithfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Read the whole request, do not forward it, answer `code` (with
    /// `Retry-After: secs` when given) and keep the connection.
    Status { code: u16, retry_after: Option<u32> },
    /// Read the head and half of the body, then reset the connection (RST).
    Reset,
    /// Read the head and half of the body, then close (the client sees EOF).
    Eof,
    /// Read the head and half of the body, then neither read nor answer
    /// until the client gives up or [`FaultPlan::stall_limit`] passes.
    Stall,
    /// Forward the request, then send only the first half of the
    /// registry's answer and close: the registry did the work, the client
    /// does not know it.
    Truncate,
    /// Forward the request, send the answer's head at once and its body
    /// `bytes_per_sec` bytes a second, until [`FaultPlan::stall_limit`].
    Trickle { bytes_per_sec: u32 },
    /// Forward the request and send the answer's body padded with spaces
    /// (still valid JSON) to `len` bytes; with `Content-Length` when
    /// `declared`, else ended by closing the connection.
    Oversize { len: u64, declared: bool },
    /// Read the request and answer `307` to the same URI, for ever.
    RedirectLoop,
}

/// How the proxy behaves; swap it while running with [`FaultProxy::set_plan`].
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Seed of the schedule: which request (in arrival order) gets which fault.
    pub seed: u64,
    /// Chance, 0.0 to 1.0, that a request gets a fault.
    pub rate: f64,
    /// Faults used in turn (so that each kind occurs once there have been
    /// as many faults as kinds); the seed decides which requests get them.
    pub faults: Vec<Fault>,
    /// Faults only for requests with this method whose URI contains this
    /// text, e.g. `("PUT", "/blobs/uploads/")` for blob uploads.
    pub only: Option<(String, String)>,
    /// Requests passed on untouched before any fault (e.g. the `GET /v2/` ping).
    pub spare_first: usize,
    /// Answer `413 Request Entity Too Large` to bodies larger than this.
    pub body_limit: Option<u64>,
    /// Add `OCI-Chunk-Min-Length` to the answers that open upload sessions.
    pub chunk_min_length: Option<u64>,
    /// Wait this long before handling each request.
    pub latency: Duration,
    /// Read request bodies at most this many bytes per second.
    pub bandwidth: Option<u64>,
    /// Longest a stalled connection is held.
    pub stall_limit: Duration,
    /// Replace the `realm` of the registry's `WWW-Authenticate` challenges
    /// with this URL (a token service elsewhere, say on another host).
    pub realm: Option<String>,
    /// Answer `405 Method Not Allowed` to every `GET` on an upload session
    /// (`/blobs/uploads/<id>`), as a registry without resumable uploads.
    pub refuse_upload_status: bool,
}

impl Default for FaultPlan {
    /// A faithful proxy: no fault, no limit, no delay.
    fn default() -> Self {
        FaultPlan {
            seed: 1,
            rate: 0.0,
            faults: Vec::new(),
            only: None,
            spare_first: 0,
            body_limit: None,
            chunk_min_length: None,
            latency: Duration::ZERO,
            bandwidth: None,
            stall_limit: Duration::from_secs(60),
            realm: None,
            refuse_upload_status: false,
        }
    }
}

impl FaultPlan {
    /// Every kind of fault, on `rate` of the requests after the first.
    pub fn flaky(seed: u64, rate: f64) -> FaultPlan {
        let status = |code, retry_after| Fault::Status { code, retry_after };
        FaultPlan {
            seed,
            rate,
            faults: vec![
                status(500, None),
                status(502, None),
                status(503, None),
                status(504, None),
                status(429, None),
                status(429, Some(1)),
                status(503, Some(1)),
                Fault::Reset,
                Fault::Eof,
                Fault::Truncate,
                Fault::Stall,
            ],
            spare_first: 1,
            ..FaultPlan::default()
        }
    }

    /// A registry that answers the first `spare_first` requests, then only
    /// `503` with `Retry-After: retry_after` (if given).
    pub fn down(spare_first: usize, retry_after: Option<u32>) -> FaultPlan {
        FaultPlan {
            rate: 1.0,
            faults: vec![Fault::Status {
                code: 503,
                retry_after,
            }],
            spare_first,
            ..FaultPlan::default()
        }
    }
}

/// What the proxy did with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed on; the registry answered this status.
    Forwarded(u16),
    /// A fault was injected.
    Injected(Fault),
    /// Refused with 413 (body over [`FaultPlan::body_limit`]).
    TooLarge,
    /// A `GET` on an upload session refused with 405
    /// ([`FaultPlan::refuse_upload_status`]).
    StatusRefused,
    /// The client went away, or the registry could not be reached.
    Broken(String),
}

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyEvent {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// Body length (`Content-Length`, or the decoded length of a chunked
    /// body the proxy read; 0 when none).
    pub body_len: u64,
    /// What was done with it.
    pub outcome: Outcome,
}

struct Shared {
    upstream: String,
    addr: String,
    plan: Mutex<(FaultPlan, Rng)>,
    seq: AtomicUsize,
    faults_done: AtomicUsize,
    events: Mutex<Vec<ProxyEvent>>,
    stop: AtomicBool,
    /// Request body bytes read from clients, and passed on to the registry.
    received: Arc<AtomicU64>,
    forwarded: AtomicU64,
}

/// A running proxy on 127.0.0.1; stops accepting on drop.
pub struct FaultProxy {
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listen on a free loopback port and pass requests to `upstream`
    /// (`127.0.0.1:PORT` of a plain-HTTP registry) according to `plan`.
    pub fn start(upstream: &str, plan: FaultPlan) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        // A small receive buffer, so that a proxy that stops reading
        // (stall, throttle) soon blocks the client's writes, as a real
        // congested link would.
        let _ = socket2::SockRef::from(&listener).set_recv_buffer_size(64 * 1024);
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local addr").to_string();
        let rng = Rng::derived(plan.seed, "faultproxy");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            addr,
            plan: Mutex::new((plan, rng)),
            seq: AtomicUsize::new(0),
            faults_done: AtomicUsize::new(0),
            events: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            received: Arc::default(),
            forwarded: AtomicU64::new(0),
        });
        let s = shared.clone();
        thread::spawn(move || accept_loop(listener, s));
        FaultProxy { shared }
    }

    /// `127.0.0.1:PORT` to push to.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Behave according to `plan` from the next request on (the schedule
    /// restarts from `plan.seed`; `spare_first` counts from now).
    pub fn set_plan(&self, plan: FaultPlan) {
        let rng = Rng::derived(plan.seed, "faultproxy");
        let mut guard = self.shared.plan.lock().expect("plan poisoned");
        *guard = (plan, rng);
        self.shared.seq.store(0, Ordering::SeqCst);
        self.shared.faults_done.store(0, Ordering::SeqCst);
    }

    /// Every request seen so far, in arrival order.
    pub fn events(&self) -> Vec<ProxyEvent> {
        self.shared.events.lock().expect("events poisoned").clone()
    }

    /// Forget the requests seen so far.
    pub fn clear_events(&self) {
        self.shared.events.lock().expect("events poisoned").clear();
    }

    /// Request body bytes read from clients so far, whatever became of
    /// them (passed on, or read and dropped by a fault): what the clients
    /// sent, as far as the network took it.
    pub fn received_body_bytes(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    /// Request body bytes passed on to the registry so far.
    pub fn forwarded_body_bytes(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// How many requests got a fault (413s not counted).
    pub fn injected(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Injected(_)))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let s = shared.clone();
                thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    serve(conn, &s);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// An HTTP request head.
struct Head {
    method: String,
    uri: String,
    /// Header lines as received (name, value).
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn body_len(&self) -> u64 {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A client connection with whatever was read past the current request.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Decoded length of the last chunked request body read.
    chunked_len: Option<u64>,
    /// The proxy's count of request body bytes read.
    received: Arc<AtomicU64>,
}

/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

impl Conn {
    /// Read one request head; `None` when the client closed or idled out,
    /// or opened a TLS handshake (kvpush tries HTTPS first): refused at
    /// once, as a plain-HTTP server would, and not counted as a request.
    fn read_head(&mut self) -> Option<Head> {
        loop {
            if self.buf.first() == Some(&TLS_HANDSHAKE) {
                return None;
            }
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = text.split("\r\n");
                let mut first = lines.next()?.split(' ');
                let method = first.next()?.to_string();
                let uri = first.next()?.to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                return Some(Head {
                    method,
                    uri,
                    headers,
                });
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Pass `n` body bytes to `sink`, at most `bandwidth` bytes per second.
    fn read_body(
        &mut self,
        n: u64,
        bandwidth: Option<u64>,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let started = Instant::now();
        let mut done = 0u64;
        let received = self.received.clone();
        chunked::read_sized(self, n, |data| {
            received.fetch_add(data.len() as u64, Ordering::Relaxed);
            sink(data)?;
            done += data.len() as u64;
            throttle(started, done, bandwidth);
            Ok(())
        })
    }

    /// A `Transfer-Encoding: chunked` body, decoded, read at most
    /// `bandwidth` bytes per second.
    fn read_chunked(&mut self, bandwidth: Option<u64>) -> io::Result<Vec<u8>> {
        let started = Instant::now();
        let mut body = Vec::new();
        let received = self.received.clone();
        chunked::read_chunked(self, |data| {
            received.fetch_add(data.len() as u64, Ordering::Relaxed);
            body.extend_from_slice(data);
            throttle(started, body.len() as u64, bandwidth);
            Ok(())
        })?;
        Ok(body)
    }
}

/// What was read past the current request first, then the socket.
impl Read for Conn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Conn {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.buf.is_empty() {
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(&self.buf)
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }
}

/// Sleep until `done` bytes since `started` are within `bandwidth` bytes
/// per second.
fn throttle(started: Instant, done: u64, bandwidth: Option<u64>) {
    if let Some(rate) = bandwidth {
        let due = Duration::from_secs_f64(done as f64 / rate.max(1) as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(code: u16) -> &'static str {
    match code {
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

fn error_response(code: u16, retry_after: Option<u32>, close: bool) -> Vec<u8> {
    let body = format!(
        r#"{{"errors":[{{"code":"UNAVAILABLE","message":"fault injected by the kvpush test proxy ({code})"}}]}}"#
    );
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        reason(code),
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("Retry-After: {secs}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        chunked_len: None,
        received: shared.received.clone(),
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(head) = conn.read_head() else {
            return;
        };
        let (plan, fault) = {
            let mut guard = shared.plan.lock().expect("plan poisoned");
            let n = shared.seq.fetch_add(1, Ordering::SeqCst);
            let (plan, rng) = &mut *guard;
            let roll = rng.next_u64() as f64 / u64::MAX as f64;
            let eligible = plan.only.as_ref().is_none_or(|(method, text)| {
                head.method.eq_ignore_ascii_case(method) && head.uri.contains(text.as_str())
            });
            let fault =
                if n >= plan.spare_first && eligible && roll < plan.rate && !plan.faults.is_empty()
                {
                    let k = shared.faults_done.fetch_add(1, Ordering::SeqCst);
                    Some(plan.faults[k % plan.faults.len()])
                } else {
                    None
                };
            (plan.clone(), fault)
        };
        let body_len = head.body_len();
        conn.chunked_len = None;
        let record = |outcome: Outcome, body_len: u64| {
            shared
                .events
                .lock()
                .expect("events poisoned")
                .push(ProxyEvent {
                    method: head.method.clone(),
                    uri: head.uri.clone(),
                    body_len,
                    outcome,
                });
        };
        if !plan.latency.is_zero() {
            thread::sleep(plan.latency);
        }
        let too_large = plan.body_limit.is_some_and(|limit| body_len > limit);
        let fault = fault.filter(|_| !too_large);
        // Faults are logged as they start: a stall lasts a while.
        if let Some(f) = fault {
            record(Outcome::Injected(f), body_len);
        }
        let refuse_status = plan.refuse_upload_status
            && head.method == "GET"
            && head.uri.contains("/blobs/uploads/");
        let keep = if refuse_status && fault.is_none() {
            record(Outcome::StatusRefused, body_len);
            discard_body(&mut conn, &head)
                .and_then(|()| conn.stream.write_all(&error_response(405, None, false)))
                .is_ok()
        } else if too_large {
            // Like nginx: answer at once, then drain what the client still
            // sends so that it reads the answer instead of a reset.
            record(Outcome::TooLarge, body_len);
            let _ = conn.stream.write_all(&error_response(413, None, true));
            let _ = conn.read_body(body_len, None, |_| Ok(()));
            false
        } else {
            let handled = handle(&mut conn, &head, &plan, fault, shared);
            let body_len = conn.chunked_len.unwrap_or(body_len);
            match handled {
                Ok(Some(status)) if status == 413 && conn.chunked_len.is_some() => {
                    record(Outcome::TooLarge, body_len);
                    false
                }
                Ok(Some(status)) => {
                    record(Outcome::Forwarded(status), body_len);
                    true
                }
                Ok(None) => {
                    fault.is_some_and(|f| matches!(f, Fault::Status { .. } | Fault::RedirectLoop))
                }
                Err(e) => {
                    if fault.is_none() {
                        record(Outcome::Broken(e.to_string()), body_len);
                    }
                    false
                }
            }
        };
        if !keep || head.wants_close() {
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Handle one request (413s aside): inject `fault`, or forward and return
/// the registry's status.
fn handle(
    conn: &mut Conn,
    head: &Head,
    plan: &FaultPlan,
    fault: Option<Fault>,
    shared: &Shared,
) -> io::Result<Option<u16>> {
    let declared = head.body_len();
    match fault {
        Some(Fault::Status { code, retry_after }) => {
            discard_body(conn, head)?;
            conn.stream
                .write_all(&error_response(code, retry_after, false))?;
            return Ok(None);
        }
        Some(f @ (Fault::Reset | Fault::Eof | Fault::Stall)) => {
            conn.read_body(declared / 2, plan.bandwidth, |_| Ok(()))?;
            if f == Fault::Stall {
                let until = Instant::now() + plan.stall_limit;
                while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(100));
                }
            }
            if f == Fault::Reset {
                let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
            } else {
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            return Ok(None);
        }
        Some(Fault::RedirectLoop) => {
            discard_body(conn, head)?;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
                head.uri
            );
            conn.stream.write_all(answer.as_bytes())?;
            return Ok(None);
        }
        Some(Fault::Truncate | Fault::Trickle { .. } | Fault::Oversize { .. }) | None => {}
    }

    // Forward on a fresh upstream connection.
    let mut up = TcpStream::connect(&shared.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.uri);
    for (k, v) in &head.headers {
        let lower = k.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length"
        ) {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked_body = if head.chunked() {
        let body = conn.read_chunked(plan.bandwidth)?;
        conn.chunked_len = Some(body.len() as u64);
        // Like nginx's client_max_body_size, for bodies without a length.
        if plan
            .body_limit
            .is_some_and(|limit| body.len() as u64 > limit)
        {
            conn.stream.write_all(&error_response(413, None, true))?;
            return Ok(Some(413));
        }
        Some(body)
    } else {
        None
    };
    let body_len = chunked_body.as_ref().map_or(declared, |b| b.len() as u64);
    if body_len > 0 || head.header("content-length").is_some() {
        out.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    match &chunked_body {
        Some(body) => {
            up.write_all(body)?;
            shared
                .forwarded
                .fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        None => conn.read_body(declared, plan.bandwidth, |b| {
            up.write_all(b)?;
            shared
                .forwarded
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            Ok(())
        })?,
    }
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;

    if fault == Some(Fault::Truncate) {
        conn.stream.write_all(&raw[..raw.len() / 2])?;
        let _ = conn.stream.shutdown(Shutdown::Both);
        return Ok(None);
    }
    let (response, status) = reframe(&raw, head, plan, shared)?;
    match fault {
        Some(Fault::Trickle { bytes_per_sec }) => {
            trickle(conn, &response, bytes_per_sec, plan.stall_limit, shared)?;
            Ok(None)
        }
        Some(Fault::Oversize { len, declared }) => {
            conn.stream.write_all(&padded(&response, len, declared))?;
            if !declared {
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            Ok(None)
        }
        _ => {
            conn.stream.write_all(&response)?;
            Ok(Some(status))
        }
    }
}

/// Send `response` (as [`reframe`] made it): its head at once, its body
/// `rate` bytes a second, for at most `limit`; then close.
fn trickle(
    conn: &mut Conn,
    response: &[u8],
    rate: u32,
    limit: Duration,
    shared: &Shared,
) -> io::Result<()> {
    let end = find(response, b"\r\n\r\n").map_or(response.len(), |e| e + 4);
    conn.stream.write_all(&response[..end])?;
    let until = Instant::now() + limit;
    let pause = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    for byte in &response[end..] {
        if Instant::now() >= until || shared.stop.load(Ordering::SeqCst) {
            break;
        }
        conn.stream.write_all(std::slice::from_ref(byte))?;
        thread::sleep(pause);
    }
    let _ = conn.stream.shutdown(Shutdown::Both);
    Ok(())
}

/// `response` with its body padded with spaces to `len` bytes, framed by
/// `Content-Length` when `declared`, else by closing the connection.
fn padded(response: &[u8], len: u64, declared: bool) -> Vec<u8> {
    let end = find(response, b"\r\n\r\n").map_or(response.len(), |e| e + 4);
    let head = String::from_utf8_lossy(&response[..end]);
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    let mut body = response[end..].to_vec();
    body.resize((len as usize).max(body.len()), b' ');
    if declared {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    } else {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

fn discard_body(conn: &mut Conn, head: &Head) -> io::Result<()> {
    if head.chunked() {
        conn.read_chunked(None).map(|_| ())
    } else {
        conn.read_body(head.body_len(), None, |_| Ok(()))
    }
}

/// The registry's answer made fit for a kept-alive client connection:
/// framed by `Content-Length`, `Location` pointing at the proxy, and
/// `OCI-Chunk-Min-Length` added to upload sessions when the plan says so.
fn reframe(
    raw: &[u8],
    req: &Head,
    plan: &FaultPlan,
    shared: &Shared,
) -> io::Result<(Vec<u8>, u16)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("registry answer has no head"))?;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut body = raw[end + 4..].to_vec();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("registry answer has no status"))?;
    let mut headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let is_chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if is_chunked {
        body = chunked::dechunk(&body).map_err(|e| bad(&format!("bad chunked answer: {e}")))?;
    }
    let no_body = req.method == "HEAD" || status == 204 || status == 304;
    headers.retain(|(k, _)| {
        let k = k.to_ascii_lowercase();
        !(k == "connection" || k == "transfer-encoding" || (k == "content-length" && !no_body))
    });
    if !no_body {
        headers.push(("Content-Length".into(), body.len().to_string()));
    }
    let upstream_base = format!("http://{}", shared.upstream);
    for (k, v) in headers.iter_mut() {
        if k.eq_ignore_ascii_case("location") {
            if let Some(rest) = v.strip_prefix(&upstream_base) {
                *v = format!("http://{}{rest}", shared.addr);
            }
        }
    }
    if let Some(realm) = &plan.realm {
        for (k, v) in headers.iter_mut() {
            if k.eq_ignore_ascii_case("www-authenticate") {
                *v = with_realm(v, realm);
            }
        }
    }
    if let Some(min) = plan.chunk_min_length {
        if req.method == "POST" && req.uri.contains("/blobs/uploads/") && status == 202 {
            headers.push(("OCI-Chunk-Min-Length".into(), min.to_string()));
        }
    }
    let mut out = format!("{status_line}\r\n");
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !no_body {
        out.extend_from_slice(&body);
    }
    Ok((out, status))
}

/// A challenge with its `realm="..."` replaced by `realm`.
fn with_realm(challenge: &str, realm: &str) -> String {
    let Some(start) = challenge.find("realm=\"") else {
        return challenge.to_string();
    };
    let value = start + "realm=\"".len();
    let end = challenge[value..]
        .find('"')
        .map_or(challenge.len(), |e| value + e);
    format!("{}{realm}{}", &challenge[..value], &challenge[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_are_replaced() {
        assert_eq!(
            with_realm(
                r#"Bearer realm="http://127.0.0.1:1/token",service="s""#,
                "https://t.example/x"
            ),
            r#"Bearer realm="https://t.example/x",service="s""#
        );
    }

    #[test]
    fn flaky_plans_fault_about_their_rate() {
        let plan = FaultPlan::flaky(3, 0.2);
        let mut rng = Rng::derived(plan.seed, "faultproxy");
        let faults = (0..10_000)
            .filter(|_| (rng.next_u64() as f64 / u64::MAX as f64) < plan.rate)
            .count();
        assert!((1_700..2_300).contains(&faults), "{faults}");
    }
}
