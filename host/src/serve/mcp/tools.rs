//! The MCP tools: one per town operation, each with its annotations (read-only, destructive)
//! and a typed argument schema, each calling the same service as the CLI through
//! [`Townhall::run`], which checks the scope and audits writes.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{tool, tool_router, ErrorData};
use schemars::JsonSchema;
use serde::Deserialize;

use super::Townhall;
use crate::serve::api;
use crate::store::model::TaskState;
use crate::town::auth::Scope;

#[derive(Deserialize, JsonSchema)]
pub struct TasksArgs {
    /// Only tasks in this state (pending, assigned, running, in-review, completed, ...).
    pub state: Option<String>,
    /// Only tasks this agent owns.
    pub agent: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct NameArgs {
    /// An agent's name (`conductor` is the humans' mailbox).
    pub name: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct IdArgs {
    /// A task id (t1) or a dead letter's id (1733000000000-0).
    pub id: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct SendArgs {
    /// An agent, or `conductor` (the humans).
    pub to: String,
    pub body: String,
    /// task (default), info, query or ack.
    pub kind: Option<String>,
    #[serde(default)]
    pub urgent: bool,
}

#[derive(Deserialize, JsonSchema)]
pub struct AssignArgs {
    pub agent: String,
    pub description: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct FinishArgs {
    pub id: String,
    /// The result (complete) or the error (fail).
    pub text: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct BacklogArgs {
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct SwapArgs {
    pub agent: String,
    /// A component file on the server, relative to the town directory.
    pub plugin: String,
    /// Shadow (run beside the live plugin and compare) instead of replacing.
    #[serde(default)]
    pub shadow: bool,
}

#[tool_router(vis = "pub(super)")]
impl Townhall {
    /// The town at a glance: agents with state and mailbox depths, tasks by state, backlog,
    /// dead letters, hosts and recent events.
    #[tool(annotations(title = "Town status", read_only_hint = true))]
    async fn status(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        self.run(&ctx, "status", Scope::Read, self.town().status(10))
            .await
    }

    /// Every agent with its state, role, plugin, mailbox depth and tasks in hand.
    #[tool(annotations(title = "List agents", read_only_hint = true))]
    async fn list_agents(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(&ctx, "list_agents", Scope::Read, self.town().list())
            .await
    }

    /// Tasks, optionally by state or owner.
    #[tool(annotations(title = "List tasks", read_only_hint = true))]
    async fn list_tasks(
        &self,
        Parameters(a): Parameters<TasksArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = self.town().tasks(a.state.as_deref(), a.agent.as_deref());
        self.run(&ctx, "list_tasks", Scope::Read, work).await
    }

    /// One task with its history.
    #[tool(annotations(title = "Show a task", read_only_hint = true))]
    async fn show_task(
        &self,
        Parameters(a): Parameters<IdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(&ctx, "show_task", Scope::Read, self.town().need_task(&a.id))
            .await
    }

    /// A mailbox without changing it: what waits and what a host holds. `conductor` is the
    /// humans' mailbox, where agents report and escalate.
    #[tool(annotations(title = "Read a mailbox", read_only_hint = true))]
    async fn inbox(
        &self,
        Parameters(a): Parameters<NameArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(&ctx, "inbox", Scope::Read, self.town().inbox(&a.name))
            .await
    }

    /// Sends a message to an agent (or to `conductor`) as the humans.
    #[tool(annotations(
        title = "Send a message",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false
    ))]
    async fn send(
        &self,
        Parameters(a): Parameters<SendArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let kind = match api::kind_of(a.kind.as_deref()) {
            Ok(k) => k,
            Err(p) => return Err(ErrorData::invalid_params(p.detail, None)),
        };
        let work = async {
            Ok(
                serde_json::json!({"id": self.town().send(&a.to, &a.body, kind, a.urgent, None).await?}),
            )
        };
        self.run(&ctx, "send", Scope::Write, work).await
    }

    /// Creates a task and assigns it to an agent, in one step.
    #[tool(annotations(
        title = "Assign a task",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false
    ))]
    async fn assign(
        &self,
        Parameters(a): Parameters<AssignArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = async {
            let id = self.town().assign(&a.agent, &a.description, None).await?;
            self.town().need_task(&id).await
        };
        self.run(&ctx, "assign", Scope::Write, work).await
    }

