//! The SignalR hub's protocol edge cases, driven with raw sockets against the real binary on loopback. (The
//! official clients' happy paths run in `tests/browser/signalr-node.test.mjs`.)

mod common;

use common::{Server, login};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws = common::Ws;
const RS: char = '\u{1e}';
const HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";

/// One raw HTTP request: (status, head, body).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await.expect("answer in 20 s").unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head.to_ascii_lowercase(), body.to_owned())
}

async fn negotiate(addr: SocketAddr, token: Option<&str>) -> String {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default();
    let (status, _, body) = raw(addr, "POST", "/hubs/market/negotiate?negotiateVersion=1", &headers, "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["negotiateVersion"], 1);
    assert!(v["connectionId"].is_string());
    let transports: Vec<&str> =
        v["availableTransports"].as_array().unwrap().iter().map(|t| t["transport"].as_str().unwrap()).collect();
    assert_eq!(transports, ["WebSockets", "ServerSentEvents", "LongPolling"]);
    v["connectionToken"].as_str().unwrap().to_owned()
}

async fn ws_connect(addr: SocketAddr, query: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://{addr}/hubs/market{query}");
    tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
        .expect("connect within 10 s")
        .map(|(ws, _)| ws)
}

/// The next text frame's hub messages; `None` when the socket closed (with its close frame, if any).
async fn messages(ws: &mut Ws) -> Result<Vec<Value>, Option<(CloseCode, String)>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s");
        match msg {
            Some(Ok(Message::Text(t))) => {
                assert!(t.ends_with(RS), "every frame ends with a record separator: {t:?}");
                return Ok(t.split_terminator(RS).map(|m| serde_json::from_str(m).unwrap()).collect());
            }
            Some(Ok(Message::Close(f))) => return Err(f.map(|f| (f.code, f.reason.to_string()))),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Err(None),
        }
    }
}

