//! Everything a run creates outside its own process, recorded as soon as it exists, so that one
//! sweep at the end removes it whatever happened in between: an error, a failed phase, Ctrl-C.
//!
//! Service processes are not listed here: they are spawned with `kill_on_drop`, so dropping a
//! deployment (which an error or Ctrl-C does) ends them.

use choreo_e2e::{amqp_url, delete_topology, drop_databases};
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
struct Created {
    /// Suite prefixes whose exchanges and queues the services declared, with the retry delays
    /// the services ran with (they name the delay queues).
    prefixes: Vec<(String, Vec<u64>)>,
    /// Queues the bench declared itself (the broker measurements).
    queues: Vec<String>,
    /// PostgreSQL databases.
    databases: Vec<String>,
}

/// A shared list of what to remove; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Cleanup(Arc<Mutex<Created>>);

impl Cleanup {
    fn with<T>(&self, f: impl FnOnce(&mut Created) -> T) -> T {
        // A panic elsewhere must not stop the cleanup: a poisoned list is still a list.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn prefix(&self, prefix: &str, retry_delays_ms: &[u64]) {
        self.with(|c| {
            c.prefixes
                .push((prefix.to_owned(), retry_delays_ms.to_vec()))
        });
    }

    pub fn queue(&self, queue: &str) {
        self.with(|c| c.queues.push(queue.to_owned()));
    }

    pub fn database(&self, database: &str) {
        self.with(|c| c.databases.push(database.to_owned()));
    }

    /// Removes everything listed so far and forgets it; best effort, never fails.
    pub async fn sweep(&self) {
        let created = self.with(std::mem::take);
        for (prefix, delays) in &created.prefixes {
            delete_topology(prefix, delays).await;
        }
        if !created.queues.is_empty()
            && let Ok(connection) =
                Connection::connect(&amqp_url(), ConnectionProperties::default()).await
        {
            for queue in &created.queues {
                // A fresh channel each time: an error closes the channel it happened on.
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            let _ = connection.close(200, "bench cleaned up".into()).await;
        }
        drop_databases(&created.databases).await;
    }
}