    /// Completes a task with its result; refused when the task's state does not allow it.
    #[tool(annotations(
        title = "Complete a task",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false
    ))]
    async fn complete_task(
        &self,
        Parameters(a): Parameters<FinishArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = self
            .town()
            .transition(&a.id, TaskState::Completed, Some(&a.text));
        self.run(&ctx, "complete_task", Scope::Write, work).await
    }

    /// Fails a task with the error.
    #[tool(annotations(
        title = "Fail a task",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false
    ))]
    async fn fail_task(
        &self,
        Parameters(a): Parameters<FinishArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = self
            .town()
            .transition(&a.id, TaskState::Failed, Some(&a.text));
        self.run(&ctx, "fail_task", Scope::Write, work).await
    }

    /// The backlog: tasks waiting for an owner, oldest first.
    #[tool(annotations(title = "List the backlog", read_only_hint = true))]
    async fn backlog(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        self.run(&ctx, "backlog", Scope::Read, self.town().backlog())
            .await
    }

    /// Adds a task to the backlog; conductor policies are told about it.
    #[tool(annotations(
        title = "Add to the backlog",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false
    ))]
    async fn backlog_add(
        &self,
        Parameters(a): Parameters<BacklogArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = async {
            let id = self.town().backlog_add(&a.description, &a.tags).await?;
            self.town().need_task(&id).await
        };
        self.run(&ctx, "backlog_add", Scope::Write, work).await
    }

    /// Dead letters: messages that could not be handled, with the reason.
    #[tool(annotations(title = "List dead letters", read_only_hint = true))]
    async fn dlq(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        self.run(&ctx, "dlq", Scope::Read, self.town().dead_letters(100))
            .await
    }

    /// Puts a dead letter back into its agent's mailbox.
    #[tool(annotations(
        title = "Retry a dead letter",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false
    ))]
    async fn dlq_retry(
        &self,
        Parameters(a): Parameters<IdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = async {
            self.town()
                .dlq_act(std::slice::from_ref(&a.id), true)
                .await
                .map(|_| serde_json::json!({"retried": a.id}))
        };
        self.run(&ctx, "dlq_retry", Scope::Write, work).await
    }

    /// Deletes a dead letter for good.
    #[tool(annotations(
        title = "Drop a dead letter",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true
    ))]
    async fn dlq_drop(
        &self,
        Parameters(a): Parameters<IdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let work = async {
            self.town()
                .dlq_act(std::slice::from_ref(&a.id), false)
                .await
                .map(|_| serde_json::json!({"dropped": a.id}))
        };
        self.run(&ctx, "dlq_drop", Scope::Manage, work).await
    }

    /// Replaces (or shadows) an agent's policy with another component; the candidate is loaded
    /// and checked first, and nothing switches when it fails.
    #[tool(annotations(
        title = "Swap a policy",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false
    ))]
    async fn swap(
        &self,
        Parameters(a): Parameters<SwapArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = self.town().config.resolve(std::path::Path::new(&a.plugin));
        let work = async {
            let d = crate::host::swap::swap(self.town(), &a.agent, &path, a.shadow).await?;
            Ok(serde_json::json!({"agent": a.agent, "digest": d.to_string(), "shadow": a.shadow}))
        };
        self.run(&ctx, "swap", Scope::Manage, work).await
    }

    /// How a shadow policy's decisions compare with the live one's.
    #[tool(annotations(title = "Shadow report", read_only_hint = true))]
    async fn shadow_report(
        &self,
        Parameters(a): Parameters<NameArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            &ctx,
            "shadow_report",
            Scope::Read,
            crate::host::swap::report(self.town(), &a.name),
        )
        .await
    }
}
