//! `Message::decode` on arbitrary stream entries: it must never panic, and a message it accepts
//! must survive being written back as an entry and decoded again, unchanged.
//!
//! Input format (so seeds stay readable and any entry can still be expressed): the first byte
//! separates pairs, the second separates a field from its value (first occurrence only), the rest
//! is the entry. A seed starting with "\n=" is one `field=value` per line. A pair without the
//! field/value separator is a field with an empty value; one trailing pair separator is ignored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinytown::store::model::Message;

type Entry = Vec<(Vec<u8>, Vec<u8>)>;

fn entry_from(data: &[u8]) -> Option<Entry> {
    let (&pair_sep, rest) = data.split_first()?;
    let (&kv_sep, mut body) = rest.split_first()?;
    if body.last() == Some(&pair_sep) {
        body = &body[..body.len() - 1];
    }
    if body.is_empty() {
        return Some(Vec::new());
    }
    Some(
        body.split(|&b| b == pair_sep)
            .map(|pair| match pair.iter().position(|&b| b == kv_sep) {
                Some(i) => (pair[..i].to_vec(), pair[i + 1..].to_vec()),
                None => (pair.to_vec(), Vec::new()),
            })
            .collect(),
    )
}

/// The entry a writer of our schema would produce for `m`.
fn encode(m: &Message) -> Entry {
    let mut fields: Vec<(&str, String)> = vec![
        ("id", m.id.clone()),
        ("from", m.from.clone()),
        ("to", m.to.clone()),
        ("kind", m.kind.as_str()),
        ("body", m.body.clone()),
        ("prio", if m.urgent { "urgent" } else { "normal" }.to_string()),
    ];
    if let Some(task) = &m.task {
        fields.push(("task", task.clone()));
    }
    if let Some(corr) = &m.corr {
        fields.push(("corr", corr.clone()));
    }
    fields.push(("ts", m.ts.to_string()));
    fields
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some(entry) = entry_from(data) else {
        return;
    };
    match Message::decode(&entry) {
        Ok(message) => {
            let again = Message::decode(&encode(&message)).unwrap_or_else(|e| {
                panic!("re-encoded message does not decode: {e}\nmessage: {message:?}")
            });
            assert_eq!(again, message, "message changed on the round trip");
        }
        Err(e) => assert!(!e.0.is_empty(), "empty decode error for {entry:?}"),
    }
});
