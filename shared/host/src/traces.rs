//! Exporting a service's traces by OTLP, when `CHOREO_OTLP_ENDPOINT` names a collector.
//!
//! Each service gets its own tracer provider, with its own resource (`service.name`) and its own
//! batch exporter, created when the service is built and flushed and shut down when it stops.
//! Nothing is installed globally: the end-to-end tests run three services in one process, and
//! each must still export as itself. The spans themselves are made by `choreo_messaging`'s
//! [`Traces`], which this hands to the consumer and to the routes.
//!
//! OTLP over HTTP with protobuf bodies (`<endpoint>/v1/traces`): what the OpenTelemetry
//! Collector and Jaeger accept on port 4318 and what exporters default to. The batch processor
//! exports from a thread of its own with reqwest's blocking client, so a slow or absent
//! collector never holds up a request or a message; when its queue is full, spans are dropped.

use crate::CommonSettings;
use choreo_events::topology::ServiceTopology;
use choreo_messaging::{Names, Traces};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A service's trace exporter; flushed and shut down by [`TraceExport::shutdown`]. Empty when
/// traces are off.
#[derive(Debug, Default)]
pub struct TraceExport(Option<SdkTracerProvider>);

/// The tracer of `service` and its exporter: both off when `otlp_endpoint` is empty.
pub fn start(
    service: ServiceTopology,
    common: &CommonSettings,
) -> crate::Result<(Traces, TraceExport)> {
    let Some(url) = traces_url(&common.telemetry.otlp_endpoint)? else {
        return Ok((Traces::off(), TraceExport::default()));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| crate::Error::Usage(format!("CHOREO_OTLP_ENDPOINT: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.name).build())
        .build();
    let tracer = BoxedTracer::new(Box::new(provider.tracer("choreo")));
    let exchange = Names::new(common.broker.prefix.clone()).of(service.exchange);
    Ok((Traces::new(tracer, exchange), TraceExport(Some(provider))))
}

/// The URL spans are posted to: `<endpoint>/v1/traces`, or `None` for an empty endpoint.
fn traces_url(endpoint: &str) -> crate::Result<Option<String>> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return Ok(None);
    }
    // The exporter is built without TLS, as the broker client is.
    let Some(authority) = endpoint.strip_prefix("http://") else {
        return Err(crate::Error::Usage(format!(
            "CHOREO_OTLP_ENDPOINT ({endpoint:?}) must be an http:// URL such as \
             http://127.0.0.1:4318 (https is not built in)"
        )));
    };
    if authority.is_empty() || endpoint.parse::<axum::http::Uri>().is_err() {
        return Err(crate::Error::Usage(format!(
            "CHOREO_OTLP_ENDPOINT ({endpoint:?}) is not a URL"
        )));
    }
    Ok(Some(format!("{endpoint}/v1/traces")))
}

impl TraceExport {
    /// Exports what is left and stops the exporter. Runs on a blocking thread: the exporter
    /// waits for its last HTTP answer (bounded by the export timeout).
    pub async fn shutdown(self) {
        let Some(provider) = self.0 else {
            return;
        };
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "the trace exporter did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_a_base_url_and_empty_means_off() {
        assert_eq!(traces_url("").expect("off"), None);
        assert_eq!(traces_url("  ").expect("off"), None);
        assert_eq!(
            traces_url("http://127.0.0.1:4318").expect("valid"),
            Some("http://127.0.0.1:4318/v1/traces".to_owned())
        );
        assert_eq!(
            traces_url("http://collector:4318/otlp/").expect("valid"),
            Some("http://collector:4318/otlp/v1/traces".to_owned())
        );
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://",
            "http://a b",
        ] {
            let error = traces_url(bad).expect_err(bad).to_string();
            assert!(error.contains("CHOREO_OTLP_ENDPOINT"), "{error}");
        }
    }
}
