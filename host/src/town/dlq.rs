//! Dead letters: messages that could not be handled, kept with the reason.

use anyhow::Result;

use super::{Event, Town};
use crate::store::applier::Op;

impl Town {
    pub async fn dead_letters(&self, n: usize) -> Result<Vec<Event>> {
        let letters = self.range(&self.db.keys.dlq(), false, n).await?;
        Ok(letters.into_iter().map(Event::from).collect())
    }

    /// Puts dead letters back into their mailboxes (`retry`) or deletes them.
    pub async fn dlq_act(&self, entries: &[String], retry: bool) -> Result<usize> {
        for id in entries {
            super::validate_stream_id(id)?;
            let entry = id.clone();
            let op = if retry {
                Op::DlqRetry { entry }
            } else {
                Op::DlqDrop { entry }
            };
            self.as_humans(op).await?;
        }
        Ok(entries.len())
    }
}
