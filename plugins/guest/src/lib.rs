//! `tinytown-guest`: what every Rust role of tinytown repeats, written once.
//!
//! - [`Table`] reads the agent's `config` table that `init` receives (`list<tuple<string,
//!   string>>`): the last value of a key wins, a blank value counts as absent, a required key
//!   that is missing says which key and what it is for, and whole numbers and
//!   whitespace-separated words are parsed the same way by every role.
//! - [`ConfigError`] is the typed error of a bad table; its `Display` is the message the host
//!   reports (`init refused: ...`).
//! - [`fill`] puts values into the `{task}`, `{attempt}` placeholders of program arguments.
//! - [`Slot`] holds the config `init` parsed, for `handle` to use.
//! - [`role!`] expands the `Guest` impl that ties them together: `init` parses the table and
//!   stores the config, and `handle` uses it; a host that skipped `init` gets, from `handle`,
//!   the error `init` would have given.
//!
//! Why this crate has no bindings of its own: `wit_bindgen::generate!` puts the types of one
//! world (`Message`, `Action`, `Error`, the `Guest` trait) and its imports into the crate that
//! calls it. Had this crate generated them for `agent-exec`, every plugin using it would import
//! `exec`, which a plugin of world `agent` (the conductor, relay) must not, and the types would
//! not be the plugin's own. So it knows only plain Rust types, and [`role!`] is a macro: it
//! expands in the plugin crate, after the plugin's `generate!`, where `Guest`, `Message`,
//! `Action` and `Error` are that plugin's world's.
//!
//! Why the texts must not change: the reviewer's error messages are part of a conformance
//! suite (`tests/conformance/*.json`) that the Python, JavaScript and C reviewers pass with
//! byte-identical texts, and the host's tests assert the worker's and conductor's. Their
//! trimming and splitting is Rust's `str::trim` and `split_whitespace` (Unicode White_Space),
//! which the other ports reimplement.
//!
//! `tt plugin new --lang rust` writes this file and its Cargo.toml, unchanged, into every
//! project it makes (as `guest/`), so it must build on its own: no dependencies, std only.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

/// The `config` table `init` receives, read the way every role reads it.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    role: &'a str,
    pairs: &'a [(String, String)],
}

impl<'a> Table<'a> {
    /// The table `pairs` of a `role` (named in the error messages, e.g. `"worker"`).
    pub fn new(role: &'a str, pairs: &'a [(String, String)]) -> Self {
        Table { role, pairs }
    }

    /// The value of `key`, trimmed: the last pair with that key wins, and a blank value counts
    /// as absent (so a later blank value hides an earlier one).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `key`, which the role cannot do without; `purpose` says what it is for
    /// (`"the check to run for a review"`) in the error when it is missing.
    pub fn required(&self, key: &str, purpose: &str) -> Result<&'a str, ConfigError> {
        self.get(key).ok_or_else(|| ConfigError::Missing {
            role: self.role.to_owned(),
            key: key.to_owned(),
            purpose: purpose.to_owned(),
        })
    }

    /// The whitespace-separated words of `key`; none when it is absent.
    pub fn words(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// `key` as a whole number of type `T` (an unsigned integer type: `u32::from_str` takes an
    /// optional `+` and decimal digits, and refuses what does not fit); `None` when absent.
    pub fn number<T: FromStr>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.parse_number(key, None)
    }

    /// The same as [`Table::number`] for a number of some `unit` (`"milliseconds"`), which
    /// the error message names.
    pub fn number_of<T: FromStr>(&self, key: &str, unit: &str) -> Result<Option<T>, ConfigError> {
        self.parse_number(key, Some(unit))
    }

    fn parse_number<T: FromStr>(
        &self,
        key: &str,
        unit: Option<&str>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::NotANumber {
                role: self.role.to_owned(),
                key: key.to_owned(),
                unit: unit.map(str::to_owned),
                got: value.to_owned(),
            })
    }
}

