//! The WIT `exec` interface, answered on the instance's state: 0.2.0's `run` and `run-in`, and
//! 0.1.0's `run` (same records, converted).

use std::time::Instant;

use super::grant::{ConfinedExec, ExecGrant};
use crate::runtime::bindings::tinytown::agent::exec as wit;
use crate::runtime::bindings::v0_1::tinytown::agent::exec as wit_0_1;
use crate::runtime::instance::State;
use crate::runtime::record::Call;
use crate::runtime::replay::Answer;

impl State {
    /// Runs `cmd` (in `dir` when given) under the agent's grant, outside the guest's time
    /// budget, and records the call.
    async fn exec(
        &mut self,
        function: &str,
        dir: Option<String>,
        cmd: wit::Command,
    ) -> Result<wit::Output, String> {
        let started = Instant::now();
        let request = (dir.clone(), cmd.clone());
        match self.replayed("exec", function, &request) {
            Some(Answer::Recorded(v)) => {
                return serde_json::from_value(v).unwrap_or_else(|e| {
                    Err(format!("replay: the recorded answer does not read: {e}"))
                })
            }
            Some(Answer::Refused) => {
                return Err(format!(
                    "replay: the original never ran `{}` like this, and a replay runs no program \
                     (tt replay --allow-exec runs them)",
                    cmd.program
                ))
            }
            Some(Answer::Live) | None => {}
        }
        let agent = self.agent().to_string();
        // A grant from tinytown.toml carries its sandbox; one built in code as a bare
        // `ExecGrant` runs in the default sandbox.
        let r = if let Some(grant) = self.grants.get::<ConfinedExec>() {
            self.outside_guest(
                grant
                    .exec
                    .run_in(&grant.sandbox, &agent, dir.as_deref(), cmd),
            )
            .await
        } else if let Some(grant) = self.grants.get::<ExecGrant>() {
            self.outside_guest(grant.run(&agent, dir.as_deref(), cmd))
                .await
        } else {
            Err("exec is not granted to this agent".into())
        };
        self.record(Call::new("exec", function, request, &r, started.elapsed()));
        r
    }
}

impl wit::Host for State {
    async fn run(&mut self, cmd: wit::Command) -> Result<wit::Output, String> {
        self.exec("run", None, cmd).await
    }

    async fn run_in(&mut self, dir: String, cmd: wit::Command) -> Result<wit::Output, String> {
        self.exec("run-in", Some(dir), cmd).await
    }
}

impl wit_0_1::Host for State {
    async fn run(&mut self, cmd: wit_0_1::Command) -> Result<wit_0_1::Output, String> {
        let cmd = wit::Command {
            program: cmd.program,
            args: cmd.args,
            stdin: cmd.stdin,
            timeout_ms: cmd.timeout_ms,
        };
        let out = self.exec("run", None, cmd).await?;
        Ok(wit_0_1::Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: out.timed_out,
            truncated: out.truncated,
        })
    }
}
