//! Reading Redis stream replies (XRANGE, XREADGROUP, XAUTOCLAIM) into plain Rust values, and
//! the one blocking read of a single stream ([`read_after`]).
//!
//! Field values stay raw bytes here: whether they are a valid message is decided in one place,
//! [`crate::store::model::Message::decode`].

use std::collections::HashMap;

use redis::Value;

/// One stream entry: its id and raw field/value pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// Fields as text, lossily; for display and events.
    pub fn text_map(&self) -> HashMap<String, String> {
        self.fields
            .iter()
            .map(|(k, v)| (lossy(k), lossy(v)))
            .collect()
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

pub fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| lossy(&b))
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// A list of entries, as XRANGE returns it. Deleted entries (nil fields) are skipped.
pub fn entries(v: &Value) -> Vec<Entry> {
    items(v)
        .iter()
        .filter_map(|e| {
            let parts = items(e);
            let id = text(parts.first()?)?;
            let flat = items(parts.get(1)?);
            let fields = flat
                .chunks(2)
                .filter_map(|kv| Some((bytes(kv.first()?)?, bytes(kv.get(1)?)?)))
                .collect();
            Some(Entry { id, fields })
        })
        .collect()
}

/// XREADGROUP's reply: entries per stream key.
pub fn read_reply(v: &Value) -> Vec<(String, Vec<Entry>)> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, es)| Some((text(k)?, entries(es))))
            .collect(),
        _ => items(v)
            .iter()
            .filter_map(|s| {
                let parts = items(s);
                Some((text(parts.first()?)?, entries(parts.get(1)?)))
            })
            .collect(),
    }
}

/// The entries of stream `key` after id `last` (at most `count`, when given), waiting up to
/// `block` for the first: `XREAD` of one stream, no consumer group.
pub async fn read_after<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    key: &str,
    last: &str,
    count: Option<usize>,
    block: std::time::Duration,
) -> redis::RedisResult<Vec<Entry>> {
    let mut cmd = redis::cmd("XREAD");
    if let Some(n) = count {
        cmd.arg("COUNT").arg(n);
    }
    let v: Value = cmd
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(key)
        .arg(last)
        .query_async(conn)
        .await?;
    Ok(read_reply(&v).into_iter().flat_map(|(_, e)| e).collect())
}

/// A stream id's place in its stream's order, `(ms, seq)` (ids are `ms-seq`; a missing or
/// unreadable part counts as 0), so ids compare as Redis orders them, not as text.
pub fn id_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// XAUTOCLAIM's reply: the next cursor and the claimed entries.
pub fn autoclaim_reply(v: &Value) -> (String, Vec<Entry>) {
    let parts = items(v);
    let cursor = parts.first().and_then(text).unwrap_or_else(|| "0-0".into());
    let claimed = parts.get(1).map(entries).unwrap_or_default();
    (cursor, claimed)
}

/// A flat key/value array (XINFO replies) as a map of text to values.
pub fn flat_map(v: &Value) -> HashMap<String, Value> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v.clone())))
            .collect(),
        _ => items(v)
            .chunks(2)
            .filter_map(|kv| Some((text(kv.first()?)?, kv.get(1)?.clone())))
            .collect(),
    }
}

/// The elements of an array reply.
pub fn array(v: &Value) -> &[Value] {
    items(v)
}

pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}
