//! The WIT `exec` interface, answered on the instance's state.

use super::grant::{ConfinedExec, ExecGrant};
use crate::runtime::bindings::tinytown::agent::exec as wit;
use crate::runtime::instance::State;

impl wit::Host for State {
    fn run(&mut self, cmd: wit::Command) -> Result<wit::Output, String> {
        // A grant from tinytown.toml carries its sandbox; one built in code as a bare
        // `ExecGrant` runs in the default sandbox.
        if let Some(grant) = self.grants.get::<ConfinedExec>() {
            return self.outside_guest(|s| grant.exec.run_in(&grant.sandbox, s.agent(), cmd));
        }
        let Some(grant) = self.grants.get::<ExecGrant>() else {
            return Err("exec is not granted to this agent".into());
        };
        self.outside_guest(|s| grant.run(s.agent(), cmd))
    }
}
