//! The lifecycle of a service: bound listener, HTTP server and broker supervisor, run together
//! until a shutdown signal, then stopped in order.

use crate::CommonSettings;
use crate::metrics::ServiceMetrics;
use axum::Router;
use choreo_events::topology::ServiceTopology;
use choreo_messaging::{Broker, BrokerHealth, Handler, OutboxWaker, Traces};
use choreo_store::{Database, Migrations};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A built service, ready to run. Tests build it with port 0 and a unique prefix, read
/// [`Service::local_addr`], and run it in-process.
#[derive(Debug)]
pub struct Service<H> {
    pub name: &'static str,
    pub listener: TcpListener,
    pub router: Router,
    pub broker: Broker<H>,
    pub database: Database,
    /// What `/metrics` renders.
    pub metrics: ServiceMetrics,
    /// Flushed and shut down once the broker stopped.
    pub trace_export: crate::traces::TraceExport,
    /// What the HTTP server allows each client connection.
    pub connection_bounds: crate::server::ConnectionBounds,
    /// The API's bearer tokens (none: authentication off), checked on every request of
    /// `router` outside `open_paths` when the service runs, so routes merged in after
    /// [`Service::build`] are covered too.
    pub api_tokens: crate::auth::ApiTokens,
    /// The paths open without a token: [`OPEN_PATHS`] unless a service adds its own.
    pub open_paths: Vec<&'static str>,
    /// What is pruned by age; a service adds its own tables before it runs.
    pub retention: choreo_messaging::Retention,
}

/// The paths every service answers without a token: probes carry no secrets.
pub const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// What a service's routes may use: its database and the waker of its outbox relay.
#[derive(Debug, Clone)]
pub struct Parts {
    pub database: Database,
    pub waker: OutboxWaker,
    pub failpoints: choreo_messaging::failpoint::Failpoints,
    /// The service's metrics, for a route that counts something of its own.
    pub metrics: ServiceMetrics,
    /// The service's tracer, for routes that create events (off by default).
    pub traces: Traces,
}

/// How long a starting service waits for an unreachable database before giving up.
pub const DATABASE_PATIENCE: Duration = Duration::from_secs(120);

impl<H: Handler> Service<H> {
    /// Opens the database, binds the HTTP listener and wires the broker supervisor; `routes`
    /// receives the parts its handlers need, and `openapi` (the routes' document) is served at
    /// `/openapi.json`. Nothing is consumed or published until [`Service::run_until_stopped`].
    pub async fn build(
        topology: ServiceTopology,
        common: &CommonSettings,
        migrations: &Migrations,
        mut handler: H,
        routes: impl FnOnce(&Parts) -> Router,
        openapi: serde_json::Value,
    ) -> crate::Result<Self> {
        common.validate()?;
        let url = common.database_url_for(topology.name);
        let broker_settings = common.broker()?;
        let options = choreo_store::Options {
            max_connections: common.db_max_connections,
            patience: DATABASE_PATIENCE,
            failpoints: broker_settings.failpoints.clone(),
        };
        // The service's migrations, then the messaging runtime's outbox and inbox tables.
        let database = Database::open(
            &url,
            &options,
            migrations,
            choreo_messaging::schema::statements,
        )
        .await?;
        // One recorder per service instance, never the process-global one (see crate::metrics).
        let metrics = ServiceMetrics::new(&topology);
        handler.register_metrics(metrics.recorder());
        let (traces, trace_export) = crate::traces::start(topology, common)?;
        let parts = Parts {
            database: database.clone(),
            waker: OutboxWaker::default(),
            failpoints: broker_settings.failpoints.clone(),
            metrics: metrics.clone(),
            traces: traces.clone(),
        };
        let health = Arc::new(BrokerHealth::default());
        // Health answers and metrics stay outside the bounds: an overloaded service is not a
        // dead one, and its metrics are how an operator sees it is overloaded.
        let router = metrics.count_requests(crate::http::with_conventions(
            crate::http::bounded(routes(&parts), common.http_limits()),
            crate::http::Readiness {
                database: database.clone(),
                broker: health.clone(),
            },
            openapi,
            metrics.endpoint(database.clone(), health.clone()),
        ));
        let listener = TcpListener::bind(&common.http_addr).await?;
        let broker = Broker {
            settings: broker_settings,
            service: topology,
            db: database.clone(),
            handler: Arc::new(handler),
            waker: parts.waker.clone(),
            health,
            metrics: metrics.runtime.clone(),
            traces,
        };
        Ok(Service {
            name: topology.name,
            listener,
            router,
            broker,
            database,
            metrics,
            trace_export,
            connection_bounds: common.connection_bounds(),
            api_tokens: common.api_tokens.clone(),
            open_paths: OPEN_PATHS.to_vec(),
            retention: common.retention(),
        })
    }

    /// The address the HTTP server really bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, then stops: the HTTP server finishes its requests and
    /// the broker supervisor stops consuming, finishes the message in hand, publishes what the
    /// outbox holds (bounded by the shutdown timeout) and closes its connections.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = self.broker.settings.shutdown_timeout;
        let broker_stop = CancellationToken::new();
        let http_stop = CancellationToken::new();
        // Dropping this future (a test killing the service) must end the broker session too, as
        // a crash would: the guard aborts the task, which drops its connections.
        let mut broker = AbortOnDrop(tokio::spawn(self.broker.run(broker_stop.clone())));
        // Pruning runs beside the broker, one small unit of work at a time; it needs no broker.
        let _retention = AbortOnDrop(tokio::spawn(
            self.retention
                .run(self.database.clone(), self.metrics.recorder()),
        ));
        let _upkeep = AbortOnDrop(tokio::spawn(self.metrics.upkeep()));
        // Outside the request counter and the bounds: a request without a token takes no slot.
        let router = crate::auth::required(self.router, self.api_tokens, &self.open_paths);
        let server = crate::server::serve(
            self.listener,
            router,
            self.connection_bounds,
            http_stop.clone().cancelled_owned(),
        );
        tracing::info!(service = self.name, "started");
        let trigger = http_stop.clone();
        let _signal = AbortOnDrop(tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested");
            trigger.cancel();
        }));
        // HTTP stops first, so an order committed by a request still in flight is in the outbox
        // before the relay's last drain. Each phase is bounded by the shutdown timeout.
        let served = tokio::select! {
            served = server => served,
            () = async { http_stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "HTTP requests still open after the shutdown timeout; closing");
                Ok(())
            }
        };
        broker_stop.cancel();
        match tokio::time::timeout(grace + Duration::from_secs(5), &mut broker.0).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the broker supervisor panicked"),
            Err(_) => tracing::warn!(
                "the broker did not stop in time; closing anyway (unacked deliveries are requeued)"
            ),
        }
        self.trace_export.shutdown().await;
        self.database.close().await;
        tracing::info!(service = self.name, "stopped");
        served
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