/// Why a `config` table was refused. Its `Display` is the message for the host; a config
/// error is permanent (retrying the same table cannot help).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A required key is absent or blank.
    Missing {
        role: String,
        key: String,
        /// What the key is for.
        purpose: String,
    },
    /// A key that must be a whole number is not one, or does not fit its type.
    NotANumber {
        role: String,
        key: String,
        /// What the number counts, if the message should say.
        unit: Option<String>,
        /// The value, trimmed.
        got: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { role, key, purpose } => {
                write!(f, "{role} needs config key `{key}` ({purpose})")
            }
            ConfigError::NotANumber {
                role,
                key,
                unit,
                got,
            } => {
                write!(f, "{role} config key `{key}` must be a whole number")?;
                if let Some(unit) = unit {
                    write!(f, " of {unit}")?;
                }
                write!(f, ", got `{got}`")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// `args` with every `{name}` replaced by its value, for each `(name, value)` of `values` in
/// turn: `fill(&args, &[("task", "t-1"), ("attempt", "2")])`. A placeholder not listed stays
/// as it is.
pub fn fill(args: &[String], values: &[(&str, &str)]) -> Vec<String> {
    args.iter()
        .map(|arg| {
            values.iter().fold(arg.clone(), |arg, (name, value)| {
                arg.replace(&["{", name, "}"].concat(), value)
            })
        })
        .collect()
}

/// The config `init` parsed, kept for `handle`; empty until `init` ran. Meant to live in a
/// `thread_local!` (a guest is single-threaded; [`role!`] declares one).
pub struct Slot<T>(RefCell<Option<T>>);

impl<T> Slot<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Slot(RefCell::new(None))
    }

    /// Stores `value`, replacing what an earlier `init` stored.
    pub fn set(&self, value: T) {
        *self.0.borrow_mut() = Some(value);
    }

    /// Runs `f` with the stored value, or `None` when nothing was stored.
    pub fn with<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.0.borrow().as_ref())
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot::new()
    }
}

