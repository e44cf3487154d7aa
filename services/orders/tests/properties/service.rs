//! The orders service as the properties use it: its router and its handler on an in-memory
//! SQLite database with every table the real service has, and no broker (nothing is published:
//! what would be, stays in the outbox table).

use axum::Router;
use choreo_events::topology::ORDERS;
use choreo_host::metrics::ServiceMetrics;
use choreo_host::service::Parts;
use choreo_messaging::failpoint::Failpoints;
use choreo_messaging::{OutboxWaker, Traces};
use choreo_store::Database;
use std::sync::OnceLock;

/// One runtime and one database for every case of a test binary: cases use fresh order ids, so
/// they never see each other's rows, and opening a database per case would dominate the run.
pub struct Service {
    pub runtime: tokio::runtime::Runtime,
    pub database: Database,
    pub router: Router,
}

pub fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let database = runtime.block_on(choreo_messaging::testing::service_memory_database(
            &orders::MIGRATIONS,
        ));
        let parts = Parts {
            database: database.clone(),
            waker: OutboxWaker::default(),
            failpoints: Failpoints::parse("").expect("no failpoints"),
            metrics: ServiceMetrics::new(&ORDERS),
            traces: Traces::off(),
        };
        // No admission bound: every order stays pending here (nothing consumes its events).
        let admission = orders::admission::Admission::new(0, parts.metrics.recorder());
        let router = orders::http::routes(&parts, std::sync::Arc::new(admission));
        Service {
            runtime,
            database,
            router,
        }
    })
}
