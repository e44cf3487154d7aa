//! `GET /metrics`: a service's metrics in the Prometheus text format (version 0.0.4), rendered by
//! `metrics-exporter-prometheus` from a recorder of the service's own.
//!
//! Each built service owns one recorder, created in [`crate::service::Builder::build`] and passed to
//! whatever counts (the runtime's consumer, relay and supervisor, the HTTP layer, the service's
//! handler): the process-global recorder of the `metrics` crate is never installed, so the three
//! services of an end-to-end suite, and suites running side by side in one test process, keep
//! their numbers apart. Every series carries a `service` label.
//!
//! What costs a query is read when scraped, never per message: the outbox backlog and the age of
//! its oldest row, and the inbox's size, one cheap read each on the database's reader.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use choreo_events::topology::ServiceTopology;
use choreo_messaging::metrics::METADATA;
use choreo_messaging::{Backlog, BrokerHealth, Inbox, Outbox, RuntimeMetrics};
use choreo_store::Database;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// `choreo_http_requests_total{route, method, status}`.
pub const HTTP_REQUESTS: &str = "choreo_http_requests_total";
/// `choreo_http_request_duration_seconds{route, method, status}`.
pub const HTTP_SECONDS: &str = "choreo_http_request_duration_seconds";
/// `choreo_outbox_backlog`.
pub const OUTBOX_BACKLOG: &str = "choreo_outbox_backlog";
/// `choreo_outbox_oldest_age_seconds`.
pub const OUTBOX_OLDEST_AGE: &str = "choreo_outbox_oldest_age_seconds";
/// `choreo_inbox_rows`.
pub const INBOX_ROWS: &str = "choreo_inbox_rows";
/// `choreo_broker_connected`.
pub const BROKER_CONNECTED: &str = "choreo_broker_connected";
/// `choreo_consumer_consuming`.
pub const CONSUMER_CONSUMING: &str = "choreo_consumer_consuming";
/// `choreo_build_info{version}`: always 1, for joining the version onto other series.
pub const BUILD_INFO: &str = "choreo_build_info";

/// The `route` label of a request no route matched (a 404): one value, whatever the path.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets (seconds) of the durations of handlers and consumer transactions: most take well
/// under a millisecond, a batch under load a few.
const WORK_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets (seconds) of HTTP requests, up to the default request timeout.
const HTTP_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (a scrape
/// does it too), so that they do not pile up in memory.
pub const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// The metrics of one service instance.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    /// The `service` label of every series.
    service: &'static str,
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// What the messaging runtime counts.
    pub runtime: Arc<RuntimeMetrics>,
    http: Arc<HttpMetrics>,
}

impl ServiceMetrics {
    /// A fresh recorder for `service`, with the runtime's and the HTTP layer's metrics on it.
    pub fn new(service: &ServiceTopology) -> Self {
        let work = [
            choreo_messaging::metrics::HANDLER_SECONDS,
            choreo_messaging::metrics::TRANSACTION_SECONDS,
        ];
        let mut builder = PrometheusBuilder::new().add_global_label("service", service.name);
        for name in work {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), WORK_BUCKETS)
                .expect("the work buckets are not empty");
        }
        let recorder = builder
            .set_buckets_for_metric(Matcher::Full(HTTP_SECONDS.to_owned()), HTTP_BUCKETS)
            .expect("the HTTP buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let recorder = Arc::new(recorder);
        let runtime = Arc::new(RuntimeMetrics::register(&*recorder, service));
        let http = Arc::new(HttpMetrics::new(&recorder));
        ServiceMetrics {
            service: service.name,
            recorder,
            handle,
            runtime,
            http,
        }
    }

    /// The recorder, for a handler's own metrics ([`choreo_messaging::Handler::register_metrics`]).
    pub fn recorder(&self) -> &dyn Recorder {
        &*self.recorder
    }

    /// `router` with every request counted by route, method and status, and timed. The layer
    /// reads the matched route, so it goes on after the routes (and outside any bounds, so a
    /// request shed with 503 is counted too).
    pub fn count_requests(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(
            self.http.clone(),
            track,
        ))
    }

    /// The state of `GET /metrics`.
    pub fn endpoint(&self, database: Database, broker: Arc<BrokerHealth>) -> Endpoint {
        let gauge = |name: &'static str| {
            self.recorder
                .register_gauge(&Key::from_static_name(name), &METADATA)
        };
        describe_gauges(&*self.recorder);
        self.recorder
            .register_gauge(
                &Key::from_parts(
                    BUILD_INFO,
                    vec![Label::new("version", env!("CARGO_PKG_VERSION"))],
                ),
                &METADATA,
            )
            .set(1.0);
        Endpoint {
            service: self.service,
            handle: self.handle.clone(),
            database,
            broker,
            backlog: gauge(OUTBOX_BACKLOG),
            oldest_age: gauge(OUTBOX_OLDEST_AGE),
            inbox: gauge(INBOX_ROWS),
            connected: gauge(BROKER_CONNECTED),
            consuming: gauge(CONSUMER_CONSUMING),
        }
    }

    /// Folds histogram samples into their buckets every [`UPKEEP_PERIOD`], forever: spawn it.
    pub async fn upkeep(self) {
        let mut period = tokio::time::interval(UPKEEP_PERIOD);
        loop {
            period.tick().await;
            self.handle.run_upkeep();
        }
    }
}

