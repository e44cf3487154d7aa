//! The attack row of the fault matrix: hostile clients and forged events while a steady stream
//! of honest orders flows. For the length of the attack, on loopback only and bounded in count
//! and time:
//!
//! - **flooders** ask `GET /orders?limit=500` (the most expensive read there is) back to back;
//! - **slow clients** open connections and trickle a request head a header line at a time,
//!   never finishing it (slowloris), or send a whole head and trickle the body a byte at a time:
//!   the server must close or answer each within its header-read or body timeout;
//! - **bad bodies**: oversized, not declared JSON, malformed JSON, invalid values, each of which
//!   must be refused with its 4xx and the contract's JSON error shape, never a 5xx;
//! - **made-up methods**: requests whose method is a 1,000-character token, each of which must
//!   be refused with a 4xx and the JSON error shape, and none of which may add a metric series;
//! - **a stream flood**: three times as many `GET /live` streams of the observer (which runs in
//!   this row, with [`OBSERVER_MAX_CONNECTIONS`]) as it has places for, held open for the whole
//!   attack: exactly its places are granted, every other one is refused 503 with `Retry-After`,
//!   its `/healthz` and `/sagas` answer 200 all along, and once the streams go a new one is
//!   granted;
//! - **forgeries**: well-formed events about real orders that lie about their origin (a type
//!   that differs from the routing key, a foreign `source`, a foreign exchange, `x-original-*`
//!   headers that vouch for them), and garbage whose provenance headers are too long to be a
//!   routing key or of the wrong type, each of which every queue it reaches must dead-letter
//!   once without effect. After the row's checks, billing's dead letters are all redriven: each
//!   must be dead-lettered again, and no order's payment may change.
//!
//! The row then holds the suite to this: honest orders keep completing at a stated fraction of
//! the rate they did before the attack ([`MIN_RATE_FRACTION`]), every order still finishes
//! with the right effects (the matrix's usual checks, which a believed forgery would break:
//! a refund of a completed order), and the dead-letter queues hold exactly the forgeries.

use super::World;
use anyhow::{Context, Result};
use choreo_e2e::amqp_url;
use choreo_events::EventType;
use choreo_events::topology::{BILLING, ORDERS, SHIPPING};
use choreo_messaging::Names;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The header-read timeout the services run with in this row, short so the row stays short.
pub const HEADER_TIMEOUT_MS: u64 = 1_000;
/// The body timeout the services run with in this row, likewise.
pub const BODY_TIMEOUT_MS: u64 = 1_000;
/// The connection limit of the observer in this row: a quarter of it are stream places.
pub const OBSERVER_MAX_CONNECTIONS: usize = 16;
/// The least share of the pre-attack completion rate the suite must keep during the attack.
/// The attackers run on the same two cores as the broker and the services, so part of the
/// capacity they take is the machine's, not the suite's.
pub const MIN_RATE_FRACTION: f64 = 0.8;

/// How hard and how long to attack.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub duration: Duration,
    pub flooders: usize,
    pub slow_clients: usize,
    /// Orders each kind of forgery is sent about.
    pub forged_orders: usize,
}

impl Plan {
    /// Honest orders per second in this row: `orders` spread over three times the attack, which
    /// starts a third of the way in, so the rate before the attack and during it are both
    /// measured on a steady load well under the suite's capacity.
    pub fn rate(&self, orders: usize) -> f64 {
        orders as f64 / (3.0 * self.duration.as_secs_f64())
    }

    pub fn for_orders(orders: usize) -> Plan {
        if orders >= 1_000 {
            Plan {
                duration: Duration::from_secs(8),
                flooders: 4,
                slow_clients: 64,
                forged_orders: 10,
            }
        } else {
            Plan {
                duration: Duration::from_secs(3),
                flooders: 2,
                slow_clients: 16,
                forged_orders: 3,
            }
        }
    }

