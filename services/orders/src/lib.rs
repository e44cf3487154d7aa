//! The `orders` service: the start and the end of every saga.
//!
//! - [`lifecycle`]: the order's states and the pure decision of what each event does to it;
//! - [`store`]: the SQL of orders, their history and idempotency keys;
//! - [`handler`]: the broker handler (the I/O shell around [`lifecycle::decide`]);
//! - [`outcomes`]: the saga outcomes counted for `GET /metrics`;
//! - [`http`]: `POST /orders`, `GET /orders/{id}`, `GET /orders`;
//! - [`admission`]: `POST /orders` refused with 503 while too many orders are unfinished.

pub mod admission;
pub mod handler;
pub mod http;
pub mod lifecycle;
pub mod outcomes;
pub mod store;

use choreo_events::topology::ORDERS;
use choreo_host::settings::{Key, Loaded, Process, Section, Setting};
use choreo_host::{CommonSettings, Service};
use choreo_store::Migrations;
use serde::Deserialize;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The migrations of the orders database, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// Admission control's default bound (docs/benchmarks.md, "Admission control").
pub const DEFAULT_MAX_UNFINISHED_ORDERS: u64 = 1500;

/// The settings section of `orders`' own.
pub const OWN: Section = Section {
    name: "orders",
    about: "admission control",
    keys: &[Key::number(
        "max_unfinished_orders",
        DEFAULT_MAX_UNFINISHED_ORDERS as i64,
        0,
        100_000_000,
        "while this many orders are `pending` or `paid` (counted at most every 100 ms), `POST \
         /orders` answers `503` with `Retry-After: 1` and counts it in \
         `choreo_orders_shed_total`, so that under overload an accepted order completes in \
         seconds instead of waiting behind an ever longer backlog; `0`: no bound. Replicas each \
         admit up to it from the last count they read. See \
         [benchmarks](benchmarks.md#admission-control)",
    )],
};

/// What `orders` reads: the common sections, its own, and its HTTP port.
pub const SETTINGS: Process = Process {
    name: "orders",
    own: Some(&OWN),
    defaults: &[("http_addr", Setting::Text("127.0.0.1:8080"))],
};

/// The settings of `orders`: the common ones and admission control's bound.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub own: Own,
}

/// `[orders]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Own {
    /// `POST /orders` answers 503 while this many orders are `pending` or `paid`; 0: no bound
    /// ([`admission`]).
    pub max_unfinished_orders: u64,
}

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        Self::read(&choreo_host::settings::load(&SETTINGS)?)
    }

    /// The settings of `orders` from what was loaded.
    pub fn read(loaded: &Loaded) -> choreo_host::Result<Self> {
        Ok(Settings {
            common: loaded.common()?,
            own: loaded.own()?,
        })
    }

    /// The common settings, and admission control's default bound.
    pub fn with_defaults(common: CommonSettings) -> Self {
        Settings {
            common,
            own: Own {
                max_unfinished_orders: DEFAULT_MAX_UNFINISHED_ORDERS,
            },
        }
    }
}

/// Builds the service; run it with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Service<handler::OrdersHandler>> {
    let bound = settings.own.max_unfinished_orders;
    Service::builder(
        ORDERS,
        &settings.common,
        &MIGRATIONS,
        handler::OrdersHandler::default(),
    )
    .routes(
        move |parts| {
            let admission = admission::Admission::new(bound, parts.metrics.recorder());
            http::routes(parts, std::sync::Arc::new(admission))
        },
        http::openapi(),
    )
    .retain(store::EXPIRING_IDEMPOTENCY_KEYS)
    .build()
    .await
}
