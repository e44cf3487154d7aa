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
use choreo_host::settings::{Key, Loaded, Process, Section, Setting};
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

/// The settings section of `billing`'s own: its business rules ([`rules::BillingRules`]).
pub const OWN: Section = Section {
    name: "billing",
    about: "billing's business rules",
    keys: &[Key::number(
        "max_charge_cents",
        100_000,
        0,
        i64::MAX,
        "the largest total captured; a larger one is declined (`limit_exceeded`)",
    )],
};

/// What `billing` reads: the common sections, its own, and its HTTP port.
pub const SETTINGS: Process = Process {
    name: "billing",
    own: Some(&OWN),
    defaults: &[("http_addr", Setting::Text("127.0.0.1:8081"))],
};

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        Self::read(&choreo_host::settings::load(&SETTINGS)?)
    }

    /// The settings of `billing` from what was loaded.
    pub fn read(loaded: &Loaded) -> choreo_host::Result<Self> {
        Ok(Settings {
            common: loaded.common()?,
            rules: loaded.own()?,
        })
    }
}

/// Builds the service; run it with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Service<handler::BillingHandler>> {
    let handler = handler::BillingHandler {
        rules: settings.rules.clone(),
    };
    Service::builder(BILLING, &settings.common, &MIGRATIONS, handler)
        .routes(http::routes, http::openapi())
        .build()
        .await
}