/// Reads until a message satisfies `pred`, or the socket closes.
async fn until(ws: &mut Ws, mut pred: impl FnMut(&Value) -> bool) -> Result<Value, Option<(CloseCode, String)>> {
    loop {
        for m in messages(ws).await? {
            if pred(&m) {
                return Ok(m);
            }
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// A connected, subscribed hub client over WebSockets.
async fn subscribed(addr: SocketAddr, topic: &str) -> Ws {
    let token = negotiate(addr, None).await;
    let mut ws = ws_connect(addr, &format!("?id={token}")).await.unwrap();
    send(&mut ws, HANDSHAKE).await;
    assert_eq!(messages(&mut ws).await.unwrap()[0], json!({}));
    let sub = json!({"type": 1, "invocationId": "s", "target": "Subscribe", "arguments": [[topic]]});
    send(&mut ws, &format!("{sub}{RS}")).await;
    let done = until(&mut ws, |m| m["type"] == 3).await.unwrap();
    assert_eq!(done, json!({"type": 3, "invocationId": "s"}));
    ws
}

async fn assert_ticks_flow(ws: &mut Ws) {
    let t = until(ws, |m| m["target"] == "tick" && m["arguments"][0]["type"] == "tick").await;
    assert!(t.is_ok(), "ticks stopped: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_bad_input_gets_errors_and_never_touches_other_connections() {
    let server = Server::start(&["--tick-rate", "2000", "--max-errors", "1000"]);
    let addr = server.addr;
    let mut bystander = subscribed(addr, "ticks.AAPL").await;

    // A bad handshake: the handshake error, then a close.
    let token = negotiate(addr, None).await;
    let mut ws = ws_connect(addr, &format!("?id={token}")).await.unwrap();
    send(&mut ws, "{\"protocol\":\"bson\",\"version\":1}\u{1e}").await;
    let out = messages(&mut ws).await.unwrap();
    assert!(out[0]["error"].as_str().unwrap().contains("'bson' is not supported"), "{out:?}");
    let closed = messages(&mut ws).await.unwrap_err();
    assert_eq!(closed.map(|c| c.0), Some(CloseCode::Protocol));

    // Unknown methods and wrong arguments: an error Completion each; the connection stays up.
    let mut ws = subscribed(addr, "ticks.MSFT").await;
    for (msg, want) in [
        (json!({"type": 1, "invocationId": "a", "target": "NoSuchMethod", "arguments": []}), "unknown_method: "),
        (json!({"type": 1, "invocationId": "b", "target": "Subscribe", "arguments": [5]}), "bad_request: "),
        (json!({"type": 1, "invocationId": "c", "target": "Subscribe", "arguments": [["a", "b"], 1]}), "bad_request: "),
        (
            json!({"type": 1, "invocationId": "d", "target": "Subscribe", "arguments": [["ticks.NOPE"]]}),
            "unknown_topic: ",
        ),
        (json!({"type": 1, "invocationId": "e", "target": "Subscribe", "arguments": [["users.bob"]]}), "forbidden: "),
        (json!({"type": 1, "invocationId": "f", "target": "PlaceBid", "arguments": ["1", "5", "k"]}), "unauthorized: "),
        (json!({"type": 4, "invocationId": "g", "target": "StreamTicks", "arguments": ["NOPE"]}), "unknown_topic: "),
        (
            json!({"type": 4, "invocationId": "h", "target": "Subscribe", "arguments": [["ticks.AAPL"]]}),
            "bad_request: ",
        ),
    ] {
        let id = msg["invocationId"].clone();
        send(&mut ws, &format!("{msg}{RS}")).await;
        let done = until(&mut ws, |m| m["type"] == 3 && m["invocationId"] == id).await.unwrap();
        assert!(done["error"].as_str().unwrap().starts_with(want), "{msg} got {done}");
        assert!(done.get("result").is_none());
    }
    assert_ticks_flow(&mut ws).await;

    // An oversized message: a Close message saying why, then close code 1009.
    let big = format!("{{\"type\":1,\"target\":\"Subscribe\",\"arguments\":[[\"{}\"]]}}{RS}", "x".repeat(70_000));
    send(&mut ws, &big).await;
    let close = until(&mut ws, |m| m["type"] == 7).await.unwrap();
    assert!(close["error"].as_str().unwrap().contains("too large"), "{close}");
    let closed = until(&mut ws, |_| false).await.unwrap_err();
    assert_eq!(closed.map(|c| c.0), Some(CloseCode::Size));

    // Garbage after the handshake: Close with bad_json.
    let mut ws = subscribed(addr, "ticks.MSFT").await;
    send(&mut ws, "{nope\u{1e}").await;
    let close = until(&mut ws, |m| m["type"] == 7).await.unwrap();
    assert!(close["error"].as_str().unwrap().contains("bad_json"), "{close}");

    assert_ticks_flow(&mut bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_connection_ids_unknown_404_missing_400_second_websocket_409() {
    let server = Server::start(&[]);
    let addr = server.addr;
    for method in ["GET", "POST", "DELETE"] {
        let (status, _, body) = raw(addr, method, "/hubs/market?id=nope", &[], "").await;
        assert_eq!(status, 404, "{method}: {body}");
        assert!(body.contains("unknown_connection"), "{body}");
    }
    let (status, _, _) = raw(addr, "GET", "/hubs/market", &[], "").await;
    assert_eq!(status, 400);
    let err = ws_connect(addr, "?id=nope").await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    let token = negotiate(addr, None).await;
    let mut first = ws_connect(addr, &format!("?id={token}")).await.unwrap();
    let err = ws_connect(addr, &format!("?id={token}")).await.unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    // Neither SSE nor long polling can take it over: another transport is a bad request, as in ASP.NET Core.
    let (status, _, body) =
        raw(addr, "GET", &format!("/hubs/market?id={token}"), &[("Accept", "text/event-stream")], "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("transport_mismatch"), "{body}");
    // The first socket is unharmed.
    send(&mut first, HANDSHAKE).await;
    assert_eq!(messages(&mut first).await.unwrap()[0], json!({}));

    // A token that does not check out is refused at negotiate.
    let (status, _, body) =
        raw(addr, "POST", "/hubs/market/negotiate?negotiateVersion=1", &[("Authorization", "Bearer x.y.z")], "").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_long_polling_newer_poll_and_delete_end_the_pending_poll_with_204() {
    let server = Server::start(&["--signalr-poll-timeout", "20s"]);
    let addr = server.addr;
    let token = negotiate(addr, None).await;
    let path = format!("/hubs/market?id={token}");
    // The first poll only opens the connection.
    let (status, _, body) = raw(addr, "GET", &path, &[], "").await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _, _) = raw(addr, "POST", &path, &[], HANDSHAKE).await;
    assert_eq!(status, 200);
    let (status, _, body) = raw(addr, "GET", &path, &[], "").await;
    assert_eq!((status, body.as_str()), (200, "{}\u{1e}"));
    // A poll with nothing to say waits; a newer poll ends it with 204.
    let older = tokio::spawn({
        let path = path.clone();
        async move { raw(addr, "GET", &path, &[], "").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let newer = tokio::spawn({
        let path = path.clone();
        async move { raw(addr, "GET", &path, &[], "").await }
    });
    assert_eq!(older.await.unwrap().0, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) = raw(addr, "DELETE", &path, &[], "").await;
    assert_eq!(status, 202);
    assert_eq!(newer.await.unwrap().0, 204);
    let (status, _, _) = raw(addr, "GET", &path, &[], "").await;
    assert_eq!(status, 404, "the connection is gone after DELETE");
}

/// What third-party clients do and ASP.NET Core accepts: hub protocol version 0, and the handshake POSTed before
/// the first poll (long polling) or before the SSE request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_version_0_and_messages_posted_before_the_first_poll_are_accepted() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let v0 = "{\"protocol\":\"json\",\"version\":0}\u{1e}";
    let subscribe =
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"Subscribe\",\"arguments\":[[\"ticks.AAPL\"]]}\u{1e}";

    // Long polling: handshake and Subscribe POSTed first, then the polls.
    let token = negotiate(addr, None).await;
    let path = format!("/hubs/market?id={token}");
    assert_eq!(raw(addr, "POST", &path, &[], v0).await.0, 200);
    assert_eq!(raw(addr, "POST", &path, &[], subscribe).await.0, 200);
    let (status, _, body) = raw(addr, "GET", &path, &[], "").await;
    assert_eq!((status, body.as_str()), (200, ""), "the first poll only opens the connection");
    let (status, _, body) = raw(addr, "GET", &path, &[], "").await;
    assert_eq!(status, 200);
    let msgs: Vec<Value> = body.split(RS).filter(|m| !m.is_empty()).map(|m| serde_json::from_str(m).unwrap()).collect();
    assert_eq!(msgs[0], json!({}), "{body}");
    assert_eq!(msgs[1], json!({"type": 3, "invocationId": "1"}), "{body}");

    // Server-Sent Events: the handshake POSTed before the event stream is opened.
    let token = negotiate(addr, None).await;
    let path = format!("/hubs/market?id={token}");
    assert_eq!(raw(addr, "POST", &path, &[], v0).await.0, 200);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: {}\u{1e}") {
        let n =
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("handshake answer").unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }

    // WebSockets, version 0.
    let token = negotiate(addr, None).await;
    let mut ws = ws_connect(addr, &format!("?id={token}")).await.unwrap();
    send(&mut ws, v0).await;
    assert_eq!(messages(&mut ws).await.unwrap()[0], json!({}));
    send(&mut ws, subscribe).await;
    assert_ticks_flow(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_keep_alive_pings_and_a_silent_client_is_closed_with_a_reason() {
    let server = Server::start(&["--signalr-keep-alive", "200ms", "--signalr-client-timeout", "1s"]);
    let addr = server.addr;
    let mut ws = ws_connect(addr, "").await.expect("skipNegotiation: a WebSocket without id");
    send(&mut ws, HANDSHAKE).await;
    assert_eq!(messages(&mut ws).await.unwrap()[0], json!({}));
    let start = std::time::Instant::now();
    let ping = until(&mut ws, |m| m["type"] == 6).await.unwrap();
    assert_eq!(ping, json!({"type": 6}));
    assert!(start.elapsed() < Duration::from_millis(900), "first ping after {:?}", start.elapsed());
    // Before its first Ping, a client is not timed out (as in ASP.NET Core): 1.5 s of silence, and still pings.
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(until(&mut ws, |m| m["type"] == 6).await.unwrap(), json!({"type": 6}));
    }
    // One Ping from us starts the client timeout; then we say nothing: a Close message that allows a reconnect.
    send(&mut ws, "{\"type\":6}\u{1e}").await;
    let pinged = std::time::Instant::now();
    let close = until(&mut ws, |m| m["type"] == 7).await.unwrap();
    assert_eq!(close["allowReconnect"], true);
    assert!(close["error"].as_str().unwrap().contains("idle timeout"), "{close}");
    assert!(pinged.elapsed() >= Duration::from_millis(900), "closed after {:?}", pinged.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_cors_allows_listed_origins_with_credentials_only() {
    let server = Server::start(&["--cors-origins", "http://app.test,https://desk.example.com"]);
    let addr = server.addr;
    let preflight = [
        ("Origin", "http://app.test"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization,x-requested-with,x-signalr-user-agent"),
    ];
    let (status, head, _) = raw(addr, "OPTIONS", "/hubs/market/negotiate?negotiateVersion=1", &preflight, "").await;
    assert_eq!(status, 200);
    assert!(head.contains("access-control-allow-origin: http://app.test"), "{head}");
    assert!(head.contains("access-control-allow-credentials: true"), "{head}");
    assert!(head.contains("access-control-allow-methods: get,post,delete,options"), "{head}");
    assert!(head.contains("access-control-allow-headers: authorization,x-requested-with,x-signalr-user-agent"));
    assert!(head.contains("access-control-max-age: 600"), "{head}");
    let (status, head, _) =
        raw(addr, "POST", "/hubs/market/negotiate?negotiateVersion=1", &[("Origin", "https://desk.example.com")], "")
            .await;
    assert_eq!(status, 200);
    assert!(head.contains("access-control-allow-origin: https://desk.example.com"), "{head}");
    assert!(head.contains("access-control-allow-credentials: true"), "{head}");
    assert!(head.contains("vary: origin"), "{head}");

    // Another origin: its preflight carries no Access-Control-Allow-Origin, which browsers take as a refusal, and
    // neither do its requests.
    let evil = [("Origin", "http://evil.test"), ("Access-Control-Request-Method", "POST")];
    let (_, head, _) = raw(addr, "OPTIONS", "/hubs/market/negotiate?negotiateVersion=1", &evil, "").await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    let (_, head, _) =
        raw(addr, "POST", "/hubs/market/negotiate?negotiateVersion=1", &[("Origin", "http://evil.test")], "").await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
}

/// `*` used to echo any origin with `Access-Control-Allow-Credentials: true`, so any site could call the hub
/// with its visitors' cookies. It now means any origin without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_cors_star_allows_any_origin_but_never_credentials() {
    let server = Server::start(&["--cors-origins", "*"]);
    let addr = server.addr;
    let preflight = [
        ("Origin", "http://evil.test"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization,x-signalr-user-agent"),
    ];
    let (status, head, _) = raw(addr, "OPTIONS", "/hubs/market/negotiate?negotiateVersion=1", &preflight, "").await;
    assert_eq!(status, 200);
    assert!(head.contains("access-control-allow-origin: *\r\n"), "{head}");
    assert!(head.contains("access-control-allow-headers: authorization,x-signalr-user-agent"), "{head}");
    assert!(!head.contains("access-control-allow-credentials"), "{head}");
    for origin in ["http://evil.test", "https://app.example.com"] {
        let (status, head, body) =
            raw(addr, "POST", "/hubs/market/negotiate?negotiateVersion=1", &[("Origin", origin)], "").await;
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("access-control-allow-origin: *\r\n"), "{head}");
        assert!(!head.contains(origin), "the origin must not be echoed: {head}");
        assert!(!head.contains("access-control-allow-credentials"), "{head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_user_pushes_reach_the_logged_in_connection_and_a_negotiation_expires() {
    let server = Server::start(&["--signalr-handshake-timeout", "1s"]);
    let addr = server.addr;
    let token = login(addr, "carol").await;
    let id = negotiate(addr, Some(&token)).await;
    // Another user's token cannot use carol's connection.
    let dave = login(addr, "dave").await;
    let err = ws_connect(addr, &format!("?id={id}&access_token={dave}")).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let mut ws = ws_connect(addr, &format!("?id={id}&access_token={token}")).await.unwrap();
    send(&mut ws, HANDSHAKE).await;
    assert_eq!(messages(&mut ws).await.unwrap()[0], json!({}));
    // PlaceBid answers with the bid id; the outcome is pushed to users.carol, which the connection hears without
    // subscribing (`Clients.User`).
    let (_, lots) = common::http(addr, "GET", "/api/lots", None, &[], None).await;
    let lot = lots.as_array().unwrap().iter().find(|l| l["state"] == "open").expect("an open demo lot").clone();
    let lot_id = lot["lot"].as_str().unwrap();
    let bid =
        json!({"type": 1, "invocationId": "b1", "target": "PlaceBid", "arguments": [lot_id, lot["min_bid"], "key-1"]});
    send(&mut ws, &format!("{bid}{RS}")).await;
    // The pushed outcome may overtake the Completion: the lot worker publishes it as soon as the bid is decided.
    let (mut done, mut result) = (Value::Null, Value::Null);
    while done.is_null() || result.is_null() {
        for m in messages(&mut ws).await.unwrap() {
            if m["type"] == 3 {
                done = m;
            } else if m["target"] == "bidResult" {
                result = m;
            }
        }
    }
    assert!(done["result"]["bid_id"].is_string(), "{done}");
    assert_eq!(result["arguments"][0]["key"], "key-1");
    assert_eq!(result["arguments"][0]["bid_id"], done["result"]["bid_id"]);

    // A negotiated connection that never connects is forgotten after the handshake timeout.
    let stale = negotiate(addr, None).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, _, _) = raw(addr, "GET", &format!("/hubs/market?id={stale}"), &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_sigterm_sends_a_reconnectable_close_on_every_transport_and_exits_zero() {
    let mut server = Server::start(&[]);
    let addr = server.addr;
    let mut ws = subscribed(addr, "ticks.AAPL").await;

    // Server-Sent Events: read the raw stream until it ends.
    let sse_id = negotiate(addr, None).await;
    let mut sse = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /hubs/market?id={sse_id} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    sse.write_all(req.as_bytes()).await.unwrap();
    let sse_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), sse.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = format!("/hubs/market?id={sse_id}");
    assert_eq!(raw(addr, "POST", &path, &[], HANDSHAKE).await.0, 200);

    // Long polling: a poll is pending when the signal comes.
    let lp_id = negotiate(addr, None).await;
    let lp = format!("/hubs/market?id={lp_id}");
    assert_eq!(raw(addr, "GET", &lp, &[], "").await.0, 200);
    assert_eq!(raw(addr, "POST", &lp, &[], HANDSHAKE).await.0, 200);
    assert_eq!(raw(addr, "GET", &lp, &[], "").await.2, "{}\u{1e}");
    let poll = tokio::spawn(async move { raw(addr, "GET", &lp, &[], "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t0 = std::time::Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let close = until(&mut ws, |m| m["type"] == 7).await.unwrap();
    assert_eq!(close, json!({"type": 7, "error": "1001: server shutting down", "allowReconnect": true}));
    let frame = until(&mut ws, |_| false).await.unwrap_err();
    assert_eq!(frame.map(|f| f.0), Some(CloseCode::Away));
    let sse_text = sse_task.await.unwrap();
    assert!(sse_text.contains("data: {}\u{1e}"), "{sse_text}");
    assert!(sse_text.contains("data: {\"type\":7,\"error\":\"1001: server shutting down\""), "{sse_text}");
    let (status, _, body) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"type\":7,\"error\":\"1001: server shutting down\""), "{body}");
    let code = server.exits_within(t0, Duration::from_secs(3)).await;
    assert_eq!(code.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_stateful_reconnect_resends_unacked_messages_on_a_new_socket() {
    let server = Server::start(&["--tick-rate", "2000"]);
    let addr = server.addr;
    let (status, _, body) =
        raw(addr, "POST", "/hubs/market/negotiate?negotiateVersion=1&useStatefulReconnect=true", &[], "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["useStatefulReconnect"], true, "{v}");
    let id = v["connectionToken"].as_str().unwrap().to_owned();
    let mut ws = ws_connect(addr, &format!("?id={id}")).await.unwrap();
    send(&mut ws, "{\"protocol\":\"json\",\"version\":2}\u{1e}").await;
    let sub = json!({"type": 1, "invocationId": "s", "target": "Subscribe", "arguments": [["ticks.AAPL"]]});
    send(&mut ws, &format!("{sub}{RS}")).await;
    // Read a few ticks, acknowledging none: all of them stay in the server's buffer.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        for m in messages(&mut ws).await.unwrap() {
            if m["target"] == "tick" {
                seen.push(m["arguments"][0]["seq"].as_u64().unwrap());
            }
        }
    }
    // A second socket for the same connection takes it over (the client saw the first fail first).
    let mut ws2 = ws_connect(addr, &format!("?id={id}")).await.expect("a stateful connection takes a new socket");
    let first = messages(&mut ws2).await.unwrap();
    assert_eq!(first[0], json!({"type": 9, "sequenceId": 1}), "{first:?}");
    // Then everything since message 1, again: the Subscribe's Completion and the ticks already seen, in order.
    assert_eq!(first[1], json!({"type": 3, "invocationId": "s"}), "{first:?}");
    let resent: Vec<u64> =
        first.iter().filter(|m| m["target"] == "tick").map(|m| m["arguments"][0]["seq"].as_u64().unwrap()).collect();
    assert!(resent.starts_with(&seen), "resent {resent:?}, seen {seen:?}");
    // The old socket is let go.
    assert!(until(&mut ws, |_| false).await.is_err());
    // After an Ack of everything so far, a third socket gets only a Sequence of the next id.
    // Trackable messages are numbered from 1: the client has every id up to the number it received.
    let n = first.iter().filter(|m| m["type"] == 1 || m["type"] == 3).count() as u64;
    send(&mut ws2, &format!("{}{RS}", json!({"type": 8, "sequenceId": n}))).await;
    send(
        &mut ws2,
        &format!(
            "{}{RS}",
            json!({"type": 1, "invocationId": "u", "target": "Unsubscribe", "arguments": [["ticks.AAPL"]]})
        ),
    )
    .await;
    until(&mut ws2, |m| m["type"] == 3 && m["invocationId"] == "u").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(ws2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws3 = ws_connect(addr, &format!("?id={id}")).await.unwrap();
    let third = messages(&mut ws3).await.unwrap();
    assert_eq!(third[0]["type"], 9, "{third:?}");
    assert!(third[0]["sequenceId"].as_u64().unwrap() > n, "n={n} first={first:?} third={third:?}");
    assert!(
        third.iter().skip(1).all(|m| m["target"] != "tick" || m["arguments"][0]["seq"].as_u64() > seen.last().copied())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalr_a_reliable_topic_that_laps_a_stalled_client_closes_it_with_4008_and_spares_the_others() {
    let server = Server::start(&["--reliable-ring-capacity", "16"]);
    let addr = server.addr;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .args(["token", "--publisher", "--auth-secret", common::TEST_SECRET])
        .output()
        .unwrap();
    let publisher = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let auth = format!("Bearer {publisher}");
    let publish = |n: usize| {
        let events: Vec<Value> =
            (0..n).map(|i| json!({"topic": "news.flash", "type": "headline", "data": {"i": i}})).collect();
        let auth = auth.clone();
        async move {
            let (status, _, body) =
                raw(addr, "POST", "/api/publish", &[("Authorization", &auth)], &Value::from(events).to_string()).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    publish(1).await;
    // A healthy WebSocket reader and a long-polling client that stops polling, both on the topic.
    let mut healthy = subscribed(addr, "news.flash").await;
    let id = negotiate(addr, None).await;
    let lp = format!("/hubs/market?id={id}");
    assert_eq!(raw(addr, "GET", &lp, &[], "").await.0, 200);
    assert_eq!(raw(addr, "POST", &lp, &[], HANDSHAKE).await.0, 200);
    assert_eq!(raw(addr, "GET", &lp, &[], "").await.2, "{}\u{1e}");
    let sub = json!({"type": 1, "invocationId": "s", "target": "Subscribe", "arguments": [["news.flash"]]});
    assert_eq!(raw(addr, "POST", &lp, &[], &format!("{sub}{RS}")).await.0, 200);
    assert!(raw(addr, "GET", &lp, &[], "").await.2.contains("\"invocationId\":\"s\""));
    // 40 events into a 16-slot ring while the poller is away, 8 at a time (so a reader that keeps up is never more
    // than 8 behind): the poller is lapped.
    for _ in 0..5 {
        publish(8).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) = raw(addr, "GET", &lp, &[], "").await;
    assert_eq!(status, 200);
    let close: Value = serde_json::from_str(body.trim_end_matches(RS).rsplit(RS).next().unwrap()).unwrap();
    assert_eq!(close["type"], 7, "{body}");
    assert!(close["error"].as_str().unwrap().starts_with("4008: slow consumer: news.flash"), "{close}");
    assert_eq!(close["allowReconnect"], true);
    assert_eq!(raw(addr, "GET", &lp, &[], "").await.0, 204, "the next poll says the connection is over");
    assert_eq!(raw(addr, "GET", &lp, &[], "").await.0, 404, "then it is gone");
    // The WebSocket reader kept up and has every event, in order.
    let mut seqs = Vec::new();
    while seqs.last() != Some(&41) {
        for m in messages(&mut healthy).await.unwrap() {
            if m["target"] == "headline" {
                seqs.push(m["arguments"][0]["seq"].as_u64().unwrap());
            }
        }
    }
    assert!(seqs.len() >= 40 && seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn signalr_books_and_trades_arrive_as_book_and_trade_invocations() {
    let server = Server::start(&["--tick-rate", "2000"]);
    let mut ws = subscribed(server.addr, "book.MSFT").await;
    let sub = json!({"type": 1, "invocationId": "t", "target": "Subscribe", "arguments": [["trades.MSFT"]]});
    send(&mut ws, &format!("{sub}{RS}")).await;
    let book = until(&mut ws, |m| m["target"] == "book" && m["arguments"][0]["type"] == "book").await.unwrap();
    let b = &book["arguments"][0];
    assert_eq!((b["topic"].as_str(), b["symbol"].as_str()), (Some("book.MSFT"), Some("MSFT")));
    assert!(b["bids"][0][0].as_f64().unwrap() < b["asks"][0][0].as_f64().unwrap(), "{b}");
    let trade = until(&mut ws, |m| m["target"] == "trade" && m["arguments"][0]["type"] == "trade").await.unwrap();
    assert!(trade["arguments"][0]["size"].as_u64().unwrap() > 0, "{trade}");
}

/// A flood of SignalR negotiations that never connect is held apart from live connections: it is refused with
/// 503 `too_many_negotiations` past the per-address and total caps, while WebSocket clients still get in and
/// another address can still negotiate; a negotiation that connects takes a connection slot.
#[tokio::test]
async fn e2e_signalr_negotiation_flood_does_not_lock_clients_out() {
    let server = Server::start(&[
        "--max-connections",
        "20",
        "--max-pending-negotiations",
        "15",
        "--max-pending-negotiations-per-ip",
        "10",
    ]);
    let addr = server.addr;
    let negotiate_path = "/hubs/market/negotiate?negotiateVersion=1";
    let mut codes = Vec::new();
    for _ in 0..30 {
        let (status, v) = common::http(addr, "POST", negotiate_path, None, &[], None).await;
        codes.push((status, v["error"]["code"].as_str().map(str::to_owned)));
    }
    assert!(codes[..10].iter().all(|(s, _)| *s == 200), "{codes:?}");
    assert!(codes[10..].iter().all(|c| *c == (503, Some("too_many_negotiations".to_owned()))), "{codes:?}");
    // WebSocket clients are not locked out: the 10 pending negotiations hold no connection slot.
    let mut clients = Vec::new();
    for _ in 0..15 {
        let mut ws = common::connect(&server, None).await;
        common::send(&mut ws, json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
        common::events_until(&mut ws, 5, |e| e["type"] == "snapshot").await;
        clients.push(ws);
    }
    // Another client address still negotiates (up to the total cap of 15).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!("POST {negotiate_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, _, metrics) = common::http_get(addr, "/metrics").await;
    assert!(metrics.contains("marquee_signalr_pending_negotiations 11"), "{metrics}");
    assert!(metrics.contains("marquee_signalr_negotiations_refused_total 20"), "{metrics}");
}
