//! The `shipping` service: one shipment per paid order.
//!
//! - [`rules`]: the pure decision (dispatch or fail);
//! - [`store`]: the SQL of shipments;
//! - [`handler`]: the broker handler for `payment.captured`;
//! - [`http`]: `GET /shipments?order_id=`.

pub mod handler;
pub mod http;
pub mod rules;
pub mod store;

use choreo_events::topology::SHIPPING;
use choreo_host::{CommonSettings, Service};
use choreo_store::Migrations;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The migrations of the shipping database, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// The settings of `shipping`: the common ones and its business rules.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub rules: rules::ShippingRules,
}

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        let config = choreo_host::settings::layered(&[
            ("http_addr", "127.0.0.1:8082"),
            ("countries", rules::DEFAULT_COUNTRIES),
            ("carrier", rules::DEFAULT_CARRIER),
        ])?;
        Ok(Settings {
            common: choreo_host::settings::part(&config)?,
            rules: choreo_host::settings::part(&config)?,
        })
    }
}

/// Builds the service; run it with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Service<handler::ShippingHandler>> {
    let handler = handler::ShippingHandler {
        rules: settings.rules.clone(),
    };
    Service::build(
        SHIPPING,
        &settings.common,
        &MIGRATIONS,
        handler,
        http::routes,
        http::openapi(),
    )
    .await
}
