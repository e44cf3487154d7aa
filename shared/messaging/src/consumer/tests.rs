//! The consumer's unit tests: the batch's transaction on an in-memory database, and the loop's
//! hold through a database outage. The broker's side is in the end-to-end tests.

use super::delivery_loop::ConsumerLoop;
use super::transaction::{Core, Incoming};
use super::{Handler, HandlerError};
use crate::failpoint::Failpoints;
use crate::health::BrokerHealth;
use crate::metrics::RuntimeMetrics;
use crate::outbox::OutboxWaker;
use crate::testing::memory_database;
use crate::traces::{Traces, Unit};
use crate::{Names, Outcome};
use choreo_events::payloads::{OrderCompleted, ShipmentFailed};
use choreo_events::{Envelope, Event};
use choreo_store::{Database, Tx};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Writes a row per event and emits `order.completed`; refuses `shipment.failed` for order
/// `bad` permanently, and any other with a transient error for order `busy`.
#[derive(Debug)]
struct Recorder;

impl Handler for Recorder {
    fn handle(
        &self,
        event: &Event,
        _envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError> {
        tx.execute(
            "INSERT INTO seen (order_id) VALUES ($1)",
            &[event.order_id().into()],
        )?;
        match event.order_id() {
            "bad" => Err(HandlerError::Permanent("bad order".into())),
            "busy" => Err(HandlerError::Transient("busy".into())),
            order_id => Ok(vec![Event::OrderCompleted(OrderCompleted {
                order_id: order_id.to_owned(),
            })]),
        }
    }
}

fn incoming(order_id: &str) -> Incoming {
    let envelope = Envelope::root(
        "shipping",
        &Event::ShipmentFailed(ShipmentFailed {
            order_id: order_id.to_owned(),
            reason: "unserviceable_country".into(),
        }),
    );
    Incoming {
        envelope,
        span: tracing::Span::none(),
        kind: 0,
        trace: Unit::none(),
    }
}

/// What `Recorder` does with an event of `order_id`.
fn completed(order_id: &str) -> Outcome {
    Outcome::Handled(vec![Event::OrderCompleted(OrderCompleted {
        order_id: order_id.to_owned(),
    })])
}

async fn apply(
    db: &Database,
    failpoints: &Failpoints,
    batch: Vec<Incoming>,
) -> Result<Vec<Outcome>, HandlerError> {
    let failpoints = failpoints.clone();
    let metrics = RuntimeMetrics::detached(&choreo_events::topology::ORDERS);
    db.write(move |tx| {
        let core = Core {
            handler: &Recorder,
            source: "orders",
            failpoints: &failpoints,
            metrics: &metrics,
        };
        core.apply_all(tx, &batch)
    })
    .await
}

/// The first column of every row `sql` selects, as text.
async fn texts(db: &Database, sql: &'static str) -> Vec<String> {
    db.read(move |tx| {
        tx.query(sql, &[])?
            .into_iter()
            .map(|mut row| row.take::<String>(0))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .expect(sql)
}

async fn count(db: &Database, sql: &'static str) -> i64 {
    db.read(move |tx| tx.query_opt(sql, &[])?.unwrap_or_default().take::<i64>(0))
        .await
        .expect("count")
}

async fn database() -> Database {
    let db = memory_database().await;
    db.write(|tx| tx.execute("CREATE TABLE seen (order_id TEXT NOT NULL)", &[]))
        .await
        .expect("table");
    db
}

#[tokio::test]
async fn in_a_batch_a_failing_message_loses_only_its_own_writes() {
    let db = database().await;

    let outcomes = apply(
        &db,
        &Failpoints::default(),
        vec![
            incoming("a"),
            incoming("bad"),
            incoming("busy"),
            incoming("b"),
        ],
    )
    .await
    .expect("committed");

    assert_eq!(
        outcomes,
        [
            completed("a"),
            Outcome::DeadLettered("bad order".into()),
            Outcome::Retried("busy".into()),
            completed("b"),
        ]
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 2);
}

#[tokio::test]
async fn a_batch_runs_in_order_of_order_id_keeping_each_orders_own_order() {
    let db = database().await;
    let (z1, a, z2) = (incoming("z"), incoming("a"), incoming("z"));
    let (z1_id, z2_id) = (z1.envelope.id.clone(), z2.envelope.id.clone());

    let outcomes = apply(&db, &Failpoints::default(), vec![z1, a, z2])
        .await
        .expect("committed");

    // Outcomes come back in delivery order; the work ran as a, z (first), z (second).
    assert_eq!(outcomes, [completed("z"), completed("a"), completed("z")]);
    let seen = texts(&db, "SELECT order_id FROM seen ORDER BY rowid").await;
    assert_eq!(seen, ["a", "z", "z"]);
    let inbox = texts(&db, "SELECT event_id FROM inbox ORDER BY rowid").await;
    assert_eq!(inbox[1..], [z1_id, z2_id]);
    // The batch's outbox rows, written together, take their seq in the order the work ran.
    let outbox = texts(&db, "SELECT correlation_id FROM outbox ORDER BY seq").await;
    assert_eq!(outbox, ["a", "z", "z"]);
}

#[tokio::test]
async fn a_batch_whose_shared_outbox_statement_fails_runs_message_by_message() {
    let db = database().await;
    // The outbox refuses one order's row: the batch's one outbox statement fails whole.
    db.write(|tx| {
        tx.execute(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON outbox
             WHEN NEW.correlation_id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poison row'); END",
            &[],
        )
    })
    .await
    .expect("trigger");

    let outcomes = apply(
        &db,
        &Failpoints::default(),
        vec![incoming("a"), incoming("poison"), incoming("b")],
    )
    .await
    .expect("committed");

    // Run one by one, only the refused message fails (retried, with the database's reason);
    // the others are handled and keep their writes.
    assert_eq!(outcomes[0], completed("a"));
    assert!(
        matches!(&outcomes[1], Outcome::Retried(reason) if reason.contains("poison row")),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], completed("b"));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 2);
}

#[tokio::test]
async fn a_message_alone_that_fails_keeps_nothing_and_says_why() {
    let db = database().await;

    let failed = apply(&db, &Failpoints::default(), vec![incoming("bad")]).await;

    assert_eq!(failed, Err(HandlerError::Permanent("bad order".into())));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 0);
}

