//! The gRPC bootstrap every service uses: health, reflection v1 and v1alpha, TLS, a span per RPC, and a graceful
//! shutdown that turns health NOT_SERVING first, lets streams end, and gives up on draining after a timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::RoutesBuilder;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::authorize::Authorizer;
use crate::config::ServerSettings;
use crate::supervise::Supervisor;
use crate::tls::TlsError;

/// How long open connections may take to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

/// A server that could not start or failed while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen settings are refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Reflection could not be built from the descriptor sets.
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Result of serving.
pub type ServeResult<T> = Result<T, ServeError>;

/// A configured gRPC server, ready to serve on a bound listener.
#[derive(Debug)]
pub struct GrpcServer {
    tls: Option<ServerTlsConfig>,
    supervisor: Option<Supervisor>,
    authorizer: Option<Arc<Authorizer>>,
    audit: Option<crate::audit::AuditTrail>,
}

impl GrpcServer {
    /// Checks `settings`; the server is plaintext until [`Self::with_tls`] gives it its certificates.
    pub fn new(settings: &ServerSettings) -> ServeResult<Self> {
        settings.check()?;
        Ok(Self {
            tls: None,
            supervisor: None,
            authorizer: None,
            audit: None,
        })
    }

    /// Serves with `tls` ([`crate::pki::server_tls`]).
    pub fn with_tls(mut self, tls: ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Changes and refused calls are recorded in `audit`.
    pub fn audited(mut self, audit: crate::audit::AuditTrail) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Every call is authenticated and authorized by `authorizer` (without one, a server a test runs in
    /// plaintext lets every call through).
    pub fn authorized(mut self, authorizer: Arc<Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Health follows `supervisor` too: NOT_SERVING while one of its loops is down.
    pub fn supervised(mut self, supervisor: Supervisor) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    /// Serves `routes` (plus health and reflection) on `listener` until `shutdown` is cancelled.
    /// `service_names` are reported SERVING by the health service while up.
    pub async fn serve(
        self,
        listener: TcpListener,
        mut routes: RoutesBuilder,
        service_names: &[&'static str],
        shutdown: CancellationToken,
    ) -> ServeResult<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        for name in service_names.iter().copied().chain([""]) {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let reflection_v1 =
            reflection_builder(service_names, "grpc.reflection.v1.ServerReflection")
                .build_v1()
                .map_err(|error| ServeError::Reflection(error.to_string()))?;
        let reflection_v1alpha =
            reflection_builder(service_names, "grpc.reflection.v1alpha.ServerReflection")
                .build_v1alpha()
                .map_err(|error| ServeError::Reflection(error.to_string()))?;
        // Clients may compress their requests (a Python channel set to gzip compresses every call).
        routes
            .add_service(health_service.accept_compressed(CompressionEncoding::Gzip))
            .add_service(reflection_v1.accept_compressed(CompressionEncoding::Gzip))
            .add_service(reflection_v1alpha.accept_compressed(CompressionEncoding::Gzip));

        let mut builder = Server::builder()
            .trace_fn(crate::telemetry::rpc_span)
            .http2_keepalive_interval(Some(Duration::from_secs(30)));
        let tls_enabled = self.tls.is_some();
        if self.authorizer.is_none() {
            tracing::warn!(
                "serving without authentication: every caller may call every RPC; only for tests on loopback"
            );
        }
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let local_addr = listener.local_addr().ok();
        tracing::info!(addr = ?local_addr, tls = tls_enabled, "gRPC server listening");
        // Replies go out at once: without TCP_NODELAY a reply written in pieces waits for the peer's delayed ACK.
        let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
            accepted.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        });
        if let Some(supervisor) = self.supervisor {
            tokio::spawn(follow_supervision(
                supervisor,
                reporter.clone(),
                service_names.to_vec(),
                shutdown.clone(),
            ));
        }
        let stop_reporter = reporter.clone();
        let stop_signal = shutdown.clone();
        let signal = async move {
            stop_signal.cancelled().await;
            for name in service_names.iter().copied().chain([""]) {
                stop_reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        };
        let server = builder
            .layer(crate::deadline::DeadlineLayer)
            .layer(crate::authorize::AuthorizeLayer::new(
                self.authorizer,
                self.audit,
            ))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections did not drain in time; closing them");
            }
        }
        tracing::info!("gRPC server stopped");
        Ok(())
    }
}

/// Keeps health NOT_SERVING while a supervised loop is down and SERVING otherwise, until shutdown (which turns
/// it NOT_SERVING for good).
async fn follow_supervision(
    supervisor: Supervisor,
    reporter: tonic_health::server::HealthReporter,
    service_names: Vec<&'static str>,
    shutdown: CancellationToken,
) {
    let mut changes = supervisor.changes();
    loop {
        let status = if supervisor.down().is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if shutdown.is_cancelled() {
            return;
        }
        for name in service_names.iter().copied().chain([""]) {
            reporter.set_service_status(name, status).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Reflection over every clouddp.v1 file and the health service, advertising only the services served here.
fn reflection_builder(
    service_names: &[&'static str],
    reflection_name: &'static str,
) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(clouddp_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for name in service_names
        .iter()
        .copied()
        .chain(["grpc.health.v1.Health", reflection_name])
    {
        builder = builder.with_service_name(name);
    }
    builder
}

/// A boxed response stream, the type of streaming RPCs not yet available.
pub type PendingStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// The answer of an RPC whose capability is not available yet: UNIMPLEMENTED naming the capability.
pub fn pending(capability: &str, rpc: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "{rpc} is part of the {capability} capability, which this server does not provide yet"
    ))
}
