//! The SignalR MessagePack hub protocol's framing: each message is a VarInt length, then one MessagePack array.
//!
//! Stored messages carry their own MessagePack body, encoded once at publish ([`marquee_engine::msgpack`]), which
//! [`crate::hub_framing::HubFraming`] wraps without transcoding. The hub's own messages (the handshake answer,
//! Completions, Pings, Close, gaps) are written as JSON and transcoded here by [`hub_message`], with the engine's
//! JSON-to-MessagePack value transcoder. Incoming messages are decoded into the JSON shape the hub code already
//! handles.

pub use marquee_engine::msgpack::put_int;
use marquee_engine::msgpack::{NotJson, Scan, str_bytes, value};
use serde_json::{Map, Value};

/// Appends `n` as the SignalR VarInt (7 bits per byte, low first, high bit = more).
pub fn put_varint(out: &mut impl bytes::BufMut, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.put_u8(b);
            return;
        }
        out.put_u8(b | 0x80);
    }
}

/// Reads a VarInt length: (length, bytes used); `None` when incomplete; `Err` when over 5 bytes.
pub fn get_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, &'static str> {
    let mut n = 0usize;
    for (i, &b) in buf.iter().enumerate().take(5) {
        n |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((n, i + 1)));
        }
    }
    if buf.len() >= 5 { Err("a VarInt length over 5 bytes") } else { Ok(None) }
}

fn str_or_nil(raw: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), NotJson> {
    match raw {
        Some(s) => str_bytes(s, out),
        None => {
            out.push(0xc0);
            Ok(())
        }
    }
}

/// A string member's bytes between its quotes.
fn inner(span: &[u8]) -> &[u8] {
    span.get(1..span.len().saturating_sub(1)).unwrap_or_default()
}

/// Transcodes one JSON hub message (`{"type":1,...}`, no separator) into its MessagePack array, appended to `out`
/// without the length prefix. Members may come in any order.
pub(crate) fn hub_message(json: &[u8], out: &mut Vec<u8>) -> Result<(), NotJson> {
    let mut sc = Scan::new(json);
    let (mut ty, mut id, mut target, mut args, mut item, mut result, mut error, mut reconnect, mut seq) =
        (0i64, None, None, None, None, None, None, false, 0i64);
    sc.eat(b'{')?;
    loop {
        let key = sc.string()?;
        sc.eat(b':')?;
        let span = sc.value_span()?;
        match key {
            b"type" => ty = std::str::from_utf8(span).map_err(|_| NotJson)?.parse().map_err(|_| NotJson)?,
            b"invocationId" => id = Some(span),
            b"target" => target = Some(span),
            b"arguments" => args = Some(span),
            b"item" => item = Some(span),
            b"result" => result = Some(span),
            b"error" => error = Some(span),
            b"allowReconnect" => reconnect = span == b"true",
            b"sequenceId" => seq = std::str::from_utf8(span).map_err(|_| NotJson)?.parse().map_err(|_| NotJson)?,
            _ => {}
        }
        if sc.eat(b',').is_err() {
            sc.eat(b'}')?;
            break;
        }
    }
    let sub = |span: &[u8], out: &mut Vec<u8>| value(&mut Scan::new(span), out);
    match ty {
        1 => {
            out.extend_from_slice(&[0x96, 0x01, 0x80]);
            str_or_nil(id.map(inner), out)?;
            str_or_nil(target.map(inner), out)?;
            sub(args.unwrap_or(b"[]"), out)?;
            out.push(0x90);
        }
        2 => {
            out.extend_from_slice(&[0x94, 0x02, 0x80]);
            str_or_nil(id.map(inner), out)?;
            sub(item.unwrap_or(b"null"), out)?;
        }
        3 => {
            let id = id.map(inner);
            match (error, result) {
                (Some(e), _) => {
                    out.extend_from_slice(&[0x95, 0x03, 0x80]);
                    str_or_nil(id, out)?;
                    out.push(0x01);
                    str_bytes(inner(e), out)?;
                }
                (None, Some(r)) => {
                    out.extend_from_slice(&[0x95, 0x03, 0x80]);
                    str_or_nil(id, out)?;
                    out.push(0x03);
                    sub(r, out)?;
                }
                (None, None) => {
                    out.extend_from_slice(&[0x94, 0x03, 0x80]);
                    str_or_nil(id, out)?;
                    out.push(0x02);
                }
            }
        }
        6 => out.extend_from_slice(&[0x91, 0x06]),
        7 => {
            out.extend_from_slice(&[0x93, 0x07]);
            str_or_nil(error.map(inner), out)?;
            out.push(if reconnect { 0xc3 } else { 0xc2 });
        }
        8 | 9 => {
            out.extend_from_slice(&[0x92, ty as u8]);
            put_int(out, seq);
        }
        _ => return Err(NotJson),
    }
    Ok(())
}

