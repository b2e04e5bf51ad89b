//! Errors a person can act on.
//!
//! Anything that reaches the user is an `anyhow::Error`. Where we know what went wrong and what
//! to do about it, the error carries a [`UserError`]: a one-line message that names the thing,
//! and a hint. `main` prints both and picks the exit code: 1 for a failure, 2 for a usage error.
//! The [`ErrorKind`] says what sort of refusal it is, so the HTTP server (`serve`) can answer
//! with the right status without reading messages.

use std::fmt;

use redis::ServerErrorKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    /// True when the command line itself was wrong (exit code 2).
    pub usage: bool,
    pub kind: ErrorKind,
}

/// What sort of user error: the HTTP server's status comes from it (404, 409, 503, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorKind {
    /// Bad input, or anything else the person can fix (usage errors too).
    #[default]
    Invalid,
    /// The named agent, task or dead letter does not exist.
    NotFound,
    /// The thing exists but is in a state that does not allow the change (an illegal task move,
    /// a name already taken).
    Conflict,
    /// Redis (or another part the town needs) cannot be reached.
    Unavailable,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// A failure with a hint on what to do.
pub fn fail(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    UserError {
        message: message.into(),
        hint: Some(hint.into()),
        usage: false,
        kind: ErrorKind::Invalid,
    }
    .into()
}

/// A failure of the given kind (a missing thing, an illegal move, Redis away).
pub fn of_kind(
    kind: ErrorKind,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> anyhow::Error {
    UserError {
        message: message.into(),
        hint: Some(hint.into()),
        usage: false,
        kind,
    }
    .into()
}

/// A bad command line (exit code 2).
pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    UserError {
        message: message.into(),
        hint: Some(hint.into()),
        usage: true,
        kind: ErrorKind::Invalid,
    }
    .into()
}

/// The [`UserError`] behind an error, if there is one.
pub fn user_error(err: &anyhow::Error) -> Option<&UserError> {
    err.chain().find_map(|e| e.downcast_ref::<UserError>())
}

/// Turns an error reply from our Lua scripts (`TT <code> <message>`) into a [`UserError`].
/// Other Redis errors pass through unchanged.
pub fn from_redis(err: redis::RedisError) -> anyhow::Error {
    let text = err.to_string();
    if err.code() == Some("TT") {
        let rest = err.detail().unwrap_or("").trim();
        let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
        let kind = match code {
            "NOAGENT" | "NOTASK" | "NODLQ" => ErrorKind::NotFound,
            "EXISTS" | "ILLEGAL" | "NOTBACKLOG" | "BADSTATE" | "NOKEY" => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        };
        let hint = match code {
            "NOAGENT" => "`tt list` shows the agents; `tt spawn NAME --role ROLE` adds one",
            "EXISTS" => "pick another name, or `tt kill NAME` then `tt prune` to reuse it",
            "NOTASK" => "`tt tasks` lists the tasks",
            "ILLEGAL" => "`tt task show ID` shows its state; a finished task cannot change again",
            "NOTBACKLOG" => "`tt backlog list` shows what is still waiting",
            "RESERVED" => "`conductor` and `supervisor` are the humans' mailbox",
            "BADSTATE" => "`tt list` shows each agent's state",
            "NODLQ" => "`tt dlq list` shows the dead letters",
            "TOOBIG" => "send a path or a summary instead of the whole content",
            "NOKEY" => "`tt auth key list` shows the API keys",
            _ => "this is a bug in tinytown; please report it with the command you ran",
        };
        return of_kind(kind, message, hint);
    }
    if let redis::ErrorKind::Server(
        ServerErrorKind::TryAgain
        | ServerErrorKind::ClusterDown
        | ServerErrorKind::Ask
        | ServerErrorKind::Moved,
    ) = err.kind()
    {
        // The cluster client retried this for a minute (`store::conn`): something is stuck.
        return of_kind(
            ErrorKind::Unavailable,
            format!("the Redis Cluster kept turning the call away: {text}"),
            "a slot migration or failover may be stuck: `redis-cli --cluster check HOST:PORT` \
             shows it, `redis-cli --cluster fix HOST:PORT` finishes it",
        );
    }
    if text.contains("NOAUTH") || text.contains("WRONGPASS") || text.contains("NOPERM") {
        return fail(
            format!("Redis refused our credentials: {text}"),
            "check [redis] username and password_env/password_file in tinytown.toml",
        );
    }
    anyhow::Error::new(err)
}

/// True when `err` says Redis could not be reached or dropped the connection (not a refusal).
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    if user_error(err).is_some_and(|u| u.kind == ErrorKind::Unavailable) {
        return true;
    }
    err.chain()
        .filter_map(|e| e.downcast_ref::<redis::RedisError>())
        .any(|e| {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
        })
}

/// The message of an error on one line, without its hint.
pub fn one_line(err: &anyhow::Error) -> String {
    match user_error(err) {
        Some(u) => u.message.clone(),
        None => format!("{err:#}").replace('\n', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_that_keeps_redirecting_is_unavailable_with_a_hint() {
        for kind in [
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
            ServerErrorKind::Ask,
            ServerErrorKind::Moved,
        ] {
            let e = from_redis(redis::RedisError::from((
                redis::ErrorKind::Server(kind),
                "cluster",
            )));
            let u = user_error(&e).expect("a user error");
            assert_eq!(u.kind, ErrorKind::Unavailable, "{kind:?}");
            assert!(u.message.contains("Redis Cluster"), "{}", u.message);
            assert!(u.hint.as_deref().unwrap_or("").contains("--cluster check"));
            assert!(is_unavailable(&e));
        }
    }

    #[test]
    fn user_error_survives_context() {
        let e = fail("agent `x` not found", "try tt list").context("while sending");
        let u = user_error(&e).expect("user error kept");
        assert_eq!(u.message, "agent `x` not found");
        assert!(!u.usage);
    }
}
