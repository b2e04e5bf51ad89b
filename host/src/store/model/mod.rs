//! The town's records as they are stored in Redis, and their checks: names ([`names`]),
//! messages and mailbox streams ([`message`]), tasks ([`task`]), agents ([`agent`]) and plugin
//! identity ([`digest`]). States are enums whose stored form is one lowercase word, so a state
//! is spelt in one place and the Lua applier sees the same strings.

mod agent;
mod digest;
mod message;
mod names;
mod task;

pub use agent::{Agent, AgentState};
pub use digest::{hex, Digest};
pub use message::{DecodeError, Kind, Message, Stream};
pub use names::{canonical_name, is_conductor, validate_name, validate_task_id};
pub use task::{Task, TaskState};

/// An enum stored as one string: `as_str`, `parse`, `ALL`, `Display`, and serde as that string.
macro_rules! str_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The stored forms, comma-separated (for error hints).
            pub fn names() -> String {
                $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $name::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown {} {s:?}; use one of: {}",
                        stringify!($name),
                        $name::names()
                    ))
                })
            }
        }
    };
}
pub(crate) use str_enum;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("id", "m1"),
            ("from", "alice"),
            ("to", "bob"),
            ("kind", "verdict:reject"),
            ("body", "fix the typo"),
            ("prio", "urgent"),
            ("task", "t3"),
            ("corr", ""),
            ("ts", "17"),
        ]
    }

    #[test]
    fn decodes_our_schema() {
        let m = Message::decode(&entry(&good())).unwrap();
        assert_eq!(m.kind, Kind::Reject);
        assert!(m.urgent);
        assert_eq!(m.task.as_deref(), Some("t3"));
        assert_eq!(m.corr, None);
    }

    #[test]
    fn rejects_foreign_entries_with_the_field_named() {
        let mut missing = good();
        missing.retain(|(k, _)| *k != "from");
        assert!(Message::decode(&entry(&missing))
            .unwrap_err()
            .0
            .contains("`from`"));

        let mut bad_kind = good();
        bad_kind[3] = ("kind", "gossip");
        assert!(Message::decode(&entry(&bad_kind))
            .unwrap_err()
            .0
            .contains("gossip"));

        let mut bad_ts = good();
        bad_ts[8] = ("ts", "soon");
        assert!(Message::decode(&entry(&bad_ts))
            .unwrap_err()
            .0
            .contains("`ts`"));

        let mut raw = entry(&good());
        raw[4].1 = vec![0xff, 0xfe];
        assert!(Message::decode(&raw).unwrap_err().0.contains("UTF-8"));

        let mut dup = entry(&good());
        dup.push((b"id".to_vec(), b"m2".to_vec()));
        assert!(Message::decode(&dup).unwrap_err().0.contains("twice"));
    }

    #[test]
    fn names_are_checked() {
        for ok in ["alice", "w-1", "Bob_2"] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "../etc",
            "a b",
            "a:b",
            "-x",
            "tab\there",
            "é",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            Kind::Task,
            Kind::Approve,
            Kind::Custom("ping".into()),
            Kind::ReviewRequest,
        ] {
            assert_eq!(Kind::parse(&k.as_str()).unwrap(), k);
        }
        assert!(Kind::parse("custom:").is_err());
    }
}
