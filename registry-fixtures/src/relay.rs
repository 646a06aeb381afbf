//! A relay in front of a [`Registry`] for tests of where credentials go.
//!
//! The *front* listener forwards every request to the registry as is, but
//! moves what real registries hand to blob storage onto a second origin
//! (another port, so another host as far as credentials go): the
//! `Location` of upload sessions is rewritten to point there, and blob
//! `HEAD`s are answered with a `307` redirect there. The *storage* listener
//! records the headers it receives and forwards to the registry with the
//! registry's own credentials added, as a presigned storage URL would
//! carry its own. One request per connection (`Connection: close`); TLS
//! handshakes (kvpush tries HTTPS first) are refused by closing.

use crate::chunked;
use crate::Registry;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Which listener saw a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The address given to the client as the registry.
    Front,
    /// The other origin, standing for blob storage.
    Storage,
}

/// One request a listener received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub origin: Origin,
    pub method: String,
    pub path: String,
    /// The request carried an `Authorization` header.
    pub authorization: bool,
}

struct Shared {
    registry: String,
    registry_auth: Option<String>,
    front: String,
    storage: String,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// A running relay; stopped on drop.
pub struct Relay {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Start a relay in front of `registry` (an http kind).
    pub fn start(registry: &Registry) -> io::Result<Relay> {
        let front = TcpListener::bind("127.0.0.1:0")?;
        let storage = TcpListener::bind("127.0.0.1:0")?;
        let shared = Arc::new(Shared {
            registry: registry.addr().to_string(),
            registry_auth: registry
                .credentials()
                .map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}")))),
            front: front.local_addr()?.to_string(),
            storage: storage.local_addr()?.to_string(),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let threads = [(front, Origin::Front), (storage, Origin::Storage)]
            .into_iter()
            .map(|(listener, origin)| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if shared.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let shared = shared.clone();
                        std::thread::spawn(move || {
                            let _ = serve(conn, origin, &shared);
                        });
                    }
                })
            })
            .collect();
        Ok(Relay { shared, threads })
    }

    /// `127.0.0.1:PORT` to give the client as the registry.
    pub fn addr(&self) -> &str {
        &self.shared.front
    }

    /// `127.0.0.1:PORT` of the storage origin.
    pub fn storage_addr(&self) -> &str {
        &self.shared.storage
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("poisoned").clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for addr in [&self.shared.front, &self.shared.storage] {
            let _ = TcpStream::connect(addr.as_str());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A request or response head: first line and headers, in order.
struct Head {
    line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: Option<String>) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            self.headers.push((name.to_string(), v));
        }
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut s = format!("{}\r\n", self.line);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        out.write_all(s.as_bytes())
    }
}

fn read_head(r: &mut impl BufRead) -> io::Result<Head> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Head {
        line: line.trim_end().to_string(),
        headers,
    })
}

fn serve(mut conn: TcpStream, origin: Origin, shared: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut first = [0u8; 1];
    if conn.peek(&mut first)? == 0 || first[0] == 0x16 {
        return Ok(()); // closed, or a TLS ClientHello: this relay is plain HTTP
    }
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = read_head(&mut reader)?;
    let mut parts = head.line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    shared.seen.lock().expect("poisoned").push(Seen {
        origin,
        method: method.clone(),
        path: path.clone(),
        authorization: head.get("authorization").is_some(),
    });
    let chunked = head
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        // Passed on with its length: the registry sees an ordinary body.
        let body = chunked::read_body(&mut reader)?;
        head.set("transfer-encoding", None);
        head.set("content-length", Some(body.len().to_string()));
        body
    } else {
        let len: usize = head
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        body
    };

    let is_blob = path.contains("/blobs/sha256:") && !path.contains("/uploads/");
    if origin == Origin::Front && method == "HEAD" && is_blob {
        let to = format!("http://{}{path}", shared.storage);
        return write!(
            conn,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    if origin == Origin::Storage {
        head.set("authorization", shared.registry_auth.clone());
    }
    head.set("connection", Some("close".into()));
    let mut upstream = TcpStream::connect(&shared.registry)?;
    head.write(&mut upstream)?;
    upstream.write_all(&body)?;
    let mut upstream = BufReader::new(upstream);
    let mut resp = read_head(&mut upstream)?;
    let mut rest = Vec::new();
    upstream.read_to_end(&mut rest)?;
    if origin == Origin::Front {
        if let Some(loc) = resp.get("location").map(String::from) {
            if loc.contains("/blobs/uploads/") {
                let path = loc
                    .strip_prefix(&format!("http://{}", shared.front))
                    .unwrap_or(&loc);
                resp.set("location", Some(format!("http://{}{path}", shared.storage)));
            }
        }
    }
    resp.set("connection", Some("close".into()));
    resp.write(&mut conn)?;
    conn.write_all(&rest)?;
    conn.flush()
}
