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
use choreo_host::settings::Setting;
use choreo_host::{CommonSettings, Service};
use choreo_store::Migrations;
use std::collections::HashMap;

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

/// The settings of `shipping` beyond the common ones, with their defaults.
pub const SETTINGS: &[(&str, Setting)] = &[
    ("http_addr", Setting::Text("127.0.0.1:8082")),
    ("countries", Setting::Words(rules::DEFAULT_COUNTRIES)),
    ("carrier", Setting::Text(rules::DEFAULT_CARRIER)),
];

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        Self::load_from(&choreo_host::settings::environment()?)
    }

    /// The same from `variables` instead of the process's environment.
    pub fn load_from(variables: &HashMap<String, String>) -> choreo_host::Result<Self> {
        let config = choreo_host::settings::layered_from(SETTINGS, variables)?;
        let rules: rules::ShippingRules = choreo_host::settings::part(&config)?;
        Ok(Settings {
            common: choreo_host::settings::part(&config)?,
            rules: rules.checked().map_err(choreo_host::Error::Usage)?,
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
