//! The WIT `exec` interface, answered on the instance's state.

use super::grant::ExecGrant;
use crate::runtime::bindings::tinytown::agent::exec as wit;
use crate::runtime::instance::State;

impl wit::Host for State {
    fn run(&mut self, cmd: wit::Command) -> Result<wit::Output, String> {
        let Some(grant) = self.grants.get::<ExecGrant>() else {
            return Err("exec is not granted to this agent".into());
        };
        self.outside_guest(|s| grant.run(s.agent(), cmd))
    }
}
