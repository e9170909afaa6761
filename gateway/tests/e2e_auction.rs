//! End-to-end: the auction flow over real HTTP and WebSocket: login, 202 then pushed outcomes, outbid, retries,
//! private topics, bad input, the publish API and a lot that closes with a winner.

mod common;

use common::*;
use serde_json::{Value, json};

async fn lot(addr: std::net::SocketAddr, id: &str) -> Value {
    let (status, v) = http(addr, "GET", &format!("/api/lots/{id}"), None, &[], None).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn e2e_auction_bid_flow_is_pushed_to_the_right_users() {
    let server = Server::start(&["--tick-rate", "50"]);
    let addr = server.addr;
    let (alice, bob) = (login(addr, "alice").await, login(addr, "bob").await);
    let mut wa = Inbox::new(connect_as(&server, &alice).await);
    let mut wb = Inbox::new(connect_as(&server, &bob).await);
    wa.send(json!({"op":"subscribe","id":1,"topics":["users.alice","lots.1"]})).await;
    wa.until(5, |e| e == &json!({"type":"ack","id":1})).await;
    // Alice's second tab: a message for alice reaches every connection of hers.
    let mut wa2 = Inbox::new(connect_as(&server, &alice).await);
    wa2.send(json!({"op":"subscribe","id":1,"topics":["users.alice"]})).await;
    wa2.until(5, |e| e == &json!({"type":"ack","id":1})).await;
    wb.send(json!({"op":"subscribe","id":1,"topics":["users.alice"]})).await;
    let ev = wb.until(5, |e| e["type"] == "error").await;
    assert_eq!(ev.last().unwrap()["code"], "forbidden");
    wb.send(json!({"op":"subscribe","id":2,"topics":["users.bob","lots.1"]})).await;
    wb.until(5, |e| e == &json!({"type":"ack","id":2})).await;

    let opening = lot(addr, "1").await["opening"].as_str().unwrap().to_owned();
    let (status, v) = post_bid(addr, &alice, "1", "alice-1", &opening).await;
    assert_eq!(status, 202, "{v}");
    let bid_id = v["bid_id"].as_str().unwrap().to_owned();
    assert_eq!(v["status_url"], "/api/bids/alice-1");
    let ev = wa.until(10, |e| event_type(e) == "bid_result").await;
    let res = ev.last().unwrap();
    assert_eq!((res["status"].as_str(), res["bid_id"].as_str()), (Some("accepted"), Some(bid_id.as_str())));
    let ev = wa2.until(10, |e| event_type(e) == "bid_result").await;
    assert_eq!(ev.last().unwrap()["bid_id"], bid_id.as_str());
    // Everyone on lots.1 sees the new high bid.
    wb.until(10, |e| event_type(e) == "lot_update" && e["leader"] == "alice").await;

    // Retry: same bid. Same key, other amount: 422.
    let (status, v) = post_bid(addr, &alice, "1", "alice-1", &opening).await;
    assert_eq!((status, v["bid_id"].as_str(), v["replayed"].as_bool()), (202, Some(bid_id.as_str()), Some(true)));
    let (status, v) = post_bid(addr, &alice, "1", "alice-1", "999").await;
    assert_eq!((status, v["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));
    let (status, v) = http(addr, "GET", "/api/bids/alice-1", Some(&alice), &[], None).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("accepted")));
    let (status, _) = http(addr, "GET", "/api/bids/alice-1", Some(&bob), &[], None).await;
    assert_eq!(status, 404, "keys are per user");

    // Bob outbids over the WebSocket: ack with the bid id, then alice hears she was outbid.
    let min = lot(addr, "1").await["min_bid"].as_str().unwrap().to_owned();
    wb.send(json!({"op":"bid","id":7,"lot":"1","amount":min,"key":"bob-1"})).await;
    // The ack (from bob's connection) and the push (from the lot's worker) may come in either order.
    let (mut acked, mut pushed) = (false, false);
    let ev = wb
        .until(10, |e| {
            acked |= e["type"] == "ack" && e["id"] == 7;
            pushed |= event_type(e) == "bid_result";
            acked && pushed
        })
        .await;
    let ack = ev.iter().find(|e| e["type"] == "ack" && e["id"] == 7).unwrap();
    let bob_bid = ack["bid_id"].as_str().unwrap().to_owned();
    let result = ev.iter().find(|e| event_type(e) == "bid_result").unwrap();
    assert_eq!((result["bid_id"].as_str(), result["status"].as_str()), (Some(bob_bid.as_str()), Some("accepted")));
    let ev = wa.until(10, |e| event_type(e) == "outbid").await;
    let outbid = ev.last().unwrap();
    assert_eq!((outbid["leader"].as_str(), outbid["high_bid"].as_str()), (Some("bob"), Some(min.as_str())));
    assert!(ev.iter().all(|e| event_type(e) != "bid_result"), "bob's result reached alice: {ev:?}");
    let l = lot(addr, "1").await;
    assert_eq!((l["bids"].as_u64(), l["leader"].as_str()), (Some(2), Some("bob")));

    // A WebSocket bid that is too low is an error with the REST code.
    wa.send(json!({"op":"bid","id":8,"lot":"1","amount":opening,"key":"alice-2"})).await;
    let ev = wa.until(10, |e| e["type"] == "error").await;
    assert_eq!(
        (ev.last().unwrap()["id"].as_u64(), ev.last().unwrap()["code"].as_str()),
        (Some(8), Some("bid_too_low"))
    );
}

#[tokio::test]
async fn e2e_auction_bad_input_gets_4xx_codes_and_changes_nothing() {
    let server = Server::start(&["--tick-rate", "50", "--bid-rate", "0.001", "--bid-burst", "3"]);
    let addr = server.addr;
    let alice = login(addr, "alice").await;
    let before = lot(addr, "1").await;
    let big = format!("{{\"amount\":\"{}\"}}", "1".repeat(10_000));
    let bids = |key: &'static str, body: String| (key, body);
    type Case<'a> = (Option<&'a str>, &'a str, (&'a str, String), u16, &'a str);
    let cases: Vec<Case> = vec![
        (Some(&alice), "1", bids("k1", r#"{"amount":"-5"}"#.into()), 400, "amount_not_positive"),
        (Some(&alice), "1", bids("k2", r#"{"amount":"0"}"#.into()), 400, "amount_not_positive"),
        (Some(&alice), "1", bids("k3", r#"{"amount":"abc"}"#.into()), 400, "invalid_amount"),
        (Some(&alice), "1", bids("k4", r#"{"amount":"100.001"}"#.into()), 400, "amount_too_precise"),
        (Some(&alice), "1", bids("k5", r#"{"amount":true}"#.into()), 400, "invalid_amount"),
        (Some(&alice), "1", bids("k6", r#"{"amount":"1"}"#.into()), 409, "bid_too_low"),
        (Some(&alice), "999", bids("k7", r#"{"amount":"100"}"#.into()), 404, "unknown_lot"),
        (Some(&alice), "x", bids("k8", r#"{"amount":"100"}"#.into()), 404, "unknown_lot"),
        (Some(&alice), "1", bids("k9", r#"{"amount":"#.into()), 400, "bad_json"),
        (Some(&alice), "1", bids("k10", r#"{"amount":"100","extra":1}"#.into()), 400, "bad_request"),
        (Some(&alice), "1", bids("k11", big), 413, "body_too_large"),
        (Some(&alice), "1", bids("bad key!", r#"{"amount":"100"}"#.into()), 400, "invalid_idempotency_key"),
        (None, "1", bids("k12", r#"{"amount":"100"}"#.into()), 401, "unauthorized"),
        (Some("not.a.token"), "1", bids("k13", r#"{"amount":"100"}"#.into()), 401, "invalid_token"),
    ];
    for (token, lot_id, (key, body), status, code) in cases {
        let headers = [("Idempotency-Key", key)];
        let (s, v) = http(addr, "POST", &format!("/api/lots/{lot_id}/bids"), token, &headers, Some(&body)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (status, Some(code)), "{key}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (s, v) = http(addr, "POST", "/api/lots/1/bids", Some(&alice), &[], Some(r#"{"amount":"100"}"#)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("missing_idempotency_key")));
    let (s, v) = http(addr, "POST", "/api/login", None, &[], Some(r#"{"name":"no spaces"}"#)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_name")));
    assert_eq!(lot(addr, "1").await, before, "nothing changed");
    for k in ["k1", "k6", "k7"] {
        let (s, _) = http(addr, "GET", &format!("/api/bids/{k}"), Some(&alice), &[], None).await;
        assert_eq!(s, 404, "{k} was recorded");
    }
    // The rate limit: a burst of 3 (two were spent above, on bids that passed validation), refilled at one per
    // 1000 s, so the last of these is refused whatever the machine's speed.
    let mut codes = Vec::new();
    let min = before["min_bid"].as_str().unwrap().to_owned();
    for i in 0..6 {
        let (s, _) = post_bid(addr, &alice, "2", &format!("r{i}"), &min).await;
        codes.push(s);
    }
    assert_eq!(codes[5], 429, "{codes:?}");
    let (s, v) = http(addr, "GET", "/api/bids/r5", Some(&alice), &[], None).await;
    assert_eq!(s, 404, "a rate-limited bid was recorded: {v}");
    // WebSocket: a bad token is refused before the upgrade.
    let url = format!("{}?access_token=forged", server.ws_url());
    let err = tokio_tungstenite::connect_async(url).await.expect_err("refused");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn e2e_publish_api_reaches_the_user_untouched_and_refuses_user_tokens() {
    let server = Server::start(&["--tick-rate", "50"]);
    let addr = server.addr;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .args(["token", "--publisher", "--name", "payments"])
        .env("MARQUEE_AUTH_SECRET", TEST_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let publisher = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let alice = login(addr, "alice").await;
    let mut wa = Inbox::new(connect_as(&server, &alice).await);
    wa.send(json!({"op":"subscribe","id":1,"topics":["users.alice"]})).await;
    wa.until(5, |e| e["type"] == "ack").await;

    let body = r#"[{"topic":"users.alice","type":"order_completed","data":{"order":17,"total":1.50,"big":12345678901234567890}},
                   {"topic":"pricing.EURUSD","type":"rate","data":{"bid":"1.0841"}}]"#;
    let (s, v) = http(addr, "POST", "/api/publish", Some(&publisher), &[], Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["published"][0]["topic"], "users.alice");
    assert_eq!(v["published"][1]["seq"], 1);
    let frame = loop {
        // Read raw frames: `data` must arrive byte for byte as published.
        use futures_util::StreamExt;
        let msg =
            tokio::time::timeout(std::time::Duration::from_secs(10), wa.ws.next()).await.unwrap().unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg
            && t.contains("order_completed")
        {
            break t.to_string();
        }
    };
    assert!(frame.contains(r#""data":{"order":17,"total":1.50,"big":12345678901234567890}"#), "{frame}");

    let one = r#"{"topic":"users.alice","type":"x"}"#;
    let (s, v) = http(addr, "POST", "/api/publish", Some(&alice), &[], Some(one)).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")));
    for (body, status, code) in [
        (r#"{"topic":"users.alice"}"#, 400, "bad_request"),
        (r#"{"topic":"users.alice","type":"x","colour":"red"}"#, 400, "bad_request"),
        (r#"[]"#, 400, "bad_request"),
        (r#"{"topic":"bad topic","type":"x"}"#, 400, "invalid_topic"),
        (r#"{"topic":"users.alice","type":"snapshot"}"#, 400, "invalid_type"),
        (r#"{"topic":"users.alice","type":"won"}"#, 400, "invalid_type"),
        // Reserved names in another case or spelling reach the same SignalR handlers (the JS client ignores case).
        (r#"{"topic":"users.alice","type":"bidResult"}"#, 400, "invalid_type"),
        (r#"{"topic":"users.alice","type":"Bid_Result"}"#, 400, "invalid_type"),
        (r#"{"topic":"users.alice","type":"lotUpdate"}"#, 400, "invalid_type"),
        (r#"{"topic":"users.alice","type":"Won"}"#, 400, "invalid_type"),
        (r#"{"topic":"users.alice","type":"Tick"}"#, 400, "invalid_type"),
        (r#"{"topic":"users.alice","type":"snap-shot"}"#, 400, "invalid_type"),
        (r#"{"topic":"ticks.AAPL","type":"x"}"#, 403, "topic_not_shared"),
        (r#"{"topic":"users.alice","type":"x","data":"#, 400, "bad_json"),
    ] {
        let (s, v) = http(addr, "POST", "/api/publish", Some(&publisher), &[], Some(body)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
    let pad = "x".repeat(2000);
    let (s, v) = http(
        addr,
        "POST",
        "/api/publish",
        Some(&publisher),
        &[],
        Some(&format!(r#"{{"topic":"a.b","type":"x","data":"{pad}"}}"#)),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (413, Some("event_too_large")));

    // The same over the WebSocket of a publisher connection.
    let mut wp = Inbox::new(connect_as(&server, &publisher).await);
    wp.send(json!({"op":"publish","id":3,"topic":"users.alice","type":"order_shipped","data":{"order":17}})).await;
    let ev = wp.until(5, |e| e["type"] == "ack").await;
    assert_eq!(ev.last().unwrap()["published"][0]["topic"], "users.alice");
    let ev = wa.until(5, |e| event_type(e) == "order_shipped").await;
    assert_eq!(ev.last().unwrap()["data"], json!({"order":17}));
    wa.send(json!({"op":"publish","id":4,"topic":"users.alice","type":"x"})).await;
    let ev = wa.until(5, |e| e["type"] == "error").await;
    assert_eq!(ev.last().unwrap()["code"], "forbidden");
}

#[tokio::test]
async fn e2e_auction_lot_closes_and_the_winner_is_told() {
    let server =
        Server::start(&["--tick-rate", "50", "--demo-lots", "1", "--lot-duration", "3s", "--anti-snipe", "100ms"]);
    let addr = server.addr;
    let carol = login(addr, "carol").await;
    let mut wc = Inbox::new(connect_as(&server, &carol).await);
    wc.send(json!({"op":"subscribe","id":1,"topics":["users.carol","lots.1"]})).await;
    wc.until(5, |e| e["type"] == "ack").await;
    let (s, v) = post_bid(addr, &carol, "1", "c-1", "5000").await;
    assert_eq!(s, 202, "{v}");
    // lot_closed (lots.1) and won (users.carol) are on two topics: either may come first.
    let (mut seen_closed, mut seen_won) = (false, false);
    let ev = wc
        .until(20, |e| {
            seen_closed |= event_type(e) == "lot_closed";
            seen_won |= event_type(e) == "won";
            seen_closed && seen_won
        })
        .await;
    let closed = ev.iter().find(|e| event_type(e) == "lot_closed").unwrap();
    let won = ev.iter().find(|e| event_type(e) == "won").unwrap();
    assert_eq!((closed["state"].as_str(), closed["winner"].as_str()), (Some("sold"), Some("carol")));
    assert_eq!((won["price"].as_str(), won["lot"].as_str()), (Some("5000.00"), Some("1")));
    let (s, v) = post_bid(addr, &carol, "1", "c-2", "6000").await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("lot_closed")));
    let l = lot(addr, "1").await;
    assert_eq!(
        (l["state"].as_str(), l["winner"].as_str(), l["price"].as_str()),
        (Some("sold"), Some("carol"), Some("5000.00"))
    );
    // The replacement lot.
    let (_, lots) = http(addr, "GET", "/api/lots", None, &[], None).await;
    assert_eq!(lots.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn e2e_auction_events_in_the_binary_encoding() {
    use futures_util::StreamExt;
    use marquee_protocol::decode::{BinRecord, decode_bin_batch};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = Server::start(&["--tick-rate", "50"]);
    let addr = server.addr;
    let alice = login(addr, "alice").await;
    let mut req = format!("{}?access_token={alice}", server.ws_url()).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "marquee.bin".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(&mut ws, json!({"op":"subscribe","id":1,"topics":["users.alice"]})).await;
    let opening = lot(addr, "1").await["opening"].as_str().unwrap().to_owned();
    let mut records = Vec::new();
    let mut bid_sent = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let is_result = |r: &BinRecord| matches!(r, BinRecord::Event(e) if e.event_type == "bid_result");
    let is_ack = |r: &BinRecord| matches!(r, BinRecord::AckWith { id: 2, .. });
    // The ack (from the connection's op) and the push (from the lot's worker) may come in either order.
    while !(records.iter().any(is_result) && records.iter().any(is_ack)) {
        assert!(std::time::Instant::now() < deadline, "no bid_result and ack; got {records:?}");
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Binary(b) = msg else { continue };
        let batch = decode_bin_batch(&b).expect("a well-formed binary batch");
        if !bid_sent && batch.contains(&BinRecord::Ack(1)) {
            send(&mut ws, json!({"op":"bid","id":2,"lot":"1","amount":opening,"key":"bin-1"})).await;
            bid_sent = true;
        }
        records.extend(batch);
    }
    let Some(BinRecord::Event(result)) = records.iter().find(|r| is_result(r)) else { unreachable!() };
    assert_eq!(result.topic, "users.alice");
    let fields: Value = serde_json::from_str(&result.fields).unwrap();
    assert_eq!((fields["status"].as_str(), fields["key"].as_str()), (Some("accepted"), Some("bin-1")));
    let Some(BinRecord::AckWith { fields: ack, .. }) = records.iter().find(|r| is_ack(r)) else { unreachable!() };
    let ack: Value = serde_json::from_str(ack).unwrap();
    assert_eq!(ack["bid_id"], fields["bid_id"]);
}

/// Demo logins are limited per client address (a burst, then the rate), answered 429 `rate_limited`.
#[tokio::test]
async fn e2e_demo_logins_are_rate_limited_per_address() {
    let server = Server::start(&["--login-rate", "0.5", "--login-burst", "5"]);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let body = format!("{{\"name\":\"flood{i}\"}}");
        let (status, v) = http(server.addr, "POST", "/api/login", None, &[], Some(&body)).await;
        statuses.push((status, v["error"]["code"].as_str().map(str::to_owned)));
    }
    assert!(statuses[..5].iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == (429, Some("rate_limited".to_owned()))), "{statuses:?}");
}
