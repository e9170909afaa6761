//! End-to-end: every kind of bad input gets a stable error code, the connection stays usable, sustained abuse is
//! closed with 1008, and none of it disturbs another client.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(ws: &mut Ws, frame: Message, code: &str) {
    ws.send(frame.clone()).await.unwrap();
    let evs = events_until(ws, 5, |e| e["type"] == "error").await;
    let err = evs.last().unwrap();
    assert_eq!(err["code"], code, "for {frame:?}: {err}");
    assert!(!err["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn e2e_bad_input_gets_error_codes_and_connection_stays_usable() {
    let server = Server::start(&["--tick-rate", "1000", "--max-topics", "3", "--max-errors", "1000"]);
    // A bystander subscribed to ticks must keep receiving throughout.
    let mut bystander = connect(&server, None).await;
    send(&mut bystander, json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
    events_until(&mut bystander, 5, |e| e["type"] == "snapshot").await;

    let mut ws = connect(&server, None).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("this is not json"), "bad_json"),
        (Message::text("{\"op\":\"subscribe\""), "bad_json"),
        (Message::binary(vec![0xff, 0x00, 0x13]), "bad_json"),
        (Message::text("42"), "bad_request"),
        (Message::text("{\"id\":1}"), "bad_request"),
        (Message::text(json!({"op":"subscribe","id":2,"topics":"ticks.AAPL"}).to_string()), "bad_request"),
        (Message::text(json!({"op":"launch","id":3}).to_string()), "unknown_op"),
        (Message::text(json!({"op":"subscribe","id":4,"topics":["ticks.NOSUCH"]}).to_string()), "unknown_topic"),
        (Message::text(json!({"op":"subscribe","id":5,"topics":["../etc/passwd"]}).to_string()), "invalid_topic"),
        (
            Message::text(
                json!({"op":"subscribe","id":6,"topics":["ticks.AAPL","ticks.MSFT","ticks.NVDA","ticks.TSLA"]})
                    .to_string(),
            ),
            "too_many_topics",
        ),
        (Message::text(format!("{{\"op\":\"ping\",\"id\":8,\"pad\":\"{}\"}}", "x".repeat(100_000))), "frame_too_large"),
    ];
    for (frame, code) in cases {
        expect_error(&mut ws, frame, code).await;
    }
    // Still usable.
    send(&mut ws, json!({"op":"subscribe","id":9,"topics":["ticks.MSFT"]})).await;
    let evs = events_until(&mut ws, 5, |e| e["type"] == "tick").await;
    assert!(evs.contains(&json!({"type":"ack","id":9})));
    // The bystander was not disturbed.
    events_until(&mut bystander, 5, |e| e["type"] == "tick").await;
}

#[tokio::test]
async fn e2e_sustained_abuse_is_closed_with_1008() {
    let server = Server::start(&["--max-errors", "5"]);
    let mut ws = connect(&server, None).await;
    for _ in 0..6 {
        ws.send(Message::text("garbage")).await.unwrap();
    }
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed within 5 s") {
            Some(Ok(Message::Close(Some(f)))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("bad frames"), "{}", close.reason);
}

/// A WebSocket message past the hard size limit, a text message that is not UTF-8, and a frame against the protocol
/// each get the close code RFC 6455 names (1009, 1007, 1002) before the connection ends, and other clients carry on.
#[tokio::test]
async fn e2e_broken_websocket_frames_are_closed_with_their_codes() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = Server::start(&[]);
    let mut bystander = connect(&server, None).await;
    send(&mut bystander, json!({"op":"subscribe","id":1,"topics":["ticks.AAPL"]})).await;
    events_until(&mut bystander, 5, |e| e["type"] == "snapshot").await;
    let too_large = Message::Binary(vec![b'x'; 2 << 20].into());
    let not_utf8 = Message::Frame(Frame::message(vec![0xff, 0xfe, 0x22], OpCode::Data(Data::Text), true));
    let reserved_opcode = Message::Frame(Frame::message(vec![1, 2, 3], OpCode::Data(Data::Reserved(3)), true));
    for (frame, want) in [(too_large, 1009), (not_utf8, 1007), (reserved_opcode, 1002)] {
        let mut ws = connect(&server, None).await;
        // The server may close while a large frame is still being written.
        let _ = ws.send(frame).await;
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed within 5 s") {
                Some(Ok(Message::Close(Some(f)))) => break f,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame with {want}, got {other:?}"),
            }
        };
        assert_eq!(u16::from(close.code), want, "{}", close.reason);
    }
    let live = events_until(&mut bystander, 5, |e| e["type"] == "tick").await;
    assert!(live.iter().any(|e| e["type"] == "tick"), "the other client still gets ticks");
}
