//! Shared helpers for the end-to-end tests: start the real `marquee` binary on an ephemeral port, talk to it over
//! real sockets.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running server; killed on drop (its data directory is removed then, unless it was given one).
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: mpsc::Receiver<String>,
    own_data_dir: Option<PathBuf>,
}

/// The secret e2e servers sign tokens with.
pub const TEST_SECRET: &str = "e2e-test-secret-0123456789";

/// A fresh, empty directory under the system temp dir.
pub fn temp_data_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("marquee-e2e-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

impl Server {
    /// Starts `marquee <args> --listen 127.0.0.1:0` with a fresh data directory and waits for its "listening
    /// on" line.
    pub fn start(args: &[&str]) -> Server {
        let dir = temp_data_dir("server");
        let mut s = Server::start_in(&dir, args);
        s.own_data_dir = Some(dir);
        s
    }

    /// Starts the server on an existing data directory (kept on drop).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_marquee"))
            .args(args)
            .args(if args.contains(&"--quic") { &[][..] } else { &["--quic", "127.0.0.1:0"][..] })
            .args(["--listen", "127.0.0.1:0", "--log", "info", "--auth-secret", TEST_SECRET])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start marquee");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        // The feed starts before the server listens, so a fast replay logs "replay finished" before "listening
        // on": the lines read here are handed on in `log` too.
        let mut early = Vec::new();
        let addr = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let addr = line
                        .split("listening on http")
                        .nth(1)
                        .map(|rest| rest.trim_start_matches('s').trim_start_matches("://"))
                        .map(|rest| rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap());
                    early.push(line);
                    if let Some(addr) = addr {
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("server did not print its address within 20 s");
                }
            }
        };
        let (tx, log) = mpsc::channel();
        early.into_iter().for_each(|l| tx.send(l).unwrap());
        std::thread::spawn(move || {
            for line in rx {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server { child, addr, log, own_data_dir: None }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Server {
    /// Sends SIGTERM and waits for the process to exit, `limit` at most after `since`; its exit status.
    pub async fn terminate_within(&mut self, since: Instant, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        self.exits_within(since, limit).await
    }

    /// Waits for the process to exit, `limit` at most after `since`.
    pub async fn exits_within(&mut self, since: Instant, limit: Duration) -> std::process::ExitStatus {
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(since.elapsed() < limit, "server still running {limit:?} after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.own_data_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Opens a WebSocket, optionally asking for a subprotocol.
pub async fn connect(server: &Server, protocol: Option<&str>) -> Ws {
    let mut req = server.ws_url().into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req))
        .await
        .expect("connect within 10 s")
        .expect("websocket handshake");
    ws
}

/// Opens a WebSocket whose socket has a small receive buffer, so a client that stops reading backs the
/// server up quickly.
pub async fn connect_small_rcvbuf(server: &Server) -> Ws {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(8 * 1024).unwrap();
    let stream = sock.connect(server.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(stream)).await.unwrap();
    ws
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Next batch of JSON events (skipping pings); panics after `secs` seconds.
pub async fn next_batch(ws: &mut Ws, secs: u64) -> Vec<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(secs), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {secs} s"))
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                return v.as_array().expect("every frame is a JSON array").clone();
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Collects events until `pred` holds for one of them (inclusive); panics after `secs`. Events after the match
/// in the same batch are dropped.
pub async fn events_until(ws: &mut Ws, secs: u64, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
        assert!(Instant::now() < deadline, "condition not met within {secs} s; got {} events", out.len());
        for e in next_batch(ws, left).await {
            let done = pred(&e);
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

/// `GET path` over a fresh TCP connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// Now as Unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// One HTTP request over a fresh connection: (status, JSON body or `Value::Null` when not JSON).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("answer within 20 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `POST /api/login` for `name`: the token.
pub async fn login(addr: SocketAddr, name: &str) -> String {
    let (status, v) = http(addr, "POST", "/api/login", None, &[], Some(&format!("{{\"name\":\"{name}\"}}"))).await;
    assert_eq!(status, 200, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// `POST /api/lots/{lot}/bids`.
pub async fn post_bid(addr: SocketAddr, token: &str, lot: &str, key: &str, amount: &str) -> (u16, Value) {
    let body = format!("{{\"amount\":\"{amount}\"}}");
    http(addr, "POST", &format!("/api/lots/{lot}/bids"), Some(token), &[("Idempotency-Key", key)], Some(&body)).await
}

/// Opens a WebSocket authenticated with `?access_token=`.
pub async fn connect_as(server: &Server, token: &str) -> Ws {
    let url = format!("{}?access_token={token}", server.ws_url());
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
        .expect("connect within 10 s")
        .expect("websocket handshake");
    ws
}

/// The type of a live event, or of the event a snapshot carries.
pub fn event_type(e: &Value) -> &str {
    if e["type"] == "snapshot" { e["event"].as_str().unwrap_or("snapshot") } else { e["type"].as_str().unwrap_or("") }
}

/// A WebSocket that keeps the events after a match for the next wait (unlike [`events_until`]).
pub struct Inbox {
    pub ws: Ws,
    buf: std::collections::VecDeque<Value>,
}

impl Inbox {
    pub fn new(ws: Ws) -> Inbox {
        Inbox { ws, buf: Default::default() }
    }

    pub async fn send(&mut self, v: Value) {
        send(&mut self.ws, v).await;
    }

    /// Events up to and including the first for which `pred` holds; panics after `secs`.
    pub async fn until(&mut self, secs: u64, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            while let Some(e) = self.buf.pop_front() {
                let done = pred(&e);
                out.push(e);
                if done {
                    return out;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now()).as_secs().max(1);
            assert!(Instant::now() < deadline, "condition not met within {secs} s; got {out:?}");
            self.buf.extend(next_batch(&mut self.ws, left).await);
        }
    }
}