/// Decodes one MessagePack value into JSON: (value, bytes used).
pub fn decode(buf: &[u8]) -> Result<(Value, usize), String> {
    let mut i = 0;
    let v = decode_at(buf, &mut i, 0)?;
    Ok((v, i))
}

fn take<'a>(buf: &'a [u8], i: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let s = buf.get(*i..*i + n).ok_or("truncated MessagePack")?;
    *i += n;
    Ok(s)
}

fn be(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
}

fn decode_at(buf: &[u8], i: &mut usize, depth: usize) -> Result<Value, String> {
    if depth > 32 {
        return Err("MessagePack nested too deeply".into());
    }
    let b = take(buf, i, 1)?[0];
    let seq = |buf: &[u8], i: &mut usize, n: usize| -> Result<Vec<Value>, String> {
        (0..n).map(|_| decode_at(buf, i, depth + 1)).collect()
    };
    let map = |buf: &[u8], i: &mut usize, n: usize| -> Result<Value, String> {
        let mut m = Map::new();
        for _ in 0..n {
            let k = match decode_at(buf, i, depth + 1)? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            m.insert(k, decode_at(buf, i, depth + 1)?);
        }
        Ok(Value::Object(m))
    };
    let string = |buf: &[u8], i: &mut usize, n: usize| -> Result<Value, String> {
        let s = take(buf, i, n)?;
        Ok(Value::String(std::str::from_utf8(s).map_err(|_| "MessagePack string is not UTF-8")?.to_owned()))
    };
    let len = |buf: &[u8], i: &mut usize, w: usize| -> Result<usize, String> { Ok(be(take(buf, i, w)?) as usize) };
    Ok(match b {
        0x00..=0x7f => Value::from(b),
        0x80..=0x8f => map(buf, i, (b & 0x0f) as usize)?,
        0x90..=0x9f => Value::Array(seq(buf, i, (b & 0x0f) as usize)?),
        0xa0..=0xbf => string(buf, i, (b & 0x1f) as usize)?,
        0xc0 => Value::Null,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xc4..=0xc6 => {
            let n = len(buf, i, 1 << (b - 0xc4))?;
            take(buf, i, n)?;
            return Err("MessagePack binary values are not supported".into());
        }
        0xca => Value::from(f32::from_bits(be(take(buf, i, 4)?) as u32) as f64),
        0xcb => Value::from(f64::from_bits(be(take(buf, i, 8)?))),
        0xcc..=0xcf => Value::from(be(take(buf, i, 1 << (b - 0xcc))?)),
        0xd0 => Value::from(take(buf, i, 1)?[0] as i8),
        0xd1 => Value::from(be(take(buf, i, 2)?) as u16 as i16),
        0xd2 => Value::from(be(take(buf, i, 4)?) as u32 as i32),
        0xd3 => Value::from(be(take(buf, i, 8)?) as i64),
        0xd9..=0xdb => {
            let n = len(buf, i, 1 << (b - 0xd9))?;
            string(buf, i, n)?
        }
        0xdc | 0xdd => {
            let n = len(buf, i, if b == 0xdc { 2 } else { 4 })?;
            if n > buf.len() {
                return Err("MessagePack array longer than the message".into());
            }
            Value::Array(seq(buf, i, n)?)
        }
        0xde | 0xdf => {
            let n = len(buf, i, if b == 0xde { 2 } else { 4 })?;
            if n > buf.len() {
                return Err("MessagePack map longer than the message".into());
            }
            map(buf, i, n)?
        }
        0xe0..=0xff => Value::from(b as i8),
        _ => return Err(format!("unsupported MessagePack type 0x{b:02x}")),
    })
}