    /// The dead letters the forgeries leave: (service, count). Kinds 1, 2, 4, 5 and 6 reach
    /// billing, kinds 2 and 3 reach orders (see [`forgeries`]).
    pub fn forged_dead_letters(&self) -> [(&'static str, u32); 3] {
        let n = self.forged_orders as u32;
        [("orders", 2 * n), ("billing", 5 * n), ("shipping", 0)]
    }
}

/// What the attack saw, and what it found wrong.
#[derive(Debug, Default)]
pub struct Outcome {
    pub started: Option<Instant>,
    pub ended: Option<Instant>,
    pub problems: Vec<String>,
    pub summary: String,
    /// The orders the forgeries were about.
    pub targets: Vec<String>,
}

/// Stamps every terminal event (`order.completed`, `order.cancelled`) of the row's suite as it
/// arrives on an exclusive queue of its own: the completion rate before and during the attack.
pub struct TerminalProbe {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    _connection: Connection,
}

impl TerminalProbe {
    pub async fn start(prefix: &str) -> Result<TerminalProbe> {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let queue = format!("{prefix}chaos.terminal");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let exchange = Names::new(prefix).of(ORDERS.exchange);
        for key in
            [EventType::OrderCompleted, EventType::OrderCancelled].map(EventType::routing_key)
        {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "chaos-terminal".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stamps = arrivals.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = consumer.next().await {
                stamps
                    .lock()
                    .expect("the probe's lock is never poisoned")
                    .push(Instant::now());
            }
        });
        Ok(TerminalProbe {
            arrivals,
            _connection: connection,
        })
    }

    /// Terminal events per second in `[from, to)`.
    pub fn rate(&self, from: Instant, to: Instant) -> f64 {
        let arrivals = self.arrivals.lock().expect("never poisoned");
        let count = arrivals.iter().filter(|t| **t >= from && **t < to).count();
        count as f64 / to.duration_since(from).as_secs_f64().max(0.001)
    }
}

/// Runs every attacker at once for `plan.duration`; returns when all of them stopped.
pub async fn run(world: &World, plan: Plan) -> Result<Outcome> {
    let orders = world.first("orders");
    let base = orders.url("");
    let port = orders.port;
    let deadline = Instant::now() + plan.duration;
    let mut outcome = Outcome {
        started: Some(Instant::now()),
        ..Outcome::default()
    };
    let targets = newest_orders(world, &base, plan.forged_orders).await?;
    let (flood, slow, bodies, forged, streams) = tokio::join!(
        flood(world, &base, plan.flooders, deadline),
        slow_clients(port, plan.slow_clients, deadline),
        bad_bodies(world, &base, deadline),
        forge(&world.prefix, &targets),
        stream_flood(world, deadline),
    );
    outcome.ended = Some(Instant::now());
    let (flood, slow, bodies, streams) = (flood?, slow?, bodies?, streams?);
    forged.context("publishing the forgeries")?;
    outcome.summary = format!(
        "{} flood requests ({} shed), {} of {} slow clients cut off by the server, {} bad bodies and made-up methods refused, {} forgeries, {} observer streams granted and {} refused with {} health and API checks answered",
        flood.answered,
        flood.shed,
        slow.closed,
        plan.slow_clients,
        bodies.refused,
        FORGERY_KINDS * targets.len(),
        streams.granted,
        streams.refused,
        streams.checks,
    );
    outcome.problems.extend(flood.problems);
    outcome.problems.extend(bodies.problems);
    outcome.problems.extend(streams.problems);
    outcome
        .problems
        .extend(made_up_method_series(world, &base).await?);
    outcome.targets = targets;
    if slow.closed < plan.slow_clients {
        outcome.problems.push(format!(
            "{} of {} slow clients were still connected {} ms after their last byte, or a slow \
             body was not answered 408 (header-read and body timeouts {HEADER_TIMEOUT_MS} and \
             {BODY_TIMEOUT_MS} ms)",
            plan.slow_clients - slow.closed,
            plan.slow_clients,
            slow.waited_ms
        ));
    }
    Ok(outcome)
}

#[derive(Debug, Default)]
struct Streams {
    granted: usize,
    refused: usize,
    /// `/healthz` and `/sagas` requests answered 200 while the streams were held.
    checks: usize,
    problems: Vec<String>,
}

