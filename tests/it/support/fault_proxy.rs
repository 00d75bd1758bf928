//! A fault-injecting HTTP proxy on 127.0.0.1, for testing the client and the cycle against a
//! real SCIM server behind an unreliable network: answers 429 (with `Retry-After`), 500 or
//! 503 without forwarding, resets the TCP connection, forwards and then drops the connection
//! without answering (a lost response), or forwards slowly. Draws come from a seeded RNG, so
//! a run is reproducible up to the order in which concurrent requests arrive.
//!
//! One request per connection (it answers `Connection: close`), plain HTTP/1.1, bodies by
//! `Content-Length`: what the SCIM client sends.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Per-mille probabilities of each fault; the rest is forwarded untouched.
#[derive(Debug, Clone, Copy)]
pub struct FaultMix {
    pub throttle_429: u32,
    pub error_500: u32,
    pub error_503: u32,
    pub reset: u32,
    pub lost_response: u32,
    pub slow: u32,
    /// How long a slow request is held before it is forwarded.
    pub slow_by: Duration,
}

impl FaultMix {
    /// The mix of the issue: about a quarter of the requests fault.
    pub fn issue9() -> FaultMix {
        FaultMix {
            throttle_429: 80,
            error_500: 50,
            error_503: 30,
            reset: 30,
            lost_response: 30,
            slow: 20,
            slow_by: Duration::from_millis(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Throttle,
    Error500,
    Error503,
    Reset,
    LostResponse,
    Slow,
    None,
}

/// What the proxy did, by kind.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub requests: AtomicU64,
    pub faults: AtomicU64,
    pub resets: AtomicU64,
    pub lost: AtomicU64,
}

struct Shared {
    upstream: String,
    mix: FaultMix,
    rng: Mutex<StdRng>,
    http: reqwest::Client,
    counts: ProxyCounts,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, mix: FaultMix, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            mix,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            counts: ProxyCounts::default(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(s, socket).await;
                });
            }
        });
        FaultProxy {
            base: format!("http://{addr}"),
            shared,
            task,
        }
    }

    pub fn counts(&self) -> &ProxyCounts {
        &self.shared.counts
    }

    /// How many faults were injected so far.
    pub fn faults(&self) -> u64 {
        self.shared.counts.faults.load(Ordering::SeqCst)
    }
}

fn draw(s: &Shared) -> Fault {
    let n: u32 = s.rng.lock().unwrap().gen_range(0..1000);
    let m = s.mix;
    let mut edge = 0;
    for (p, f) in [
        (m.throttle_429, Fault::Throttle),
        (m.error_500, Fault::Error500),
        (m.error_503, Fault::Error503),
        (m.reset, Fault::Reset),
        (m.lost_response, Fault::LostResponse),
        (m.slow, Fault::Slow),
    ] {
        edge += p;
        if n < edge {
            return f;
        }
    }
    Fault::None
}

/// The request as read from the socket.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

async fn respond(
    socket: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} Fault\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    socket.write_all(out.as_bytes()).await?;
    socket.write_all(body).await?;
    socket.shutdown().await
}

fn scim_error(status: u16) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "detail": "injected by the fault proxy",
    }))
    .unwrap()
}

/// Drop the connection with a TCP reset (linger 0), not a clean close.
// A zero linger never blocks on drop (the deprecation is about non-zero values): it sends RST.
#[allow(deprecated)]
fn reset(socket: TcpStream) {
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(socket);
}

async fn serve(s: Arc<Shared>, mut socket: TcpStream) -> std::io::Result<()> {
    let Some(req) = read_request(&mut socket).await else {
        return Ok(());
    };
    s.counts.requests.fetch_add(1, Ordering::SeqCst);
    let fault = draw(&s);
    if fault != Fault::None {
        s.counts.faults.fetch_add(1, Ordering::SeqCst);
    }
    let json = [("Content-Type", "application/scim+json".to_string())];
    match fault {
        Fault::Throttle => {
            let headers = [json[0].clone(), ("Retry-After", "0".to_string())];
            return respond(&mut socket, 429, &headers, &scim_error(429)).await;
        }
        Fault::Error500 => return respond(&mut socket, 500, &json, &scim_error(500)).await,
        Fault::Error503 => return respond(&mut socket, 503, &json, &scim_error(503)).await,
        Fault::Reset => {
            s.counts.resets.fetch_add(1, Ordering::SeqCst);
            reset(socket);
            return Ok(());
        }
        Fault::Slow => tokio::time::sleep(s.mix.slow_by).await,
        Fault::LostResponse | Fault::None => {}
    }
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut forward = s
        .http
        .request(method, format!("{}{}", s.upstream, req.target))
        .body(req.body);
    for (k, v) in &req.headers {
        if matches!(k.as_str(), "authorization" | "content-type" | "accept") {
            forward = forward.header(k.as_str(), v.as_str());
        }
    }
    let answer = match forward.send().await {
        Ok(a) => a,
        Err(_) => return respond(&mut socket, 502, &json, &scim_error(502)).await,
    };
    let status = answer.status().as_u16();
    let mut headers: Vec<(&str, String)> = Vec::new();
    for name in ["content-type", "location", "etag"] {
        if let Some(v) = answer.headers().get(name).and_then(|v| v.to_str().ok()) {
            headers.push((name, v.to_string()));
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    if fault == Fault::LostResponse {
        // The upstream applied the request; the client never hears of it.
        s.counts.lost.fetch_add(1, Ordering::SeqCst);
        reset(socket);
        return Ok(());
    }
    respond(&mut socket, status, &headers, &body).await
}
