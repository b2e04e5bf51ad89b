//! The town's rules and its retention (`[tasks]` and `[retention]` in tinytown.toml): what the
//! applier enforces besides legality, and how much history a town keeps so that it runs for
//! months in a fixed footprint. Every default is here, and in the README's retention table.

use serde::{Deserialize, Serialize};

/// Whether a worker may complete its own task or must pass review (`[tasks] review`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Review {
    /// An agent's `complete` is refused: work is done when a reviewer approves it.
    #[default]
    Required,
    /// The task's owner may complete it without review.
    Optional,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksSection {
    pub review: Review,
}

/// How much of its past a town keeps. Ages are in seconds; counts are per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Acknowledged entries kept per mailbox stream beyond those not yet applied (`tt inbox`,
    /// audits); older ones are trimmed. A pending or undelivered entry is never trimmed.
    pub mailbox_history: u64,
    /// Most acknowledged entries kept per mailbox stream over the whole town: each agent keeps
    /// at most its share (this over the number of agents, [`RetentionSection::shares`]), so a
    /// busy town of 10,000 agents stays within its `maxmemory` as one of 100 does.
    pub mailbox_history_total: u64,
    /// Most entries of the event stream (`tt events`, `tt status`).
    pub events: u64,
    /// Most dead letters, and their longest age.
    pub dead_letters: u64,
    pub dead_letter_secs: u64,
    /// Most shadow records per agent (`tt shadow report`).
    pub shadow_records: u64,
    /// Most journal entries per agent (handlings with each import call's request and answer,
    /// and the actions returned: `tt journal`, `tt replay`); 0 turns the journal off.
    pub journal: u64,
    /// Most journal entries in the whole town: each agent keeps at most its share (this over
    /// the number of agents, [`RetentionSection::journal_share`]), so a town of 10,000 agents
    /// keeps no more journal than one of 100.
    pub journal_total: u64,
    /// Finished (completed, failed, cancelled) tasks are removed after this; their counts by
    /// state stay in `tt status`.
    pub finished_task_secs: u64,
    /// A host whose heartbeat is older than this is forgotten by `tt status`.
    pub dead_host_secs: u64,
    /// The embedded Redis's `maxmemory` (with `noeviction`: a full Redis refuses writes, it
    /// never drops data). The host warns at 80%.
    pub maxmemory_mb: u64,
    /// How often each host sweeps (trims what it serves, archives, forgets dead hosts).
    pub sweep_ms: u64,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            mailbox_history: 1_000,
            mailbox_history_total: 1_000_000,
            events: 50_000,
            dead_letters: 10_000,
            dead_letter_secs: 30 * 86_400,
            shadow_records: 10_000,
            journal: 1_000,
            journal_total: 100_000,
            finished_task_secs: 7 * 86_400,
            dead_host_secs: 86_400,
            maxmemory_mb: 1024,
            sweep_ms: 5_000,
        }
    }
}

/// What each agent of a town keeps of the town-wide budgets, for its number of agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shares {
    /// Journal entries ([`RetentionSection::journal_share`]).
    pub journal: u64,
    /// Acknowledged entries per mailbox stream: `mailbox_history`, or less when
    /// `mailbox_history_total` spread over the agents is less (at least one).
    pub mailbox: u64,
}

impl RetentionSection {
    /// The most journal entries each agent of a town of `agents` keeps: `journal`, or less
    /// when `journal_total` spread over them is less (at least one while the journal is on).
    /// A handling's entry is written trimmed to it, and the sweep cuts to it the journals of
    /// agents that wrote under a larger share (before the town grew).
    pub fn journal_share(&self, agents: u64) -> u64 {
        if self.journal == 0 {
            return 0;
        }
        share(self.journal_total, agents, self.journal)
    }

    /// Each agent's shares of the town-wide budgets in a town of `agents`: what the hosts and
    /// the sweep (`store::sweep`, for the number of agents when it runs) keep.
    pub fn shares(&self, agents: u64) -> Shares {
        Shares {
            journal: self.journal_share(agents),
            mailbox: share(self.mailbox_history_total, agents, self.mailbox_history),
        }
    }

    /// Checks the values; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("mailbox_history", self.mailbox_history),
            ("mailbox_history_total", self.mailbox_history_total),
            ("events", self.events),
            ("dead_letters", self.dead_letters),
            ("shadow_records", self.shadow_records),
            ("journal_total", self.journal_total),
            ("maxmemory_mb", self.maxmemory_mb),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(format!("[retention] {field} = 0: it must be at least 1"));
            }
        }
        if self.maxmemory_mb < 16 {
            return Err(format!(
                "[retention] maxmemory_mb = {}: Redis needs at least 16",
                self.maxmemory_mb
            ));
        }
        if self.sweep_ms < 100 {
            return Err(format!(
                "[retention] sweep_ms = {}: use 100 or more",
                self.sweep_ms
            ));
        }
        Ok(())
    }
}

/// `total` over `agents`, within 1 and `cap`.
fn share(total: u64, agents: u64, cap: u64) -> u64 {
    (total / agents.max(1)).clamp(1, cap.max(1))
}

/// What the applier script is told of the town's rules (its `RULES`).
#[derive(Debug, Clone, Serialize)]
pub struct Rules {
    pub review: Review,
    pub events: u64,
    pub shadow_records: u64,
    /// In a repository town (`[repo]`), the agent that runs the merge queue: an approval then
    /// moves a task to `approved` and goes to it, and only it completes an approved task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merger: Option<String>,
}

impl Rules {
    pub fn new(tasks: &TasksSection, retention: &RetentionSection) -> Rules {
        Rules {
            review: tasks.review,
            events: retention.events,
            shadow_records: retention.shadow_records,
            merger: None,
        }
    }

    /// The rules of the town `config` describes.
    pub fn of(config: &crate::store::config::Config) -> Rules {
        Rules {
            merger: config.repo.as_ref().map(|r| r.merger.clone()),
            ..Rules::new(&config.tasks, &config.retention)
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules::new(&TasksSection::default(), &RetentionSection::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_journal_share_is_the_town_budget_over_the_agents_within_the_per_agent_cap() {
        let r = RetentionSection {
            journal: 1_000,
            journal_total: 100_000,
            ..Default::default()
        };
        assert_eq!(r.journal_share(10), 1_000, "the per-agent cap");
        assert_eq!(r.journal_share(10_000), 10);
        assert_eq!(r.journal_share(0), 1_000, "no agents counted yet");
        assert_eq!(r.journal_share(1_000_000), 1, "never less than one entry");
        let off = RetentionSection { journal: 0, ..r };
        assert_eq!(off.journal_share(10), 0, "the journal is off");
    }

    #[test]
    fn a_mailboxs_history_is_the_town_budget_over_the_agents_within_the_per_stream_cap() {
        let r = RetentionSection::default();
        assert_eq!(r.shares(100).mailbox, 1_000, "the per-stream cap");
        assert_eq!(r.shares(10_000).mailbox, 100);
        assert_eq!(r.shares(0).mailbox, 1_000, "no agents counted yet");
        assert_eq!(r.shares(10_000_000).mailbox, 1, "never less than one entry");
        assert_eq!(r.shares(10_000).journal, r.journal_share(10_000));
    }
}