fn describe_gauges(recorder: &dyn Recorder) {
    for (name, unit, help) in [
        (
            BUILD_INFO,
            None,
            "Always 1; its `version` label is the version of the running binary.",
        ),
        (
            OUTBOX_BACKLOG,
            None,
            "Outbox rows the broker has not confirmed yet (read when scraped).",
        ),
        (
            OUTBOX_OLDEST_AGE,
            Some(Unit::Seconds),
            "Age of the oldest outbox row the broker has not confirmed yet; 0 when there is none \
             (read when scraped).",
        ),
        (
            INBOX_ROWS,
            None,
            "Event ids recorded in the inbox (read when scraped; on PostgreSQL the planner's \
             estimate).",
        ),
        (
            BROKER_CONNECTED,
            None,
            "1 while the service is connected to the broker, 0 otherwise.",
        ),
        (
            CONSUMER_CONSUMING,
            None,
            "1 while the service's consumer is consuming its queue, 0 otherwise.",
        ),
    ] {
        recorder.describe_gauge(KeyName::from_const_str(name), unit, help.into());
    }
}

/// The series of one route: per method and status, a request counter and a duration histogram.
#[derive(Debug)]
struct RouteSeries {
    route: Box<str>,
    series: Vec<(&'static str, StatusCode, Counter, Histogram)>,
}

/// The HTTP layer's handles, registered as requests first show each (route, method, status):
/// routes come from the router's own table and methods and statuses are few, so the series are
/// bounded. A request that finds its series (all but the first of each) takes a read lock and
/// allocates nothing.
#[derive(Debug)]
pub struct HttpMetrics {
    recorder: Arc<PrometheusRecorder>,
    routes: RwLock<Vec<RouteSeries>>,
}

impl HttpMetrics {
    fn new(recorder: &Arc<PrometheusRecorder>) -> Self {
        recorder.describe_counter(
            KeyName::from_const_str(HTTP_REQUESTS),
            None,
            "HTTP requests answered, by matched route (`unmatched` for a 404), method and status."
                .into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(HTTP_SECONDS),
            Some(Unit::Seconds),
            "Time from receiving an HTTP request to its response's head, by route, method and \
             status."
                .into(),
        );
        HttpMetrics {
            recorder: recorder.clone(),
            routes: RwLock::new(Vec::new()),
        }
    }

    fn observe(&self, route: &str, method: &Method, status: StatusCode, took: Duration) {
        let method = method_label(method);
        let seconds = took.as_secs_f64();
        let found = |routes: &[RouteSeries]| {
            routes
                .iter()
                .find(|r| &*r.route == route)?
                .series
                .iter()
                .find(|(m, s, _, _)| *m == method && *s == status)
                .map(|(_, _, requests, duration)| (requests.clone(), duration.clone()))
        };
        let known = found(&self.routes.read().unwrap_or_else(|e| e.into_inner()));
        let (requests, duration) = match known {
            Some(handles) => handles,
            None => {
                let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
                match found(&routes) {
                    Some(handles) => handles,
                    None => self.register(&mut routes, route, method, status),
                }
            }
        };
        requests.increment(1);
        duration.record(seconds);
    }

    fn register(
        &self,
        routes: &mut Vec<RouteSeries>,
        route: &str,
        method: &'static str,
        status: StatusCode,
    ) -> (Counter, Histogram) {
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::new("method", method),
            Label::new("status", status.as_str().to_owned()),
        ];
        let requests = self
            .recorder
            .register_counter(&Key::from_parts(HTTP_REQUESTS, labels.clone()), &METADATA);
        let duration = self
            .recorder
            .register_histogram(&Key::from_parts(HTTP_SECONDS, labels), &METADATA);
        let index = match routes.iter().position(|r| &*r.route == route) {
            Some(index) => index,
            None => {
                routes.push(RouteSeries {
                    route: route.into(),
                    series: Vec::new(),
                });
                routes.len() - 1
            }
        };
        routes[index]
            .series
            .push((method, status, requests.clone(), duration.clone()));
        (requests, duration)
    }
}