#[tokio::test]
async fn a_redelivered_event_is_a_duplicate_with_no_effect() {
    let db = database().await;
    let first = incoming("a");
    let again = Incoming {
        envelope: first.envelope.clone(),
        span: tracing::Span::none(),
        kind: 0,
        trace: Unit::none(),
    };
    apply(&db, &Failpoints::default(), vec![first])
        .await
        .expect("first");

    let outcomes = apply(&db, &Failpoints::default(), vec![again, incoming("b")])
        .await
        .expect("second");

    assert_eq!(outcomes, [Outcome::Duplicate, completed("b")]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
}

#[tokio::test]
async fn a_transient_failpoint_fails_the_first_n_tries_of_messages_even_in_batches() {
    let db = database().await;
    let failpoints = Failpoints::parse("consumer.before_handle=transient:2").expect("spec");

    let outcomes = apply(
        &db,
        &failpoints,
        vec![incoming("a"), incoming("b"), incoming("c")],
    )
    .await
    .expect("committed");

    // Exactly the first two tries failed; the third message went through.
    assert!(matches!(outcomes[0], Outcome::Retried(_)), "{outcomes:?}");
    assert!(matches!(outcomes[1], Outcome::Retried(_)), "{outcomes:?}");
    assert_eq!(outcomes[2], completed("c"));
}

/// Unavailable (the database "down") for its first `outage` calls, then handles; asks
/// `stop` to stop at its first call.
#[derive(Debug)]
struct Outage {
    outage: u32,
    calls: std::sync::atomic::AtomicU32,
    stop: CancellationToken,
}

impl Handler for Outage {
    fn handle(
        &self,
        event: &Event,
        envelope: &Envelope,
        tx: &mut dyn Tx,
    ) -> Result<Vec<Event>, HandlerError> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if call == 0 {
            self.stop.cancel();
        }
        if call < self.outage {
            return Err(HandlerError::Unavailable("database down".into()));
        }
        Recorder.handle(event, envelope, tx)
    }
}

fn consumer(db: Database, outage: u32, stop: CancellationToken) -> ConsumerLoop<Outage> {
    ConsumerLoop {
        handler: Arc::new(Outage {
            outage,
            calls: Default::default(),
            stop,
        }),
        db,
        names: Names::new(""),
        service: choreo_events::topology::ORDERS,
        waker: OutboxWaker::default(),
        retry_delays: vec![Duration::from_secs(1)],
        health: Arc::new(BrokerHealth::default()),
        failpoints: Failpoints::default(),
        max_batch: 32,
        linger: Duration::ZERO,
        metrics: Arc::new(RuntimeMetrics::detached(&choreo_events::topology::ORDERS)),
        traces: Traces::off(),
        redeliver: choreo_events::topology::ORDERS.redeliver_exchange(),
        queue: choreo_events::topology::ORDERS.name.to_owned(),
    }
}

#[tokio::test]
async fn a_batch_is_held_while_the_database_is_down_and_handled_whole_when_it_is_back() {
    let db = database().await;
    let consumer = consumer(db.clone(), 3, CancellationToken::new());

    let outcomes = consumer
        .apply_holding(
            vec![incoming("a"), incoming("b")],
            &CancellationToken::new(),
        )
        .await;

    // Three failed tries spent no retry: both are handled, neither retried nor dead-lettered.
    assert_eq!(outcomes, Some(vec![completed("a"), completed("b")]));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 2);
}

#[tokio::test]
async fn a_stop_during_an_outage_leaves_the_whole_batch_unhandled() {
    let db = database().await;
    let stop = CancellationToken::new();
    // The stop arrives while the first try is failing.
    let consumer = consumer(db.clone(), u32::MAX, stop.clone());

    let outcomes = consumer
        .apply_holding(vec![incoming("a"), incoming("b"), incoming("c")], &stop)
        .await;

    // Nothing to ack: the broker gets every delivery of the batch back.
    assert_eq!(outcomes, None);
    assert_eq!(
        consumer
            .handler
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM seen").await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, 0);
}
