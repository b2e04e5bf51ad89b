//! Dead letters: messages that could not be handled, kept with the reason.

use anyhow::Result;

use super::{Event, Town};
use crate::store::applier::Op;
use crate::store::streams;

impl Town {
    pub async fn dead_letters(&self, n: usize) -> Result<Vec<Event>> {
        let mut c = self.db.conn.clone();
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(self.db.keys.dlq())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(n.min(i64::MAX as usize))
            .query_async(&mut c)
            .await?;
        Ok(streams::entries(&v)
            .into_iter()
            .map(|e| Event {
                fields: e.text_map(),
                id: e.id,
            })
            .collect())
    }

    /// Puts dead letters back into their mailboxes (`retry`) or deletes them.
    pub async fn dlq_act(&self, entries: &[String], retry: bool) -> Result<usize> {
        for id in entries {
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