/// A method as a label, from a closed set: the methods of RFC 9110 and PATCH, and `other` for any
/// other token a client sends (each would otherwise be a new series, kept for good).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// The HTTP middleware: the matched route (never the raw path, whose ids would make a series
/// per order), the method, the status, and the time until the response's head.
async fn track(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    metrics.observe(route, &method, response.status(), started.elapsed());
    response
}

/// What `GET /metrics` reads: the recorder, and what is measured when scraped.
#[derive(Debug, Clone)]
pub struct Endpoint {
    service: &'static str,
    handle: PrometheusHandle,
    database: Database,
    broker: Arc<BrokerHealth>,
    backlog: Gauge,
    oldest_age: Gauge,
    inbox: Gauge,
    connected: Gauge,
    consuming: Gauge,
}

/// The outbox and inbox as one read sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tables {
    backlog: Backlog,
    inbox: i64,
}

/// One read on the reader that also serves the relay, each part cheap whatever the tables' size
/// (see [`Outbox::backlog`] and [`Inbox::rows`]).
async fn read_tables(database: &Database) -> choreo_store::Result<Tables> {
    database
        .read(|tx| {
            Ok(Tables {
                backlog: Outbox::backlog(tx)?,
                inbox: Inbox::rows(tx)?,
            })
        })
        .await
}

/// `GET /metrics`: refreshes what is measured when scraped, then renders every series. When the
/// database does not answer, its gauges keep their last values (and `/readyz` says why).
pub async fn scrape(State(endpoint): State<Endpoint>) -> Response {
    match read_tables(&endpoint.database).await {
        Ok(tables) => {
            endpoint.backlog.set(tables.backlog.rows as f64);
            endpoint.inbox.set(tables.inbox as f64);
            let age = tables.backlog.oldest_ms.map_or(0.0, |oldest| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| {
                        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                    });
                now.saturating_sub(oldest).max(0) as f64 / 1000.0
            });
            endpoint.oldest_age.set(age);
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read the outbox and inbox"),
    }
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    endpoint.connected.set(flag(endpoint.broker.connected()));
    endpoint.consuming.set(flag(endpoint.broker.consuming()));
    let mut body = endpoint.handle.render();
    body.push_str(&process_metrics(endpoint.service));
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response()
}

/// The standard `process_*` series of Prometheus's client libraries, read from `/proc/self` when
/// scraped (Linux; empty elsewhere, or for what cannot be read). Appended as text, since
/// `process_cpu_seconds_total` is a counter of fractional seconds, which the `metrics` crate's
/// counters (whole numbers) cannot hold.
fn process_metrics(service: &str) -> String {
    /// The kernel's clock ticks per second in `/proc` (USER_HZ): 100 on every Linux port.
    const TICKS_PER_SECOND: f64 = 100.0;
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mut series: Vec<(&str, &str, &str, f64)> = Vec::new();
    // Fields after the command name, which may hold spaces: the 3rd field (state) is first.
    if let Some(stat) = read("/proc/self/stat")
        && let Some((_, after)) = stat.rsplit_once(')')
    {
        let fields: Vec<f64> = after
            .split_whitespace()
            .map(|field| field.parse().unwrap_or(f64::NAN))
            .collect();
        let field = |number: usize| fields.get(number - 3).copied().filter(|v| v.is_finite());
        if let (Some(user), Some(system)) = (field(14), field(15)) {
            series.push((
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (user + system) / TICKS_PER_SECOND,
            ));
        }
        let boot = read("/proc/stat").and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|value| value.trim().parse::<f64>().ok())
        });
        if let (Some(boot), Some(start)) = (boot, field(22)) {
            series.push((
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + start / TICKS_PER_SECOND,
            ));
        }
        if let Some(virtual_bytes) = field(23) {
            series.push((
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                virtual_bytes,
            ));
        }
    }
    let resident = read("/proc/self/status").and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
    });
    if let Some(kib) = resident {
        series.push((
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib * 1024.0,
        ));
    }
    if let Ok(open) = std::fs::read_dir("/proc/self/fd") {
        series.push((
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open.count() as f64,
        ));
    }
    let max_fds = read("/proc/self/limits").and_then(|text| {
        text.lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3))
            .and_then(|soft| soft.parse::<f64>().ok())
    });
    if let Some(max) = max_fds {
        series.push((
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        ));
    }
    let mut text = String::new();
    for (name, kind, help, value) in series {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{service=\"{service}\"}} {value}\n\n"
        ));
    }
    text
}
