//! Everything a run creates outside its own process, recorded as soon as it exists, so that a
//! sweep removes it whatever happened in between: an error, a failed phase, a panic, Ctrl-C.
//! The sweep checks its work and keeps what is still there (the broker was restarting, say)
//! for the next sweep; what the last one could not remove is reported.
//!
//! Service processes are not listed here: they are spawned with `kill_on_drop`, so dropping a
//! deployment (which an error or Ctrl-C does) ends them.

use choreo_e2e::{amqp_url, delete_topology, drop_databases, postgres_url};
use choreo_events::topology::ORDERS;
use choreo_messaging::Names;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a sweep waits for a broker that cannot be reached (one being restarted).
const BROKER_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Created {
    /// Suite prefixes whose exchanges and queues the services declared, with the retry delays
    /// the services ran with (they name the delay queues).
    prefixes: Vec<(String, Vec<u64>)>,
    /// Queues the bench declared itself (the broker measurements, the probe, partitions).
    queues: Vec<String>,
    /// Exchanges the bench declared itself (a partitioned deployment's hash exchange).
    exchanges: Vec<String>,
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

    pub fn exchange(&self, exchange: &str) {
        self.with(|c| c.exchanges.push(exchange.to_owned()));
    }

    pub fn database(&self, database: &str) {
        self.with(|c| c.databases.push(database.to_owned()));
    }

    /// Removes everything listed so far; what is still there afterwards stays listed, and is
    /// returned as text ("queues and exchanges under bench-1234.sqlite.", "database ...").
    pub async fn sweep(&self) -> Vec<String> {
        let created = self.with(std::mem::take);
        let mut left = Created::default();
        if !created.prefixes.is_empty()
            || !created.queues.is_empty()
            || !created.exchanges.is_empty()
        {
            match connect_patiently().await {
                None => {
                    left.prefixes = created.prefixes;
                    left.queues = created.queues;
                    left.exchanges = created.exchanges;
                }
                Some(connection) => {
                    for exchange in created.exchanges {
                        // Kept for the next sweep unless the broker said it is deleted.
                        let deleted = match connection.create_channel().await {
                            Ok(channel) => channel
                                .exchange_delete(
                                    exchange.as_str().into(),
                                    ExchangeDeleteOptions::default(),
                                )
                                .await
                                .is_ok(),
                            Err(_) => false,
                        };
                        if !deleted {
                            left.exchanges.push(exchange);
                        }
                    }
                    for (prefix, delays) in created.prefixes {
                        delete_topology(&prefix, &delays).await;
                        if prefix_exists(&connection, &prefix).await {
                            left.prefixes.push((prefix, delays));
                        }
                    }
                    for queue in created.queues {
                        // A fresh channel each time: an error closes the channel it happened on.
                        if let Ok(channel) = connection.create_channel().await {
                            let _ = channel
                                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                                .await;
                        }
                        if queue_exists(&connection, &queue).await {
                            left.queues.push(queue);
                        }
                    }
                    let _ = connection.close(200, "bench cleaned up".into()).await;
                }
            }
        }
        drop_databases(&created.databases).await;
        left.databases = databases_left(created.databases).await;
        let described = left
            .prefixes
            .iter()
            .map(|(prefix, _)| format!("queues and exchanges under {prefix}"))
            .chain(left.queues.iter().map(|q| format!("queue {q}")))
            .chain(left.exchanges.iter().map(|e| format!("exchange {e}")))
            .chain(left.databases.iter().map(|d| format!("database {d}")))
            .collect();
        self.with(|c| {
            c.prefixes.extend(left.prefixes);
            c.queues.extend(left.queues);
            c.exchanges.extend(left.exchanges);
            c.databases.extend(left.databases);
        });
        described
    }
}

async fn connect_patiently() -> Option<Connection> {
    let started = Instant::now();
    loop {
        match Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
            Ok(connection) => return Some(connection),
            Err(_) if started.elapsed() < BROKER_PATIENCE => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(_) => return None,
        }
    }
}

/// Whether the suite under `prefix` still has its orders queue or exchange (passive declares
/// fail on what does not exist).
async fn prefix_exists(connection: &Connection, prefix: &str) -> bool {
    if queue_exists(connection, &Names::new(prefix).of(ORDERS.name)).await {
        return true;
    }
    let Ok(channel) = connection.create_channel().await else {
        return true;
    };
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let exchange = Names::new(prefix).of(ORDERS.exchange);
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await
        .is_ok()
}

async fn queue_exists(connection: &Connection, queue: &str) -> bool {
    let Ok(channel) = connection.create_channel().await else {
        return true;
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok()
}

/// Which of `databases` still exist (all of them, as far as anyone can tell, when PostgreSQL
/// cannot be reached).
async fn databases_left(databases: Vec<String>) -> Vec<String> {
    use sqlx::Connection as _;
    if databases.is_empty() {
        return databases;
    }
    let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_url("postgres")).await else {
        return databases;
    };
    let existing: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database")
        .fetch_all(&mut admin)
        .await
        .unwrap_or_else(|_| databases.clone());
    let _ = admin.close().await;
    databases
        .into_iter()
        .filter(|d| existing.contains(d))
        .collect()
}
