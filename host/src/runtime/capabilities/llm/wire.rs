//! What the two wire formats share: reading JSON the guest sent as text, and numbers and text
//! from a provider's answer.

use serde_json::Value;

/// A JSON text from the guest (a schema, tool arguments), parsed; the error names `what`.
pub fn json_arg(what: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))
}

/// A message content: a string, null (none), or a list of text parts.
pub fn text_of(v: Option<&Value>) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()),
        Some(_) => Err("the message content is neither text nor a list of parts".into()),
    }
}

/// A count under `obj.field`, 0 when absent.
pub fn u32_at(obj: Option<&Value>, field: &str) -> u32 {
    obj.and_then(|u| u.get(field))
        .and_then(Value::as_u64)
        .map(|n| n.min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}
