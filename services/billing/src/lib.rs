//! The `billing` service: one payment per order, one refund per payment.
//!
//! - [`rules`]: the pure decisions (capture or decline; refund or not);
//! - [`store`]: the SQL of payments and refunds;
//! - [`handler`]: the broker handler for `order.placed` and `shipment.failed`;
//! - [`http`]: `GET /payments?order_id=`.

pub mod handler;
pub mod http;
pub mod rules;
pub mod store;

use choreo_events::topology::BILLING;
use choreo_host::settings::Setting;
use choreo_host::{CommonSettings, Service};
use choreo_store::Migrations;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The migrations of the billing database, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

/// The settings of `billing`: the common ones and its business rules.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub rules: rules::BillingRules,
}

/// The settings of `billing` beyond the common ones, with their defaults.
pub const SETTINGS: &[(&str, Setting)] = &[
    ("http_addr", Setting::Text("127.0.0.1:8081")),
    ("max_charge_cents", Setting::Number(100_000)),
];

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        let config = choreo_host::settings::layered(SETTINGS)?;
        Ok(Settings {
            common: choreo_host::settings::part(&config)?,
            rules: choreo_host::settings::part(&config)?,
        })
    }
}

/// Builds the service; run it with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Service<handler::BillingHandler>> {
    let handler = handler::BillingHandler {
        rules: settings.rules.clone(),
    };
    Service::build(
        BILLING,
        &settings.common,
        &MIGRATIONS,
        handler,
        http::routes,
        http::openapi(),
    )
    .await
}
