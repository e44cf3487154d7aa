//! The `observer`: a fourth binary, optional to run, that watches the saga from outside.
//!
//! Its queue is bound to every event type on the three exchanges; it takes part in nothing and
//! publishes nothing. It stores every event in its own database (through the same consumer as the
//! services: inbox, one transaction, ack after commit), judges each order's saga against the
//! declared [`choreo_events::flow`] and serves what it knows: an API, metrics and a live page.
//!
//! - [`saga`]: the pure judgement (state, what is expected by when, anomalies);
//! - [`store`]: the SQL of events and sagas;
//! - [`handler`]: stores an event and judges its saga again;
//! - [`watch`]: the sweep that judges overdue sagas and feeds the live page;
//! - [`http`]: `GET /`, `/flow`, `/sagas`, `/sagas/{order_id}`, `/live`;
//! - [`metrics`]: its series on the service's `/metrics`, refreshed by the sweep.

pub mod handler;
pub mod http;
pub mod metrics;
pub mod saga;
pub mod store;
pub mod watch;

use choreo_events::topology::OBSERVER;
use choreo_host::settings::Setting;
use choreo_host::{CommonSettings, Service};
use choreo_store::Migrations;
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The migrations of the observer's database, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// The observer's default `CHOREO_CONSUMER_LINGER_MS`, as the services'.
pub const OBSERVER_LINGER_MS: i64 = 0;

/// How the observer judges: its own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watching {
    /// `CHOREO_OBSERVER_STEP_DEADLINE_MS`: every step's deadline; `None`: the flow's own.
    pub step_deadline: Option<Duration>,
    /// `CHOREO_OBSERVER_SWEEP_MS`: how often overdue sagas are looked for and the page fed.
    pub sweep: Duration,
}

#[derive(Debug, Deserialize)]
struct RawWatching {
    observer_step_deadline_ms: String,
    observer_sweep_ms: u64,
}

impl Watching {
    fn parse(raw: &RawWatching) -> choreo_host::Result<Self> {
        let number = |name: &str, text: &str, min: u64, max: u64| {
            text.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    choreo_host::Error::Usage(format!(
                        "CHOREO_{}={text:?}: expected a number of milliseconds from {min} to {max}",
                        name.to_ascii_uppercase()
                    ))
                })
        };
        let deadline = raw.observer_step_deadline_ms.trim();
        Ok(Watching {
            step_deadline: if deadline.is_empty() {
                None
            } else {
                Some(Duration::from_millis(number(
                    "observer_step_deadline_ms",
                    deadline,
                    1,
                    86_400_000,
                )?))
            },
            sweep: Duration::from_millis(number(
                "observer_sweep_ms",
                &raw.observer_sweep_ms.to_string(),
                10,
                60_000,
            )?),
        })
    }
}

/// The settings of `observer`: the common ones and how it judges.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub watching: Watching,
}

/// The settings of `observer` beyond the common ones (and its own default of a common one),
/// with their defaults.
pub const SETTINGS: &[(&str, Setting)] = &[
    ("http_addr", Setting::Text("127.0.0.1:8083")),
    // A bystander could wait for more events per batch (docs/benchmarks.md, "The
    // observer"); 0 until `make bench` has measured what a linger buys it.
    ("consumer_linger_ms", Setting::Number(OBSERVER_LINGER_MS)),
    ("observer_step_deadline_ms", Setting::Text("")),
    ("observer_sweep_ms", Setting::Number(250)),
];

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        let config = choreo_host::settings::layered(SETTINGS)?;
        let raw: RawWatching = choreo_host::settings::part(&config)?;
        Ok(Settings {
            common: choreo_host::settings::part(&config)?,
            watching: Watching::parse(&raw)?,
        })
    }
}

/// A built observer: the service (HTTP and consumer) and its sweep.
#[derive(Debug)]
pub struct Observer {
    pub service: Service<handler::ObserverHandler>,
    watch: watch::Watch,
    /// Ends the live streams when the observer stops.
    live_stop: CancellationToken,
}

/// Builds the observer; run it with [`Observer::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Observer> {
    let deadlines = saga::Deadlines {
        every_step: settings.watching.step_deadline,
    };
    let (feed, _) = broadcast::channel(256);
    let live_stop = CancellationToken::new();
    let last_minute = watch::LastMinute::default();
    let mut registered = None;
    let mut service = Service::build(
        OBSERVER,
        &settings.common,
        &MIGRATIONS,
        handler::ObserverHandler { deadlines },
        |parts| {
            registered = Some(metrics::ObserverMetrics::register(parts.metrics.recorder()));
            http::routes(http::Web {
                database: parts.database.clone(),
                deadlines,
                last_minute: last_minute.clone(),
            })
        },
        http::openapi(),
    )
    .await?;
    // The stream stays open as long as the page does: it is kept out of the request timeout.
    let live = http::live_routing()
        .with_state(http::Live {
            feed: feed.clone(),
            stop: live_stop.clone(),
            streams: Arc::new(tokio::sync::Semaphore::new(http::Live::streams_for(
                settings.common.http_max_connections,
            ))),
            lifetime: http::LIVE_LIFETIME,
        })
        // Merged after the conventions were applied, so it needs their JSON 405 of its own.
        .method_not_allowed_fallback(choreo_host::http::method_not_allowed);
    service.router = std::mem::take(&mut service.router).merge(live);
    // The page is static HTML with no data in it; it asks for the API token itself (see
    // page.html), which a browser merely opening it could not send.
    service.open_paths.push("/");
    service.retention.also(store::EXPIRING_SAGAS);
    let watch = watch::Watch {
        db: service.database.clone(),
        deadlines,
        period: settings.watching.sweep,
        feed,
        metrics: registered.expect("the routes were built"),
        last_minute,
    };
    Ok(Observer {
        service,
        watch,
        live_stop,
    })
}

impl Observer {
    /// The address the HTTP server really bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// Runs the service and the sweep until `shutdown` resolves; the live streams end first, so
    /// the HTTP server's graceful stop does not wait for open pages.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sweep_stop = CancellationToken::new();
        let sweep = tokio::spawn(self.watch.run(sweep_stop.clone()));
        let live_stop = self.live_stop.clone();
        let shutdown = async move {
            shutdown.await;
            live_stop.cancel();
        };
        let served = self.service.run_until_stopped(shutdown).await;
        sweep_stop.cancel();
        let _ = sweep.await;
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(deadline: &str, sweep: u64) -> RawWatching {
        RawWatching {
            observer_step_deadline_ms: deadline.into(),
            observer_sweep_ms: sweep,
        }
    }

    #[test]
    fn an_empty_step_deadline_means_the_flows_own_and_a_bad_one_is_named() {
        let watching = Watching::parse(&raw("", 250)).expect("valid");
        assert_eq!(watching.step_deadline, None);
        assert_eq!(watching.sweep, Duration::from_millis(250));
        let set = Watching::parse(&raw("3000", 100)).expect("valid");
        assert_eq!(set.step_deadline, Some(Duration::from_secs(3)));
        let error = Watching::parse(&raw("0", 250)).unwrap_err().to_string();
        assert!(
            error.contains("CHOREO_OBSERVER_STEP_DEADLINE_MS"),
            "{error}"
        );
        assert!(Watching::parse(&raw("", 5)).is_err());
    }
}
