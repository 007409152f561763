//! Tracing: log lines to stderr, and OpenTelemetry export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! W3C trace context is extracted from incoming gRPC requests and injected into outgoing ones.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use opentelemetry::propagation::{Injector, TextMapCompositePropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};

/// The environment variable that turns OTLP export on.
pub const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How long exiting may wait for the last spans to reach the collector.
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps the exporter alive; flushes pending spans (for at most [`FLUSH_TIMEOUT`]) when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            eprintln!("opentelemetry: flushing spans failed: {error}");
        }
    }
}

/// Errors setting up tracing.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}: {message}")]
    Filter { filter: String, message: String },
    /// The OTLP exporter could not be built.
    #[error("cannot set up OTLP export to {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
    /// A global subscriber was already installed.
    #[error("tracing was already initialised")]
    AlreadySet,
}

fn env_filter(
    log: &LogSettings,
    env: &BTreeMap<String, String>,
) -> Result<EnvFilter, TelemetryError> {
    let filter = env
        .get("RUST_LOG")
        .cloned()
        .unwrap_or_else(|| log.filter.clone());
    EnvFilter::try_new(&filter).map_err(|error| TelemetryError::Filter {
        filter,
        message: error.to_string(),
    })
}

/// Installs the global subscriber for `service_name`.
pub fn init(
    service_name: &'static str,
    log: &LogSettings,
    env: &BTreeMap<String, String>,
) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
    ]));
    let ansi = std::io::stderr().is_terminal();
    let fmt_layer = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(true)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(env_filter(log, env)?);

    let endpoint = env.get(OTLP_ENDPOINT_VAR).filter(|value| !value.is_empty());
    let (otel_layer, provider) = match endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|error| TelemetryError::Exporter {
                    endpoint: endpoint.clone(),
                    message: error.to_string(),
                })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service_name)
                        .build(),
                )
                .build();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service_name))
                .with_filter(env_filter(log, env)?);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadySet)?;
    Ok(Telemetry { provider })
}

/// The span of one incoming RPC, child of the caller's trace when its request carries `traceparent`.
pub fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let span =
        tracing::info_span!("rpc", otel.name = %path, otel.kind = "server", rpc.path = %path);
    continue_trace(&span, request.headers());
    span
}

/// The span of one incoming HTTP request named by its `route` (`GET /content/{content_id}/{file}`), child of the
/// caller's trace when the request carries `traceparent` (a device's agent sends one per download).
pub fn http_span<B>(request: &http::Request<B>, route: &str) -> tracing::Span {
    let method = request.method();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
    );
    continue_trace(&span, request.headers());
    span
}

/// Makes `span` a child of the trace in `headers`, if any.
fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    // Only a caller's `traceparent` gives a parent to link to (most calls have none: skip the propagator).
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    // Fails only when no OpenTelemetry layer is installed; then there is nothing to link.
    let _ = span.set_parent(parent);
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's context into outgoing gRPC metadata (`traceparent`, `tracestate`).
pub fn inject_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}
