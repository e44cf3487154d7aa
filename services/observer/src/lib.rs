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
//! - [`recent`]: the last hour by minute (orders, end-to-end and per-step times), which the sweep
//!   records and the map and charts show;
//! - [`http`]: `GET /`, `/flow`, `/sagas`, `/sagas/{order_id}`, `/live`;
//! - [`metrics`]: its series on the service's `/metrics`, refreshed by the sweep.

pub mod handler;
pub mod http;
pub mod metrics;
pub mod recent;
pub mod saga;
pub mod store;
pub mod watch;

use choreo_events::topology::OBSERVER;
use choreo_host::settings::{Key, Loaded, Process, Section, Setting};
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

/// The settings section of the observer's own: how it judges.
pub const OWN: Section = Section {
    name: "observer",
    about: "how the observer judges sagas",
    keys: &[
        Key::number(
            "observer_step_deadline_ms",
            0,
            0,
            86_400_000,
            "every step's deadline; `0`: the declared flow's own (5 s each)",
        ),
        Key::number(
            "observer_sweep_ms",
            250,
            10,
            60_000,
            "how often overdue sagas are looked for and the live page fed",
        ),
    ],
};

/// What the observer reads: the common sections, its own, its HTTP port and its own default of
/// a common one.
pub const SETTINGS: Process = Process {
    name: "observer",
    own: Some(&OWN),
    defaults: &[
        ("http_addr", Setting::Text("127.0.0.1:8083")),
        // A bystander could wait for more events per batch (docs/benchmarks.md, "The
        // observer"); 0 until `make bench` has measured what a linger buys it.
        ("consumer_linger_ms", Setting::Number(OBSERVER_LINGER_MS)),
    ],
};

/// How the observer judges: its own settings, converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watching {
    /// `CHOREO_OBSERVER_STEP_DEADLINE_MS`: every step's deadline; `None`: the flow's own.
    pub step_deadline: Option<Duration>,
    /// `CHOREO_OBSERVER_SWEEP_MS`: how often overdue sagas are looked for and the page fed.
    pub sweep: Duration,
}

/// `[observer]`, as written (its bounds were checked when it was loaded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    observer_step_deadline_ms: u64,
    observer_sweep_ms: u64,
}

impl From<Own> for Watching {
    fn from(own: Own) -> Self {
        Watching {
            step_deadline: (own.observer_step_deadline_ms > 0)
                .then(|| Duration::from_millis(own.observer_step_deadline_ms)),
            sweep: Duration::from_millis(own.observer_sweep_ms),
        }
    }
}

/// The settings of `observer`: the common ones and how it judges.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub watching: Watching,
}

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        Self::read(&choreo_host::settings::load(&SETTINGS)?)
    }

    /// The settings of the observer from what was loaded.
    pub fn read(loaded: &Loaded) -> choreo_host::Result<Self> {
        Ok(Settings {
            common: loaded.common()?,
            watching: loaded.own::<Own>()?.into(),
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
    // The stream stays open as long as the page does: it is kept out of the request bounds.
    let live = http::live_routing().with_state(http::Live {
        feed: feed.clone(),
        stop: live_stop.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(http::Live::streams_for(
            settings.common.http.http_max_connections,
        ))),
        lifetime: http::LIVE_LIFETIME,
    });
    let page_minute = last_minute.clone();
    let recent = recent::Recent::default();
    let page_recent = recent.clone();
    let service = Service::builder(
        OBSERVER,
        &settings.common,
        &MIGRATIONS,
        handler::ObserverHandler { deadlines },
    )
    .routes(
        move |parts| {
            http::routes(http::Web {
                database: parts.database.clone(),
                deadlines,
                last_minute: page_minute,
                recent: page_recent,
            })
        },
        http::openapi(),
    )
    .unbounded_routes(live)
    // The page is static HTML with no data in it; it asks for the API token itself (see
    // page.html), which a browser merely opening it could not send.
    .open_path("/")
    .retain(store::EXPIRING_SAGAS)
    .build()
    .await?;
    let watch = watch::Watch {
        db: service.database().clone(),
        deadlines,
        period: settings.watching.sweep,
        feed,
        metrics: metrics::ObserverMetrics::register(service.metrics().recorder()),
        last_minute,
        recent,
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

    #[test]
    fn a_step_deadline_of_zero_means_the_flows_own() {
        let own = |deadline, sweep| Own {
            observer_step_deadline_ms: deadline,
            observer_sweep_ms: sweep,
        };

        let flows = Watching::from(own(0, 250));
        let set = Watching::from(own(3000, 100));

        assert_eq!(flows.step_deadline, None);
        assert_eq!(flows.sweep, Duration::from_millis(250));
        assert_eq!(set.step_deadline, Some(Duration::from_secs(3)));
    }
}