/// Opens three times as many live streams of the observer as it has places for and holds them
/// until `deadline`, while asking its health check and its API; then lets them go and opens one
/// more, which must be granted.
async fn stream_flood(world: &World, deadline: Instant) -> Result<Streams> {
    let observer = world.first("observer");
    let places = observer::http::Live::streams_for(OBSERVER_MAX_CONNECTIONS);
    // One connection per request, none kept idle: an idle connection of ours would hold one of
    // the observer's few connection places, and it is the streams' cap under test.
    let client = choreo_e2e::http_client()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut out = Streams::default();
    let mut held = Vec::new();
    for _ in 0..3 * places {
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(observer.url("/live")).send(),
        )
        .await
        .context("GET /live: no answer within 5 s")??;
        match response.status().as_u16() {
            200 => {
                out.granted += 1;
                held.push(response);
            }
            503 if response.headers().contains_key("retry-after") => out.refused += 1,
            other => out.problems.push(format!(
                "GET /live answered {other}, not 200 or 503 with Retry-After"
            )),
        }
    }
    if out.granted != places {
        out.problems.push(format!(
            "{} observer streams granted, not its {places} places",
            out.granted
        ));
    }
    while Instant::now() < deadline {
        for path in ["/healthz", "/sagas?limit=5"] {
            let answered = tokio::time::timeout(
                Duration::from_secs(2),
                client.get(observer.url(path)).send(),
            )
            .await;
            match answered {
                Ok(Ok(response)) if response.status() == 200 => out.checks += 1,
                Ok(Ok(response)) => out.problems.push(format!(
                    "the observer answered {path} {} while streams filled their places",
                    response.status()
                )),
                _ => out.problems.push(format!(
                    "the observer did not answer {path} within 2 s while streams filled their places"
                )),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
    // The places come back once the streams' connections close.
    let mut again = None;
    for _ in 0..50 {
        let status = client.get(observer.url("/live")).send().await?.status();
        again = Some(status);
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if again != Some(reqwest::StatusCode::OK) {
        out.problems.push(format!(
            "a new observer stream was answered {again:?} after the flood's streams closed"
        ));
    }
    out.problems.dedup();
    Ok(out)
}

/// The ids of the newest `count` orders: the forgeries are about real orders.
async fn newest_orders(world: &World, base: &str, count: usize) -> Result<Vec<String>> {
    let listed: Value = world
        .http
        .get(format!("{base}/orders?limit={count}"))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<String> = listed["orders"]
        .as_array()
        .map(|orders| {
            orders
                .iter()
                .filter_map(|o| o["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        ids.len() == count,
        "only {} orders to forge events about",
        ids.len()
    );
    Ok(ids)
}

#[derive(Debug, Default)]
struct Flood {
    answered: usize,
    shed: usize,
    problems: Vec<String>,
}

/// `flooders` clients asking for the largest page of orders, back to back, until `deadline`.
/// 200 and a shed 503 are the answers a flooder may get; anything else is a problem.
async fn flood(world: &World, base: &str, flooders: usize, deadline: Instant) -> Result<Flood> {
    let url = format!("{base}/orders?limit=500");
    let results = futures_util::future::join_all((0..flooders).map(|_| {
        let (http, url) = (world.http.clone(), url.clone());
        async move {
            let mut flood = Flood::default();
            while Instant::now() < deadline {
                match http.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.bytes().await;
                        flood.answered += 1;
                    }
                    Ok(response) if response.status() == 503 => {
                        flood.shed += 1;
                        flood.answered += 1;
                    }
                    Ok(response) => flood.problems.push(format!(
                        "GET /orders?limit=500 answered {}",
                        response.status()
                    )),
                    // A connection the server closed under load is the client's problem, not
                    // the suite's: counted by nobody, like a shed request.
                    Err(_) => {}
                }
            }
            flood
        }
    }))
    .await;
    let mut total = Flood::default();
    for flood in results {
        total.answered += flood.answered;
        total.shed += flood.shed;
        total.problems.extend(flood.problems.into_iter().take(3));
    }
    Ok(total)
}

#[derive(Debug, Default)]
struct Slow {
    closed: usize,
    waited_ms: u128,
}

/// `count` connections, each sending a request head one header line every 200 ms and never its
/// end. Each is cut off once the server closes it (a failed write, or end of file on read).
/// Until `deadline` the clients keep trickling; after it they wait, at most the header timeout
/// and two seconds more, for the server to close what is still open.
async fn slow_clients(port: u16, count: usize, deadline: Instant) -> Result<Slow> {
    let patience = Duration::from_millis(HEADER_TIMEOUT_MS) + Duration::from_secs(2);
    let started = Instant::now();
    let closed = futures_util::future::join_all((0..count).map(|i| async move {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            // Refused at once: the server bounds its connections; nothing is held open.
            return true;
        };
        // Every other one sends a whole head, then trickles its body (a slow body must not
        // hold a concurrency slot, and is answered 408 after the body timeout).
        let trickles_body = i % 2 == 1;
        let head: &[u8] = if trickles_body {
            b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        } else {
            b"GET /orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        };
        if stream.write_all(head).await.is_err() {
            return true;
        }
        let mut line = 0u64;
        let mut buffer = [0u8; 1024];
        loop {
            let wait = if Instant::now() < deadline {
                Duration::from_millis(200)
            } else {
                patience
            };
            // The server's answer (a 408, say) or its close both end the connection.
            match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return true,
                // A slow body is answered 408 by the body timeout, not left to hold a slot until
                // the request timeout answers 503.
                Ok(Ok(n)) if trickles_body => return buffer[..n].starts_with(b"HTTP/1.1 408"),
                Ok(Ok(_)) => continue,
                Err(_) if Instant::now() >= deadline + patience => return false,
                Err(_) if Instant::now() >= deadline => continue,
                Err(_) => {}
            }
            line += 1;
            let next = if trickles_body {
                " ".to_owned()
            } else {
                format!("X-Slow-{i}-{line}: a\r\n")
            };
            if stream.write_all(next.as_bytes()).await.is_err() {
                return true;
            }
        }
    }))
    .await;
    Ok(Slow {
        closed: closed.iter().filter(|c| **c).count(),
        waited_ms: started.elapsed().as_millis(),
    })
}

#[derive(Debug, Default)]
struct Bodies {
    refused: usize,
    problems: Vec<String>,
}

/// Bodies the API must refuse, each with its status and the JSON error shape, sent in turn
/// until `deadline`.
async fn bad_bodies(world: &World, base: &str, deadline: Instant) -> Result<Bodies> {
    let url = format!("{base}/orders");
    let oversized = format!(
        "{{\"customer_id\": \"{}\"}}",
        "x".repeat(choreo_host::http::BODY_LIMIT + 1)
    );
    let cases: [(&str, &str, String, u16); 4] = [
        ("oversized", "application/json", oversized, 413),
        (
            "not declared JSON",
            "text/plain",
            choreo_e2e::order_request(1000, 1, "DE").to_string(),
            415,
        ),
        ("malformed", "application/json", "{\"items\": [".into(), 400),
        (
            "invalid values",
            "application/json",
            choreo_e2e::order_request(-5, 0, "germany").to_string(),
            422,
        ),
    ];
    let mut bodies = Bodies::default();
    let made_up = reqwest::Method::from_bytes(format!("M{}", "X".repeat(1_000)).as_bytes())?;
    'attack: while Instant::now() < deadline {
        if let Ok(response) = world.http.request(made_up.clone(), &url).send().await {
            let status = response.status().as_u16();
            let json: Value = response.json().await.unwrap_or_default();
            if status == 503 {
                // Shed under the flood.
            } else if !(400..500).contains(&status) || !json["error"].is_string() {
                if bodies.problems.len() < 3 {
                    bodies.problems.push(format!(
                        "a made-up method was answered {status} {json}, expected a 4xx with an error"
                    ));
                }
            } else {
                bodies.refused += 1;
            }
        }
        for (what, content_type, body, expected) in &cases {
            if Instant::now() >= deadline {
                break 'attack;
            }
            let Ok(response) = world
                .http
                .post(&url)
                .header("Content-Type", *content_type)
                .body(body.clone())
                .send()
                .await
            else {
                continue;
            };
            let status = response.status().as_u16();
            let json: Value = response.json().await.unwrap_or_default();
            if status == 503 {
                // Shed under the flood: a refusal the contract allows.
                continue;
            }
            if status != *expected || !json["error"].is_string() {
                if bodies.problems.len() < 3 {
                    bodies.problems.push(format!(
                        "a {what} body was answered {status} {json}, expected {expected} with an error"
                    ));
                }
            } else {
                bodies.refused += 1;
            }
        }
    }
    Ok(bodies)
}

/// The methods a metric label may name: RFC 9110's, PATCH, and `other` for the rest.
const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "other",
];

/// A problem for each `method` label on orders' `/metrics` outside [`METHOD_LABELS`]: a made-up
/// method that became a series of its own.
async fn made_up_method_series(world: &World, base: &str) -> Result<Vec<String>> {
    let text = world
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let scrape = choreo_e2e::Scrape::parse(&text);
    let made_up: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .flat_map(|(_, labels, _)| labels.iter())
        .filter(|(name, value)| name == "method" && !METHOD_LABELS.contains(&value.as_str()))
        .map(|(_, value)| value.chars().take(12).collect())
        .collect();
    Ok(if made_up.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "{} made-up methods became metric series (first characters: {made_up:?})",
            made_up.len()
        )]
    })
}

