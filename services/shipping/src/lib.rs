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
use choreo_host::settings::{Key, Loaded, Process, Section, Setting};
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

/// The settings section of `shipping`'s own: its business rules ([`rules::ShippingRules`]).
pub const OWN: Section = Section {
    name: "shipping",
    about: "shipping's business rules",
    keys: &[
        Key::words(
            "countries",
            rules::DEFAULT_COUNTRIES,
            "countries served, as two-letter codes (upper-cased when read), at least one; an \
             order to another fails (`unserviceable_country`)",
        ),
        Key::text(
            "carrier",
            rules::DEFAULT_CARRIER,
            "carrier named on shipments",
        ),
    ],
};

/// What `shipping` reads: the common sections, its own, and its HTTP port.
pub const SETTINGS: Process = Process {
    name: "shipping",
    own: Some(&OWN),
    defaults: &[("http_addr", Setting::Text("127.0.0.1:8082"))],
};

impl Settings {
    /// Defaults, then `CHOREO_CONFIG_FILE`, then `CHOREO_*` variables.
    pub fn load() -> choreo_host::Result<Self> {
        Self::read(&choreo_host::settings::load(&SETTINGS)?)
    }

    /// The same from `variables` instead of the process's environment.
    pub fn load_from(variables: &HashMap<String, String>) -> choreo_host::Result<Self> {
        Self::read(&choreo_host::settings::load_from(&SETTINGS, variables)?)
    }

    /// The settings of `shipping` from what was loaded.
    pub fn read(loaded: &Loaded) -> choreo_host::Result<Self> {
        let rules: rules::ShippingRules = loaded.own()?;
        Ok(Settings {
            common: loaded.common()?,
            rules: rules.checked().map_err(choreo_host::Error::Usage)?,
        })
    }
}

/// Builds the service; run it with [`Service::run_until_stopped`].
pub async fn build(settings: Settings) -> choreo_host::Result<Service<handler::ShippingHandler>> {
    let handler = handler::ShippingHandler {
        rules: settings.rules.clone(),
    };
    Service::builder(SHIPPING, &settings.common, &MIGRATIONS, handler)
        .routes(http::routes, http::openapi())
        .build()
        .await
}
