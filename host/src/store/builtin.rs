//! The built-in roles: the example worker, reviewer and conductor policy, shipped inside the `tt`
//! binary so that a town works after one `cargo install`, with no `plugins/` tree at hand.
//!
//! The bytes are the components in `host/builtin/`, checked in rather than built by a build
//! script: `cargo install --path host` then needs neither the `wasm32-wasip2` target nor a
//! nested cargo run, and a built-in's digest (its identity, recorded on agents and in every
//! handling's event) is the same on every machine that builds this commit. The test
//! `builtin_components_are_the_example_plugins` (tests/anywhere.rs) fails when they are not
//! byte for byte a fresh build of `plugins/{worker,reviewer,conductor}`;
//! `bash plugins/bless-builtins.sh` rewrites them.
//!
//! An agent records a built-in as the plugin `builtin:<name>`. This table lives in the store
//! because `tt spawn` (the town layer) records their digests; the runtime compiles them (into
//! the town's cache, like any plugin) and decides how each is configured.

use crate::store::model::Digest;

/// The role of an agent whose mailbox people read (`tt inbox NAME`): it has no plugin, no
/// host serves it, and mail waiting for it is not a fault. Any other agent with mail and no
/// way to serve it is reported.
pub const MAILBOX_ROLE: &str = "mailbox";

/// How an agent's `plugin` names a built-in: `builtin:worker`.
pub const PREFIX: &str = "builtin:";

/// One built-in role.
#[derive(Debug)]
pub struct Builtin {
    /// Its name, which is also the role it serves.
    pub name: &'static str,
    pub bytes: &'static [u8],
    /// What it does, for `tt plugin list`.
    pub summary: &'static str,
}

pub static BUILTINS: &[Builtin] = &[
    Builtin {
        name: "worker",
        bytes: include_bytes!("../../builtin/worker.wasm"),
        summary: "runs the town's coding CLI ([town] default_cli) on each assignment, then asks for review",
    },
    Builtin {
        name: "reviewer",
        bytes: include_bytes!("../../builtin/reviewer.wasm"),
        summary: "runs a check ([town] default_check) on the work; approves only when it exits 0",
    },
    Builtin {
        name: "conductor",
        bytes: include_bytes!("../../builtin/conductor.wasm"),
        summary: "hands backlog tasks to idle workers, tells the humans when a task completes",
    },
];

impl Builtin {
    pub fn digest(&self) -> Digest {
        Digest::of(self.bytes)
    }

    /// The plugin reference an agent records: `builtin:<name>`.
    pub fn reference(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }
}

/// The built-in named `name`.
pub fn by_name(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// The built-in that serves `role`, if there is one.
pub fn for_role(role: &str) -> Option<&'static Builtin> {
    by_name(role)
}

/// `Some(name)` when an agent's recorded plugin names a built-in (`builtin:<name>`).
pub fn referenced(plugin: &str) -> Option<&str> {
    plugin.strip_prefix(PREFIX)
}

/// Why an agent of `role` with no plugin cannot be served, with the fix; `None` for a
/// [`MAILBOX_ROLE`] agent, which is not served by design.
pub fn why_unplugged(agent: &str, role: &str) -> Option<String> {
    if role == MAILBOX_ROLE {
        return None;
    }
    Some(match for_role(role) {
        Some(b) => format!(
            "agent `{agent}` has no plugin (spawned before role `{role}` had a built-in) (give \
             it one: tt swap {agent} {})",
            b.reference()
        ),
        None => format!(
            "agent `{agent}` has no plugin and role `{role}` has no built-in (the built-ins are \
             {}) (give it one: tt swap {agent} PLUGIN; a mailbox people read has role `mailbox`)",
            names()
        ),
    })
}

/// The names of the built-ins, comma-separated, for hints.
pub fn names() -> String {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_a_component_found_by_role_and_reference() {
        for b in BUILTINS {
            // A component (layer 1 of the binary format), not a core module.
            assert_eq!(&b.bytes[..4], b"\0asm", "{}", b.name);
            assert_ne!(&b.bytes[4..8], &[1, 0, 0, 0], "{} is a core module", b.name);
            assert_eq!(for_role(b.name).map(|x| x.name), Some(b.name));
            assert_eq!(referenced(&b.reference()), Some(b.name));
        }
        assert!(for_role("sink").is_none());
        assert_eq!(why_unplugged("desk", MAILBOX_ROLE), None);
        let why = why_unplugged("old", "worker").unwrap();
        assert!(why.contains("tt swap old builtin:worker"), "{why}");
        let why = why_unplugged("sink", "sink").unwrap();
        assert!(
            why.contains("tt swap sink PLUGIN") && why.contains("`mailbox`"),
            "{why}"
        );
        assert_eq!(referenced("plugins/dist/worker.wasm"), None);
    }
}
