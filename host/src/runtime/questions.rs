//! The `host` import: the read-only questions a guest may ask (the clock, tasks, agents, the
//! backlog, its own state) and `log`, answered on the instance's state for both WIT versions
//! (0.1.0's delegate to 0.2.0's). In a replay the answers come from the journal
//! ([`super::replay`]); otherwise from the town ([`super::lookup`]), each recorded.

use std::time::{Duration, Instant};

use super::bindings::{self, wit};
use super::instance::State;
use super::record::Call;

impl bindings::tinytown::agent::types::Host for State {}

use bindings::tinytown::agent::host as host_0_2;

impl host_0_2::Host for State {
    async fn now_ms(&mut self) -> u64 {
        if let Some(t) = self.replayed_lookup::<u64>("now-ms", &()) {
            return t;
        }
        let now = crate::store::model::now_ms();
        self.record(Call::new("host", "now-ms", (), now, Duration::ZERO));
        now
    }
    async fn self_name(&mut self) -> String {
        self.agent.clone()
    }
    async fn get_task(&mut self, id: String) -> Option<wit::TaskInfo> {
        if let Some(v) = self.replayed_lookup("get-task", &id) {
            return v;
        }
        let started = Instant::now();
        let r = self.lookup.task(&id).await;
        self.answer("get-task", id, started, r)
    }
    async fn get_agent(&mut self, name: String) -> Option<wit::AgentInfo> {
        if let Some(v) = self.replayed_lookup("get-agent", &name) {
            return v;
        }
        let started = Instant::now();
        let r = self.lookup.agent(&name).await;
        self.answer("get-agent", name, started, r)
    }
    async fn list_agents(&mut self, role: Option<String>) -> Vec<wit::AgentInfo> {
        if let Some(v) = self.replayed_lookup("list-agents", &role) {
            return v;
        }
        let started = Instant::now();
        let r = self.lookup.agents(role.as_deref()).await;
        self.answer("list-agents", role, started, r)
    }
    async fn backlog(&mut self) -> Vec<wit::TaskInfo> {
        if let Some(v) = self.replayed_lookup("backlog", &()) {
            return v;
        }
        let started = Instant::now();
        let r = self.lookup.backlog().await;
        self.answer("backlog", (), started, r)
    }
    async fn get_state(&mut self, key: String) -> Option<String> {
        if let Some(v) = self.replayed_lookup("get-state", &key) {
            return v;
        }
        let started = Instant::now();
        let r = self.lookup.state(&self.agent, &key).await;
        self.answer("get-state", key, started, r)
    }
    async fn log(&mut self, level: wit::LogLevel, text: String) {
        let text: String = text.chars().take(4096).collect();
        match level {
            wit::LogLevel::Debug => tracing::debug!(agent = %self.agent, "{text}"),
            wit::LogLevel::Info => tracing::info!(agent = %self.agent, "{text}"),
            wit::LogLevel::Warn => tracing::warn!(agent = %self.agent, "{text}"),
            wit::LogLevel::Error => tracing::error!(agent = %self.agent, "{text}"),
        }
    }
}

/// The 0.1.0 `host` interface: the same questions, answered by the 0.2.0 code.
impl bindings::v0_1::tinytown::agent::host::Host for State {
    async fn now_ms(&mut self) -> u64 {
        host_0_2::Host::now_ms(self).await
    }
    async fn self_name(&mut self) -> String {
        host_0_2::Host::self_name(self).await
    }
    async fn get_task(&mut self, id: String) -> Option<wit::TaskInfo> {
        host_0_2::Host::get_task(self, id).await
    }
    async fn get_agent(&mut self, name: String) -> Option<wit::AgentInfo> {
        host_0_2::Host::get_agent(self, name).await
    }
    async fn list_agents(&mut self, role: Option<String>) -> Vec<wit::AgentInfo> {
        host_0_2::Host::list_agents(self, role).await
    }
    async fn backlog(&mut self) -> Vec<wit::TaskInfo> {
        host_0_2::Host::backlog(self).await
    }
    async fn get_state(&mut self, key: String) -> Option<String> {
        host_0_2::Host::get_state(self, key).await
    }
    async fn log(&mut self, level: wit::LogLevel, text: String) {
        host_0_2::Host::log(self, level, text).await
    }
}
