//! The `orders` service: the start and the end of every saga.
//!
//! - [`lifecycle`]: the order's states and the pure decision of what each event does to it;
//! - [`store`]: the SQL of orders, their history and idempotency keys;
//! - [`handler`]: the broker handler (the I/O shell around [`lifecycle::decide`]);
//! - [`outcomes`]: the saga outcomes counted for `GET /metrics`;
//! - [`http`]: `POST /orders`, `GET /orders/{id}`, `GET /orders`.

pub mod handler;
pub mod http;
pub mod lifecycle;
pub mod outcomes;
pub mod store;

use choreo_events::topology::ORDERS;
use choreo_host::{CommonSettings, Service};
use choreo_store::Migrations;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The migrations of the orders database, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// The settings of `orders`: only the common ones.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
}

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        let config = choreo_host::settings::layered(&[(
            "http_addr",
            choreo_host::settings::Setting::Text("127.0.0.1:8080"),
        )])?;
        Ok(Settings {
            common: choreo_host::settings::part(&config)?,
        })
    }
}

/// Builds the service; run it with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Service<handler::OrdersHandler>> {
    let mut service = Service::build(
        ORDERS,
        &settings.common,
        &MIGRATIONS,
        handler::OrdersHandler::default(),
        http::routes,
        http::openapi(),
    )
    .await?;
    service.retention.also(store::EXPIRING_IDEMPOTENCY_KEYS);
    Ok(service)
}