/// Declares the struct a plugin exports and its `Guest` impl, for a role whose `init` parses
/// the `config` table into a value that `handle` then uses:
///
/// ```ignore
/// wit_bindgen::generate!({ world: "agent-exec", path: "wit" });
///
/// fn parse_config(config: &tinytown_guest::Table) -> Result<Config, tinytown_guest::ConfigError> {
///     Ok(Config { program: config.required("program", "the command to run")?.to_owned() })
/// }
/// fn handle_with(cfg: &Config, msg: Message) -> Vec<Action> { Vec::new() }
///
/// tinytown_guest::role!(Worker {
///     name: "worker",
///     config: Config = parse_config,
///     handle: handle_with,
/// });
/// export!(Worker);
/// ```
///
/// `init` parses `Table::new(name, &config)` with `parse_config` and stores the result; a
/// [`ConfigError`] becomes a permanent `Error` with its message. `handle` calls `handle_with`
/// with the stored config; when the host never called `init`, it parses an empty table, so a
/// role that needs a key fails with the error `init` would have given, and one whose keys all
/// have defaults works with those.
///
/// It must be used after `wit_bindgen::generate!`, in the same module: the expansion names
/// that module's `Guest`, `Message`, `Action` and `Error`.
#[macro_export]
macro_rules! role {
    (
        $(#[$meta:meta])*
        $role:ident {
            name: $name:literal,
            config: $config:ty = $parse:path,
            handle: $handle:path $(,)?
        }
    ) => {
        $(#[$meta])*
        struct $role;

        impl $role {
            /// The config `init` parsed.
            fn config_slot() -> &'static ::std::thread::LocalKey<$crate::Slot<$config>> {
                ::std::thread_local! {
                    static CONFIG: $crate::Slot<$config> = const { $crate::Slot::new() };
                }
                &CONFIG
            }

            /// A config error as the world's `error`: permanent, since a retry cannot fix it.
            fn config_error(e: $crate::ConfigError) -> Error {
                Error {
                    message: e.to_string(),
                    retryable: false,
                }
            }
        }

        impl Guest for $role {
            fn init(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::std::result::Result<(), Error> {
                let cfg = $parse(&$crate::Table::new($name, &config)).map_err(Self::config_error)?;
                Self::config_slot().with(|slot| slot.set(cfg));
                Ok(())
            }

            fn handle(msg: Message) -> ::std::result::Result<::std::vec::Vec<Action>, Error> {
                Self::config_slot().with(|slot| {
                    slot.with(|cfg| match cfg {
                        Some(cfg) => Ok($handle(cfg, msg)),
                        // A host that skipped `init` gets the error `init` would have given.
                        None => $parse(&$crate::Table::new($name, &[]))
                            .map(|cfg| $handle(&cfg, msg))
                            .map_err(Self::config_error),
                    })
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_last_value_wins_and_blank_is_absent() {
        let p = pairs(&[
            ("a", "1"),
            ("a", " 2 "),
            ("b", "x"),
            ("b", " \u{a0}\u{3000} "),
        ]);
        let t = Table::new("worker", &p);
        assert_eq!(t.get("a"), Some("2"));
        assert_eq!(t.get("b"), None);
        assert_eq!(t.get("c"), None);
        let p = pairs(&[("a", "  "), ("a", "3")]);
        assert_eq!(Table::new("worker", &p).get("a"), Some("3"));
    }

    #[test]
    fn messages_name_the_role_the_key_and_its_purpose() {
        let p = pairs(&[("timeout-ms", " -1 "), ("max", "1.5")]);
        let t = Table::new("reviewer", &p);
        assert_eq!(
            t.required("program", "the check to run for a review")
                .unwrap_err()
                .to_string(),
            "reviewer needs config key `program` (the check to run for a review)"
        );
        assert_eq!(
            t.number_of::<u32>("timeout-ms", "milliseconds")
                .unwrap_err()
                .to_string(),
            "reviewer config key `timeout-ms` must be a whole number of milliseconds, got `-1`"
        );
        assert_eq!(
            t.number::<u32>("max").unwrap_err().to_string(),
            "reviewer config key `max` must be a whole number, got `1.5`"
        );
    }

    #[test]
    fn numbers_are_what_from_str_takes() {
        for (value, want) in [
            ("4294967295", Some(u32::MAX)),
            ("000250", Some(250)),
            ("+5", Some(5)),
            ("  ", None),
        ] {
            let p = pairs(&[("n", value)]);
            assert_eq!(Table::new("r", &p).number::<u32>("n"), Ok(want), "{value}");
        }
        for value in ["4294967296", "++5", "+", "1 000", "0x10", "1e3", "５０"] {
            let p = pairs(&[("n", value)]);
            assert!(Table::new("r", &p).number::<u32>("n").is_err(), "{value}");
        }
    }

    #[test]
    fn words_and_placeholders() {
        let p = pairs(&[("args", " --task {task}\u{2003}-n{attempt} ")]);
        let args = Table::new("worker", &p).words("args");
        assert_eq!(args, ["--task", "{task}", "-n{attempt}"]);
        assert!(Table::new("worker", &p).words("none").is_empty());
        assert_eq!(
            fill(&args, &[("task", "t-1"), ("attempt", "2")]),
            ["--task", "t-1", "-n2"]
        );
        assert_eq!(
            fill(&args, &[("task", "t-1")]),
            ["--task", "t-1", "-n{attempt}"]
        );
    }

    #[test]
    fn a_slot_is_empty_until_set() {
        let slot = Slot::new();
        assert_eq!(slot.with(|v| v.copied()), None);
        slot.set(1);
        slot.set(2);
        assert_eq!(slot.with(|v| v.copied()), Some(2));
    }
}