/// A decoded MessagePack hub message (a positional array) in the JSON hub message shape.
pub(crate) fn hub_message_to_json(v: Value) -> Result<Value, String> {
    let Value::Array(a) = v else { return Err("a MessagePack hub message must be an array".into()) };
    let ty = a.first().and_then(Value::as_u64).ok_or("a MessagePack hub message starts with its type")?;
    let mut m = Map::new();
    m.insert("type".into(), ty.into());
    let at = |k: usize| a.get(k).cloned().unwrap_or(Value::Null);
    match ty {
        // [type, headers, invocationId, target, arguments, streamIds?]
        1 | 4 => {
            m.insert("invocationId".into(), at(2));
            m.insert("target".into(), at(3));
            m.insert("arguments".into(), at(4));
            if let Some(s) = a.get(5) {
                m.insert("streamIds".into(), s.clone());
            }
        }
        // [type, headers, invocationId, ...]
        2 | 3 | 5 => {
            m.insert("invocationId".into(), at(2));
        }
        // [type, sequenceId]
        8 | 9 => {
            m.insert("sequenceId".into(), at(1));
        }
        _ => {}
    }
    m.retain(|_, v| !v.is_null());
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(json: &str) -> Value {
        let mut out = Vec::new();
        hub_message(json.as_bytes(), &mut out).unwrap();
        let (v, used) = decode(&out).unwrap();
        assert_eq!(used, out.len());
        v
    }

    #[test]
    fn msgpack_hub_messages_have_the_positional_shapes() {
        let tick = r#"{"type":1,"target":"tick","arguments":[{"type":"tick","seq":42,"price":187.23,"size":100,"ts":1795414787762293000,"neg":-5,"ok":true,"none":null,"q":"a\"b"}]}"#;
        let v = roundtrip(tick);
        assert_eq!(v[0], 1);
        assert_eq!(v[1], serde_json::json!({}));
        assert_eq!(v[2], Value::Null);
        assert_eq!(v[3], "tick");
        let arg = &v[4][0];
        assert_eq!(
            (arg["seq"].as_i64(), arg["price"].as_f64(), arg["ts"].as_i64(), arg["neg"].as_i64()),
            (Some(42), Some(187.23), Some(1795414787762293000), Some(-5))
        );
        assert_eq!((&arg["ok"], &arg["none"], &arg["q"]), (&Value::Bool(true), &Value::Null, &Value::from("a\"b")));
        assert_eq!(v[5], serde_json::json!([]));
        // Target after the arguments (named events) is fine.
        let v = roundtrip(r#"{"type":1,"arguments":[{"type":"lot_update","lot":"7"}],"target":"lotUpdate"}"#);
        assert_eq!((v[3].as_str(), v[4][0]["lot"].as_str()), (Some("lotUpdate"), Some("7")));
        assert_eq!(
            roundtrip(r#"{"type":2,"invocationId":"3","item":{"a":[1,2]}}"#),
            serde_json::json!([2, {}, "3", {"a": [1, 2]}])
        );
        assert_eq!(roundtrip(r#"{"type":3,"invocationId":"0"}"#), serde_json::json!([3, {}, "0", 2]));
        assert_eq!(
            roundtrip(r#"{"type":3,"invocationId":"0","error":"bad_request: x"}"#),
            serde_json::json!([3, {}, "0", 1, "bad_request: x"])
        );
        assert_eq!(
            roundtrip(r#"{"type":3,"invocationId":"0","result":{"bid_id":"7-1"}}"#),
            serde_json::json!([3, {}, "0", 3, {"bid_id": "7-1"}])
        );
        assert_eq!(roundtrip(r#"{"type":6}"#), serde_json::json!([6]));
        assert_eq!(
            roundtrip(r#"{"type":7,"error":"1001: bye","allowReconnect":true}"#),
            serde_json::json!([7, "1001: bye", true])
        );
        assert_eq!(roundtrip(r#"{"type":9,"sequenceId":12}"#), serde_json::json!([9, 12]));
    }

    #[test]
    fn msgpack_varints_and_client_messages_decode() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 20] {
            let mut b = Vec::new();
            put_varint(&mut b, n);
            assert_eq!(get_varint(&b), Ok(Some((n, b.len()))));
            assert_eq!(get_varint(&b[..b.len() - 1]), Ok(None));
        }
        assert!(get_varint(&[0x80; 6]).is_err());
        // [1, {}, "0", "Subscribe", [["ticks.AAPL"]], []] as the JS client writes it.
        let bytes = [
            0x96, 0x01, 0x80, 0xa1, b'0', 0xa9, b'S', b'u', b'b', b's', b'c', b'r', b'i', b'b', b'e', 0x91, 0x91, 0xaa,
            b't', b'i', b'c', b'k', b's', b'.', b'A', b'A', b'P', b'L', 0x90,
        ];
        let (v, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            hub_message_to_json(v).unwrap(),
            serde_json::json!({"type": 1, "invocationId": "0", "target": "Subscribe", "arguments": [["ticks.AAPL"]], "streamIds": []})
        );
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(), "a huge count does not allocate");
        assert!(decode(&[0x92, 0x01]).is_err(), "truncated");
    }

    /// JSON values as publishers send them in event fields.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // serde_json (without `float_roundtrip`) may read a long float back one ulp off; Rust's parser, which
            // the MessagePack transcoder uses, is exact. Keep to floats both read alike.
            any::<f64>()
                .prop_filter("finite, read back exactly by serde_json", |f| {
                    f.is_finite() && serde_json::from_str::<f64>(&Value::from(*f).to_string()).ok() == Some(*f)
                })
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_\\\"é]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any event fields a publisher may send come out of the stored MessagePack body as the same values the
        /// JSON body carries (numbers compared as JSON numbers: a float64 for decimals, as a JSON parser reads
        /// them).
        #[test]
        fn msgpack_event_bodies_decode_to_the_published_fields(fields in proptest::collection::btree_map(
            "[a-z]{1,6}", json_value(), 0..6)) {
            use crate::hub_framing::HubFraming;
            use marquee_engine::{BatchWriter, Engine, EngineConfig, Limits, RingConfig, Subscriber};
            let fields = Value::Object(fields.into_iter().map(|(k, v)| (format!("f_{k}"), v)).collect());
            let ring = RingConfig { capacity: 4, slot_bytes: 64 * 1024 };
            let engine = Engine::new(EngineConfig { reliable_ring: ring, ..Default::default() });
            let mut w = engine.create_topic("lots.1").unwrap();
            let mut args = Vec::new();
            let mut subs: Vec<_> = [false, true].into_iter().map(|msgpack| {
                let mut sub = Subscriber::new(engine.clone(), Limits::default());
                sub.subscribe(engine.topic("lots.1").unwrap(), None).unwrap();
                let mut b = BatchWriter::with_framing(HubFraming::default());
                b.framing_mut().set_msgpack(msgpack);
                (sub, b)
            }).collect();
            w.publish_event("custom", &fields.to_string(), 1).unwrap();
            for (sub, b) in &mut subs {
                sub.drain(b).unwrap();
                let msgpack = b.framing().is_msgpack();
                let frame = b.finish().unwrap();
                let message = if msgpack {
                    let (len, at) = get_varint(frame).unwrap().unwrap();
                    let (v, used) = decode(&frame[at..]).unwrap();
                    proptest::prop_assert_eq!(used, len);
                    hub_message_to_json(v).unwrap()
                } else {
                    serde_json::from_slice(&frame[..frame.len() - 1]).unwrap()
                };
                args.push(message["arguments"][0].clone());
            }
            // The first message of a subscription comes as its snapshot: `"event":"custom"` and the fields.
            proptest::prop_assert_eq!(&args[0]["event"], "custom");
            for (k, v) in fields.as_object().unwrap() {
                proptest::prop_assert_eq!(&args[0][k], v);
            }
            let (from_json, from_msgpack) = (&args[0], &args[1]);
            proptest::prop_assert_eq!(from_msgpack, from_json);
        }
    }
}
