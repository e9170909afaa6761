//! A minimal HTTP/1.1 keep-alive GET client: enough for polling `/api/quotes` and scraping `/metrics` without an
//! HTTP stack whose own costs would blur the baseline.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
    line: String,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Conn { stream: BufReader::with_capacity(4096, s), host: addr.to_string(), line: String::new() })
    }

    /// `GET path`; returns the status and fills `body`.
    pub async fn get(&mut self, path: &str, body: &mut Vec<u8>) -> anyhow::Result<u16> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            bail!("connection closed");
        }
        let status: u16 =
            self.line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad status line")?;
        let mut len = 0usize;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("connection closed in headers");
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().context("bad content-length")?;
            }
        }
        body.resize(len, 0);
        self.stream.read_exact(body).await?;
        Ok(status)
    }
}

/// Resolves `http://host:port` (or `ws://host:port/...`) to a loopback socket address.
pub fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    crate::check_loopback(host)?;
    let hostport =
        if host == "localhost" { hostport.replacen("localhost", "127.0.0.1", 1) } else { hostport.to_owned() };
    hostport.parse().with_context(|| format!("cannot read host:port from {url:?}"))
}