/// A well-formed envelope with the given claims.
fn envelope(event_type: &str, source: &str, order_id: &str, data: Value) -> (String, Vec<u8>) {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "specversion": "1.0", "id": id, "type": event_type, "source": source,
        "time": "2026-12-01T12:00:00.000Z", "subject": order_id,
        "datacontenttype": "application/json", "schemaversion": 1,
        "correlationid": order_id, "data": data,
    });
    (id, body.to_string().into_bytes())
}

/// How many kinds of forgery [`forgeries`] makes about each order.
pub const FORGERY_KINDS: usize = 6;

/// One forgery: exchange, routing key, message id, body, headers.
type Forgery = (String, String, String, Vec<u8>, FieldTable);

/// The six kinds of forgery, each about every order of `targets` (exchange, routing key,
/// type, source, data, headers): what a holder of a broker login could try.
///
/// 1. a refund trigger smuggled through orders' exchange under orders' key: billing binds
///    `order.placed`, and dead-letters it for a type that is not its routing key;
/// 2. a `shipment.failed` through shipping's exchange that says it comes from billing: billing
///    and orders both bind it, and both dead-letter it for its source;
/// 3. a `payment.refunded` through billing's exchange that says it comes from shipping: orders
///    dead-letters it for its source;
/// 4. an honest-looking `shipment.failed` sent straight into billing's queue through the
///    default exchange: billing dead-letters it for the exchange it came through;
/// 5. kind 1 vouching for itself with the `x-original-*` headers a redelivery carries (naming
///    shipping's exchange and `shipment.failed`): believed only on billing's own redelivery
///    exchange, so billing dead-letters it as kind 1, and its letter keeps the claim apart;
/// 6. garbage under `order.placed` whose `x-original-routing-key` is 300 bytes (no routing key
///    can be) and whose `x-original-exchange` is a table: billing dead-letters it once as
///    undecodable, and neither header becomes a name.
fn forgeries(prefix: &str, order_id: &str) -> Vec<Forgery> {
    use lapin::types::{AMQPValue, LongString};
    let [order_placed, payment_refunded, shipment_failed] = [
        EventType::OrderPlaced,
        EventType::PaymentRefunded,
        EventType::ShipmentFailed,
    ]
    .map(EventType::routing_key);
    let failed = json!({"order_id": order_id, "reason": "unserviceable_country"});
    let refunded = json!({
        "order_id": order_id, "payment_id": "forged", "refund_id": "forged",
        "amount_cents": 1, "currency": "EUR", "reason": "shipping_failed",
    });
    let text = |value: String| AMQPValue::LongString(LongString::from(value));
    let mut vouching = FieldTable::default();
    vouching.insert(
        "x-original-exchange".into(),
        text(Names::new(prefix).of(SHIPPING.exchange)),
    );
    vouching.insert(
        "x-original-routing-key".into(),
        text(shipment_failed.into()),
    );
    let mut hostile = FieldTable::default();
    hostile.insert("x-original-routing-key".into(), text("k".repeat(300)));
    hostile.insert(
        "x-original-exchange".into(),
        AMQPValue::FieldTable(vouching.clone()),
    );
    let kinds = [
        (
            Names::new(prefix).of(ORDERS.exchange),
            order_placed.to_owned(),
            envelope(shipment_failed, "shipping", order_id, failed.clone()),
            FieldTable::default(),
        ),
        (
            Names::new(prefix).of(SHIPPING.exchange),
            shipment_failed.to_owned(),
            envelope(shipment_failed, "billing", order_id, failed.clone()),
            FieldTable::default(),
        ),
        (
            Names::new(prefix).of(BILLING.exchange),
            payment_refunded.to_owned(),
            envelope(payment_refunded, "shipping", order_id, refunded),
            FieldTable::default(),
        ),
        (
            String::new(),
            Names::new(prefix).of(BILLING.name),
            envelope(shipment_failed, "shipping", order_id, failed.clone()),
            FieldTable::default(),
        ),
        (
            Names::new(prefix).of(ORDERS.exchange),
            order_placed.to_owned(),
            envelope(shipment_failed, "shipping", order_id, failed),
            vouching,
        ),
        (
            Names::new(prefix).of(ORDERS.exchange),
            order_placed.to_owned(),
            (
                uuid::Uuid::new_v4().to_string(),
                format!("not an event about {order_id}").into_bytes(),
            ),
            hostile,
        ),
    ];
    kinds
        .into_iter()
        .map(|(exchange, key, (id, body), headers)| (exchange, key, id, body, headers))
        .collect()
}

/// Publishes every forgery about every order of `targets`, persistent and confirmed, with the
/// AMQP properties a real publisher sets.
async fn forge(prefix: &str, targets: &[String]) -> Result<()> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for order_id in targets {
        for (exchange, key, id, body, headers) in forgeries(prefix, order_id) {
            let event: Value = serde_json::from_slice(&body).unwrap_or_default();
            let properties = BasicProperties::default()
                .with_headers(headers)
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into())
                .with_type(event["type"].as_str().unwrap_or_default().into())
                .with_app_id(event["source"].as_str().unwrap_or_default().into())
                .with_correlation_id(order_id.as_str().into())
                .with_content_type("application/cloudevents+json".into());
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?
                .await?;
        }
    }
    let _ = connection.close(200, "forged".into()).await;
    Ok(())
}
