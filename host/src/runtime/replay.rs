//! Replaying a handling: the import calls of a candidate policy answered from a journaled
//! handling's record instead of the world.
//!
//! A [`Script`] holds the original's calls. Each call the candidate makes is looked up there
//! (same interface, function and request; the first unused match, so a question asked twice is
//! answered twice, in order) and answered with what the original was told. A call the original
//! never made (a new question, another command line, another prompt) is a [`Divergence`]: with
//! `live`, a read-only town lookup is asked of the live town; anything else gets an empty
//! answer (lookups) or an error (capabilities that act: a replay never runs a program or sends
//! a request unless `allow_exec` says so for `exec`).

use std::collections::VecDeque;

use serde::Serialize;

use super::record::Call;

/// A call the original never made.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Divergence {
    pub interface: String,
    pub function: String,
    pub request: serde_json::Value,
    /// How it was answered: `empty`, `live`, `refused` or `ran`.
    pub answered: &'static str,
}

/// The recorded calls of one handling, consumed as the candidate asks.
#[derive(Debug, Default)]
pub struct Script {
    calls: VecDeque<Call>,
    pub divergences: Vec<Divergence>,
    /// Ask read-only lookups the original never made of the live town.
    pub live: bool,
    /// Run `exec` calls the original never made.
    pub allow_exec: bool,
}

/// How a replayed call is to be answered.
pub enum Answer {
    /// What the original was told.
    Recorded(serde_json::Value),
    /// Not in the record: answer it for real (a live lookup, an allowed exec).
    Live,
    /// Not in the record, and not to be asked: an empty answer or an error.
    Refused,
}

impl Script {
    pub fn new(calls: Vec<Call>, live: bool, allow_exec: bool) -> Script {
        Script {
            calls: calls.into(),
            divergences: Vec::new(),
            live,
            allow_exec,
        }
    }

    /// The answer to a call of the candidate.
    pub fn answer(
        &mut self,
        interface: &str,
        function: &str,
        request: &serde_json::Value,
    ) -> Answer {
        let found = self.calls.iter().position(|c| {
            c.interface == interface && c.function == function && c.request == *request
        });
        if let Some(i) = found {
            let call = self.calls.remove(i).expect("found just now");
            return Answer::Recorded(call.response);
        }
        let live = match interface {
            "host" => self.live,
            "exec" => self.allow_exec,
            _ => false,
        };
        let answered = match (live, interface) {
            (true, "exec") => "ran",
            (true, _) => "live",
            (false, "host") => "empty",
            (false, _) => "refused",
        };
        self.divergences.push(Divergence {
            interface: interface.to_string(),
            function: function.to_string(),
            request: request.clone(),
            answered,
        });
        if live {
            Answer::Live
        } else {
            Answer::Refused
        }
    }

    /// Calls the original made that the candidate did not.
    pub fn unused(&self) -> usize {
        self.calls.len()
    }
}
