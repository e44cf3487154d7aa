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
/// [`Service::local_addr`], and run it in-process. Put together by [`Service::builder`].
#[derive(Debug)]
pub struct Service<H> {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    broker: Broker<H>,
    database: Database,
    /// What `/metrics` renders.
    metrics: ServiceMetrics,
    /// Flushed and shut down once the broker stopped.
    trace_export: crate::traces::TraceExport,
    /// What the HTTP server allows each client connection.
    connection_bounds: crate::server::ConnectionBounds,
    /// The API's bearer tokens (none: authentication off), checked on every request of
    /// `router` outside `open_paths` when the service runs.
    api_tokens: crate::auth::ApiTokens,
    /// The paths open without a token: [`OPEN_PATHS`] and the service's own.
    open_paths: Vec<&'static str>,
    /// What is pruned by age: the runtime's tables and the service's own.
    retention: choreo_messaging::Retention,
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

/// The routes of a service, made once its parts exist.
type Routes<'a> = Box<dyn FnOnce(&Parts) -> Router + Send + 'a>;

/// What a service is made of, gathered before anything is opened: [`Service::builder`] starts
/// it with what every service has, the other methods add what some have, and
/// [`Builder::build`] opens and binds.
#[must_use = "a builder does nothing until built"]
pub struct Builder<'a, H> {
    topology: ServiceTopology,
    settings: &'a CommonSettings,
    migrations: &'a Migrations,
    handler: H,
    routes: Routes<'a>,
    openapi: serde_json::Value,
    unbounded: Option<Router>,
    open_paths: Vec<&'static str>,
    retained: Vec<choreo_messaging::Expiring>,
}

impl<H> std::fmt::Debug for Builder<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("service", &self.topology.name)
            .field("open_paths", &self.open_paths)
            .finish_non_exhaustive()
    }
}

impl<'a, H: Handler> Builder<'a, H> {
    /// The service's API: `routes` receives the parts its handlers need, and `openapi` (the
    /// routes' document) is served at `/openapi.json`. Its requests are bounded
    /// (`[http]` settings) and counted.
    pub fn routes(
        mut self,
        routes: impl FnOnce(&Parts) -> Router + Send + 'a,
        openapi: serde_json::Value,
    ) -> Self {
        self.routes = Box::new(routes);
        self.openapi = openapi;
        self
    }

    /// Routes kept out of the request bounds (a stream that stays open as long as a page does),
    /// still behind the API tokens unless opened.
    pub fn unbounded_routes(mut self, routes: Router) -> Self {
        self.unbounded = Some(routes);
        self
    }

    /// A path answered without a token, beside [`OPEN_PATHS`].
    pub fn open_path(mut self, path: &'static str) -> Self {
        self.open_paths.push(path);
        self
    }

    /// A table of the service's own that retention prunes by age.
    pub fn retain(mut self, table: choreo_messaging::Expiring) -> Self {
        self.retained.push(table);
        self
    }

    /// Opens the database, binds the HTTP listener and wires the broker supervisor. Nothing is
    /// consumed or published until [`Service::run_until_stopped`].
    pub async fn build(self) -> crate::Result<Service<H>> {
        let Builder {
            topology,
            settings,
            migrations,
            mut handler,
            routes,
            openapi,
            unbounded,
            open_paths,
            retained,
        } = self;
        settings.validate()?;
        let url = settings.database.url_for(topology.name);
        let broker_settings = settings.messaging()?;
        let options = choreo_store::Options {
            max_connections: settings.database.db_max_connections,
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
        let (traces, trace_export) = crate::traces::start(topology, settings)?;
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
            crate::http::bounded(routes(&parts), settings.http.limits()),
            crate::http::Readiness {
                database: database.clone(),
                broker: health.clone(),
            },
            openapi,
            metrics.endpoint(database.clone(), health.clone()),
        ));
        // Merged after the conventions were applied, so they need their JSON 405 of their own.
        let router = match unbounded {
            Some(unbounded) => {
                router.merge(unbounded.method_not_allowed_fallback(crate::http::method_not_allowed))
            }
            None => router,
        };
        let listener = TcpListener::bind(&settings.http.http_addr).await?;
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
        let mut retention = settings.retention.pruning();
        for table in retained {
            retention.also(table);
        }
        Ok(Service {
            name: topology.name,
            listener,
            router,
            broker,
            database,
            metrics,
            trace_export,
            connection_bounds: settings.http.connection_bounds(),
            api_tokens: settings.http.api_tokens.clone(),
            open_paths,
            retention,
        })
    }
}

impl<H: Handler> Service<H> {
    /// A service of `topology` handling its deliveries with `handler`, on a database migrated by
    /// `migrations`; with no routes but the conventions (health, metrics, `/openapi.json`)
    /// until [`Builder::routes`] adds its API.
    pub fn builder<'a>(
        topology: ServiceTopology,
        settings: &'a CommonSettings,
        migrations: &'a Migrations,
        handler: H,
    ) -> Builder<'a, H> {
        Builder {
            topology,
            settings,
            migrations,
            handler,
            routes: Box::new(|_| Router::new()),
            openapi: serde_json::json!({}),
            unbounded: None,
            open_paths: OPEN_PATHS.to_vec(),
            retained: Vec::new(),
        }
    }

    /// The service's database, open (for a test, or a task beside the service).
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The service's metrics, for a part of it that counts something of its own.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.metrics
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
