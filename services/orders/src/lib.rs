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
use choreo_host::settings::Setting;
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

/// The settings of `orders`: the common ones and admission control's bound.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// `CHOREO_MAX_UNFINISHED_ORDERS`: `POST /orders` answers 503 while this many orders are
    /// `pending` or `paid`; 0: no bound ([`admission`]).
    pub max_unfinished_orders: u64,
}

/// Admission control's default bound (docs/benchmarks.md, "Admission control").
pub const DEFAULT_MAX_UNFINISHED_ORDERS: u64 = 1500;

#[derive(Debug, Deserialize)]
struct Own {
    max_unfinished_orders: u64,
}

/// The settings of `orders` beyond the common ones, with their defaults.
pub const SETTINGS: &[(&str, Setting)] = &[
    ("http_addr", Setting::Text("127.0.0.1:8080")),
    (
        "max_unfinished_orders",
        Setting::Number(DEFAULT_MAX_UNFINISHED_ORDERS as i64),
    ),
];

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        let config = choreo_host::settings::layered(SETTINGS)?;
        let own: Own = choreo_host::settings::part(&config)?;
        Ok(Settings {
            common: choreo_host::settings::part(&config)?,
            max_unfinished_orders: own.max_unfinished_orders,
        })
    }

    /// The common settings, and admission control's default bound.
    pub fn with_defaults(common: CommonSettings) -> Self {
        Settings {
            common,
            max_unfinished_orders: DEFAULT_MAX_UNFINISHED_ORDERS,
        }
    }
}

/// Builds the service; run it with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Service<handler::OrdersHandler>> {
    let bound = settings.max_unfinished_orders;
    let mut service = Service::build(
        ORDERS,
        &settings.common,
        &MIGRATIONS,
        handler::OrdersHandler::default(),
        |parts| {
            let admission = admission::Admission::new(bound, parts.metrics.recorder());
            http::routes(parts, std::sync::Arc::new(admission))
        },
        http::openapi(),
    )
    .await?;
    service.retention.also(store::EXPIRING_IDEMPOTENCY_KEYS);
    Ok(service)
}
