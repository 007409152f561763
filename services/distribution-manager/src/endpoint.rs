//! The HTTPS content endpoint: serves the sealed content of many DPs from one process, each cloud DP with its
//! own service certificate chosen by SNI; `GET`/`HEAD` with `Range`, a health path; refuses without a valid
//! access token (401/403) and for a DP that is not serving (503, within the refresh interval of a stop); counts
//! every byte it serves per DP, content and client, and appends the counts to the DP's store as time-bucketed
//! usage log objects that the monitoring service pulls.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use clouddp_core::dp::{DpKind, DpState};
use clouddp_core::token::{Scope, TokenError};
use clouddp_core::usage::{UsageRecord, hour_folder};
use clouddp_platform::clock::now_ms;
use clouddp_platform::store::BlobStore;
use clouddp_platform::supervise::{Heartbeat, Supervisor};
use futures::StreamExt as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::ContentEndpointSettings;
use crate::dp::{DistributionManager, DpRecord};
use crate::error::{DmError, DmResult};
use crate::locate::url_host;
use crate::tokens::TokenKeys;

/// The header a client names itself in. Only a site run without authentication (tests) heeds it; everywhere
/// else a token is bound to the certificate the client presents.
pub const CLIENT_HEADER: &str = "x-clouddp-client";
/// Bytes read from the store per piece of a response.
const SLICE: u64 = 1 << 20;
/// The content endpoint's routes.
const CONTENT_ROUTE: &str = "/content/{content_id}/{file}";
const HEALTH_ROUTE: &str = "/healthz";
/// How long open connections may finish after a shutdown.
const DRAIN: Duration = Duration::from_millis(1500);

/// A DP as the endpoint serves it.
struct Served {
    dp: DpRecord,
    store: Arc<dyn BlobStore>,
}

#[derive(Default)]
struct Snapshot {
    revision: i64,
    keys: (i64, i64),
    by_host: HashMap<String, Arc<Served>>,
    certificates: HashMap<String, Arc<CertifiedKey>>,
}

/// Bytes and requests served, by (DP, content version, client).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counter {
    bytes: u64,
    requests: u64,
}

type UsageKey = (String, String, String);

/// The content endpoint.
pub struct ContentEndpoint {
    manager: Arc<DistributionManager>,
    keys: TokenKeys,
    settings: ContentEndpointSettings,
    trust: EndpointTrust,
    snapshot: RwLock<Snapshot>,
    default_certificate: Arc<CertifiedKey>,
    usage: Mutex<HashMap<UsageKey, Counter>>,
    instance: String,
    sequence: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ContentEndpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ContentEndpoint")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn internal(error: impl std::fmt::Display) -> DmError {
    DmError::Internal(error.to_string())
}

fn certified(
    chain: Vec<Vec<u8>>,
    key: &rustls::pki_types::PrivateKeyDer<'_>,
) -> DmResult<Arc<CertifiedKey>> {
    Ok(Arc::new(
        crate::certs::certified_key(&chain, key).map_err(internal)?,
    ))
}

/// How the endpoint knows devices and itself.
#[derive(Debug, Clone, Default)]
pub struct EndpointTrust {
    /// The site CA (PEM) that devices' certificates chain to. Tokens must then be bound to the certificate the
    /// device presents (RFC 8705). `None` only on a site run without authentication (tests): its tokens are
    /// bound to the device id the client names in `x-clouddp-client`.
    pub site_ca: Option<PathBuf>,
    /// The site's server credential (`cert.pem`, `key.pem`, issued by the site CA), served for on-premises DPs
    /// when `[content_endpoint] certificate` is unset, so an enrolled agent trusts it with no flag.
    pub server_credential: Option<PathBuf>,
}

fn read_credential(certificate: &FsPath, private_key: &FsPath) -> DmResult<Arc<CertifiedKey>> {
    let read = |path: &FsPath| {
        std::fs::read(path).map_err(|error| {
            DmError::Precondition(format!("cannot read {}: {error}", path.display()))
        })
    };
    let chain = rustls_pemfile::certs(&mut read(certificate)?.as_slice())
        .map(|cert| cert.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| DmError::Precondition(format!("{}: {error}", certificate.display())))?;
    let key = rustls_pemfile::private_key(&mut read(private_key)?.as_slice())
        .map_err(|error| DmError::Precondition(format!("{}: {error}", private_key.display())))?
        .ok_or_else(|| {
            DmError::Precondition(format!("{} holds no private key", private_key.display()))
        })?;
    certified(chain, &key)
}

/// The certificate for on-premises DPs: the configured one, else the site's server credential, else (a site
/// without authentication) a self-signed one for `localhost`.
fn default_certificate(
    settings: &ContentEndpointSettings,
    trust: &EndpointTrust,
) -> DmResult<Arc<CertifiedKey>> {
    if let (Some(certificate), Some(private_key)) = (&settings.certificate, &settings.private_key) {
        return read_credential(certificate, private_key);
    }
    if let Some(dir) = &trust.server_credential {
        return read_credential(
            &dir.join(clouddp_platform::pki::CERT_FILE),
            &dir.join(clouddp_platform::pki::KEY_FILE),
        );
    }
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).map_err(internal)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    certified(vec![generated.cert.der().to_vec()], &key)
}

/// Verifies the certificates devices present against the site CA; a client without one still connects (and
/// is refused by the token check).
fn client_verifier(
    site_ca: &FsPath,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let pem = std::fs::read(site_ca).map_err(|error| {
        anyhow::anyhow!("cannot read the site CA {}: {error}", site_ca.display())
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(certificate?)?;
    }
    Ok(
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()?,
    )
}

impl ContentEndpoint {
    /// An endpoint over `manager`'s DPs, loaded once.
    pub async fn new(
        manager: Arc<DistributionManager>,
        keys: TokenKeys,
        settings: ContentEndpointSettings,
        trust: EndpointTrust,
    ) -> DmResult<Arc<Self>> {
        let endpoint = Arc::new(Self {
            default_certificate: default_certificate(&settings, &trust)?,
            manager,
            keys,
            settings,
            trust,
            snapshot: RwLock::new(Snapshot {
                revision: -1,
                ..Snapshot::default()
            }),
            usage: Mutex::default(),
            instance: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            sequence: std::sync::atomic::AtomicU64::new(0),
        });
        endpoint.refresh().await?;
        Ok(endpoint)
    }

    /// Re-reads DPs and their certificates when any changed, and the token keys when they changed.
    pub async fn refresh(&self) -> DmResult<()> {
        let revision: i64 =
            sqlx::query_scalar("SELECT value FROM site_counters WHERE name = 'dp_revision'")
                .fetch_one(self.manager.pool())
                .await?;
        let keys = self.keys.fingerprint().await?;
        let (known_revision, known_keys) = {
            let snapshot = self.snapshot.read().map_err(internal)?;
            (snapshot.revision, snapshot.keys)
        };
        if keys != known_keys {
            self.keys.reload().await?;
            self.snapshot.write().map_err(internal)?.keys = keys;
        }
        if revision == known_revision {
            return Ok(());
        }
        let only: Vec<String> = self
            .settings
            .distribution_points
            .split(',')
            .map(|item| item.trim().to_owned())
            .filter(|item| !item.is_empty())
            .collect();
        let mut by_host = HashMap::new();
        let mut certificates = HashMap::new();
        for dp in self.manager.list(None).await? {
            if !only.is_empty()
                && !only
                    .iter()
                    .any(|item| *item == dp.id || item.eq_ignore_ascii_case(&dp.name))
            {
                continue;
            }
            let host = match (&dp.cloud, dp.kind) {
                (Some(cloud), DpKind::Cloud) => cloud.service_fqdn.to_ascii_lowercase(),
                _ => match url_host(&dp.address) {
                    Some(host) => host,
                    None => continue,
                },
            };
            if host.is_empty() || dp.state == DpState::Deleting {
                continue;
            }
            if let Some(certificate) = &dp.service_certificate_id {
                match self.manager.certificates().chain_and_key(certificate).await {
                    Ok((chain, key)) => {
                        certificates.insert(host.clone(), certified(chain, &key.to_rustls())?);
                    }
                    Err(error) => {
                        tracing::warn!(dp.name = %dp.name, %error, "service certificate not loadable")
                    }
                }
            }
            let store = match self.manager.store_for(&dp).await {
                Ok(store) => store,
                Err(error) => {
                    tracing::warn!(dp.name = %dp.name, %error, "store not available; the DP is not served");
                    continue;
                }
            };
            by_host.insert(host, Arc::new(Served { dp, store }));
        }
        let mut snapshot = self.snapshot.write().map_err(internal)?;
        snapshot.revision = revision;
        snapshot.by_host = by_host;
        snapshot.certificates = certificates;
        Ok(())
    }

    fn served(&self, host: &str) -> Option<Arc<Served>> {
        self.snapshot
            .read()
            .ok()?
            .by_host
            .get(&host.to_ascii_lowercase())
            .cloned()
    }

    fn count(&self, key: &UsageKey, bytes: u64, requests: u64) {
        if let Ok(mut usage) = self.usage.lock() {
            let counter = usage.entry(key.clone()).or_default();
            counter.bytes += bytes;
            counter.requests += requests;
        }
    }

    /// Appends the counts so far to each DP's store as one usage log object per DP; counts a store refuses are
    /// kept for the next flush.
    pub async fn flush_usage(&self) {
        let drained: HashMap<UsageKey, Counter> = match self.usage.lock() {
            Ok(mut usage) => std::mem::take(&mut *usage),
            Err(_) => return,
        };
        if drained.is_empty() {
            return;
        }
        let now = now_ms();
        let mut by_dp: HashMap<String, Vec<(UsageKey, Counter)>> = HashMap::new();
        for (key, counter) in drained {
            by_dp.entry(key.0.clone()).or_default().push((key, counter));
        }
        let folder = hour_folder(now);
        for (dp_id, entries) in by_dp {
            let store = {
                let snapshot = self.snapshot.read().ok();
                snapshot.and_then(|snapshot| {
                    snapshot
                        .by_host
                        .values()
                        .find(|served| served.dp.id == dp_id)
                        .map(|served| served.store.clone())
                })
            };
            let mut lines = Vec::new();
            for ((dp, content, client), counter) in &entries {
                let record = UsageRecord {
                    v: 1,
                    time_ms: now,
                    dp: dp.clone(),
                    content: content.clone(),
                    client: client.clone(),
                    bytes: counter.bytes,
                    requests: counter.requests,
                };
                if let Ok(line) = serde_json::to_vec(&record) {
                    lines.extend(line);
                    lines.push(b'\n');
                }
            }
            let sequence = self
                .sequence
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = format!("{folder}{}-{now:013}-{sequence:06}.jsonl", self.instance);
            let outcome = match store {
                Some(store) => store
                    .put(&path, Bytes::from(lines))
                    .await
                    .map_err(|error| error.to_string()),
                None => Err("the DP is no longer served here".to_owned()),
            };
            match outcome {
                Ok(()) => {
                    tracing::debug!(dp.id = %dp_id, %path, records = entries.len(), "usage appended")
                }
                Err(error) => {
                    tracing::warn!(dp.id = %dp_id, %error, "cannot append usage yet; kept for the next flush");
                    for (key, counter) in entries {
                        self.count(&key, counter.bytes, counter.requests);
                    }
                }
            }
        }
    }

    /// Refreshes what it serves and flushes usage on their intervals until `shutdown`; each refresh that goes
    /// through is a heartbeat, a refresh that fails ends the loop with the error (what was known is served
    /// meanwhile, and the supervisor starts the loop again).
    async fn maintain(
        self: Arc<Self>,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
    ) -> anyhow::Result<()> {
        let mut refresh = tokio::time::interval(self.settings.refresh_interval);
        let mut flush = tokio::time::interval(self.settings.usage_flush_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = refresh.tick() => {
                    fail::fail_point!("endpoint-refresh", |_| Err(anyhow::anyhow!("injected failure of the content endpoint refresh")));
                    self.refresh().await.map_err(|error| {
                        anyhow::anyhow!("cannot refresh the content endpoint (serving the last known state): {error}")
                    })?;
                    heartbeat.ok();
                }
                _ = flush.tick() => self.flush_usage().await,
            }
        }
    }

    /// The connections served at once: `max_connections`, lowered to leave 1,024 open files for the rest of the
    /// process.
    fn connection_cap(&self) -> usize {
        let files = usize::try_from(clouddp_platform::cli::file_limit()).unwrap_or(usize::MAX);
        let room = files.saturating_sub(1024).max(64);
        if room < self.settings.max_connections {
            tracing::warn!(
                max_connections = self.settings.max_connections,
                open_file_limit = files,
                serving = room,
                "the open file limit is too low for [content_endpoint] max_connections; raise LimitNOFILE"
            );
        }
        let cap = self.settings.max_connections.min(room);
        tracing::info!(max_connections = cap, "content endpoint connection cap");
        cap
    }

    /// Serves HTTPS on `listener` until `shutdown`; refreshes and flushes on their intervals meanwhile, under
    /// `supervisor`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        supervisor: Supervisor,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.trust.site_ca {
            Some(site_ca) => builder.with_client_cert_verifier(client_verifier(site_ca, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut tls = builder.with_cert_resolver(Arc::new(Resolver(self.clone())));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let router = axum::Router::new()
            .route(HEALTH_ROUTE, get(health))
            .route(CONTENT_ROUTE, get(serve_content))
            .with_state(self.clone());
        tracing::info!(addr = ?listener.local_addr().ok(), "content endpoint listening");

        let background = supervisor.spawn("endpoint-refresh", shutdown.clone(), {
            let (endpoint, shutdown) = (self.clone(), shutdown.clone());
            move |heartbeat| endpoint.clone().maintain(shutdown.clone(), heartbeat)
        });

        let connections = tokio_util::task::TaskTracker::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.connection_cap()));
        let (handshake_timeout, header_read_timeout) = (
            self.settings.handshake_timeout,
            self.settings.header_read_timeout,
        );
        loop {
            // A connection past the cap waits in the listen queue until one ends.
            let slot = tokio::select! {
                () = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot?,
            };
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let router = router.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _slot = slot;
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let session = stream.get_ref().1;
                let sni = session.server_name().map(str::to_ascii_lowercase);
                let certificate = ClientCertificate(
                    session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| clouddp_core::token::thumbprint(leaf)),
                );
                let service = hyper::service::service_fn(
                    move |mut request: http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ServerName(sni.clone()));
                        request.extensions_mut().insert(certificate.clone());
                        let span = clouddp_platform::telemetry::http_span(
                            &request,
                            route_of(request.uri().path()),
                        );
                        let mut router = router.clone();
                        async move { tower::Service::call(&mut router, request).await }
                            .instrument(span)
                    },
                );
                let mut builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_read_timeout);
                let stream = FirstBytes {
                    inner: stream,
                    deadline: Some(Box::pin(tokio::time::sleep(header_read_timeout))),
                };
                let connection =
                    builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    }
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(DRAIN, connection).await;
                    }
                }
            });
        }
        connections.close();
        let _ = tokio::time::timeout(DRAIN, connections.wait()).await;
        let _ = background.await;
        self.flush_usage().await;
        Ok(())
    }
}

/// A connection that must send its first bytes (an HTTP/1.1 request line or the HTTP/2 preface) within a
/// deadline after its handshake; hyper's header timeout starts only once bytes arrive.
struct FirstBytes<S> {
    inner: S,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            if buf.filled().len() > before {
                self.deadline = None;
            }
            return polled;
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request after the handshake",
            )));
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[derive(Debug)]
struct Resolver(Arc<ContentEndpoint>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = client_hello.server_name().and_then(|name| {
            self.0
                .snapshot
                .read()
                .ok()?
                .certificates
                .get(&name.to_ascii_lowercase())
                .cloned()
        });
        Some(by_name.unwrap_or_else(|| self.0.default_certificate.clone()))
    }
}

/// The TLS server name of a request's connection.
#[derive(Debug, Clone)]
struct ServerName(Option<String>);

/// The thumbprint of the client certificate of a request's connection (verified against the site CA).
#[derive(Debug, Clone)]
struct ClientCertificate(Option<String>);

async fn health() -> &'static str {
    "ok\n"
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"clouddp\""),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    response
}

/// A parsed `Range` header: `None` when absent or not a single byte range (the whole object is then sent).
fn parse_range(value: Option<&HeaderValue>, length: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(text) = value.and_then(|value| value.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let range = match (start.trim(), end.trim()) {
        ("", suffix) => {
            // A suffix longer than any content asks for all of it.
            let too_long = !suffix.is_empty() && suffix.bytes().all(|byte| byte.is_ascii_digit());
            if too_long && suffix.parse::<u64>().is_err() {
                return if length == 0 {
                    Err(())
                } else {
                    Ok(Some(0..length))
                };
            }
            let suffix: u64 = suffix.parse().map_err(|_| ())?;
            if suffix == 0 {
                return Err(());
            }
            length.saturating_sub(suffix)..length
        }
        (start, "") => start.parse().map_err(|_| ())?..length,
        (start, end) => {
            let start: u64 = start.parse().map_err(|_| ())?;
            let end: u64 = end.parse().map_err(|_| ())?;
            // A last byte before the first makes the header invalid: it is ignored (RFC 9110 14.2), the whole
            // content is sent.
            if end < start {
                return Ok(None);
            }
            start..end.saturating_add(1).min(length)
        }
    };
    if range.start >= length || range.is_empty() {
        return Err(());
    }
    Ok(Some(range))
}

/// The route a request path falls under, for its span's name (never the path itself: one name per route).
fn route_of(path: &str) -> &'static str {
    if path.starts_with("/content/") {
        CONTENT_ROUTE
    } else if path == HEALTH_ROUTE {
        HEALTH_ROUTE
    } else {
        "unknown route"
    }
}

async fn serve_content(
    State(endpoint): State<Arc<ContentEndpoint>>,
    Path((content_id, file)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let server_name = request
        .extensions()
        .get::<ServerName>()
        .and_then(|name| name.0.clone());
    let host = server_name.or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .map(|host| {
                host.rsplit_once(':')
                    .map_or(host, |(name, _)| name)
                    .to_ascii_lowercase()
            })
    });
    let Some(served) = host.as_deref().and_then(|host| endpoint.served(host)) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no distribution point is served at this host name",
        );
    };
    if served.dp.state != DpState::Ready {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "distribution point {} is {} and serves no content",
                served.dp.name,
                served.dp.state.as_str().replace('_', " ")
            ),
        );
    }
    let valid_id = !content_id.is_empty()
        && content_id
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '-');
    let version = file
        .strip_prefix('v')
        .and_then(|rest| rest.strip_suffix(".sealed"))
        .and_then(|number| number.parse::<u32>().ok());
    let (true, Some(version)) = (valid_id, version) else {
        return refuse(StatusCode::NOT_FOUND, "not a content path");
    };
    let content_version = format!("{content_id}@{version}");
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "an access token is required (Authorization: Bearer …)",
        );
    };
    let certificate = request
        .extensions()
        .get::<ClientCertificate>()
        .and_then(|certificate| certificate.0.as_deref());
    // Only a site without authentication issues tokens bound to a named client rather than a certificate.
    let named_client = endpoint.trust.site_ca.is_none().then(|| {
        headers
            .get(CLIENT_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    });
    let scope = Scope {
        dp: &served.dp.id,
        cv: &content_version,
        certificate,
        named_client,
    };
    let client = match endpoint.keys.verify(token.trim(), now_ms(), scope) {
        Ok(claims) => claims.sub,
        Err(error) => {
            let status = match error {
                TokenError::WrongScope(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            let hint = if error == TokenError::Unbound && certificate.is_none() {
                " (connect with the device certificate the token was issued for)"
            } else {
                ""
            };
            return refuse(status, &format!("access token refused: {error}{hint}"));
        }
    };
    let path = format!("content/{content_id}/v{version}.sealed");
    let length = match served.store.head(&path).await {
        Ok(Some(length)) => length,
        Ok(None) => {
            return refuse(
                StatusCode::NOT_FOUND,
                "this distribution point does not hold that content",
            );
        }
        Err(error) => {
            tracing::warn!(dp.name = %served.dp.name, %error, "store unavailable");
            return refuse(
                StatusCode::BAD_GATEWAY,
                "the distribution point's store is unavailable; try the next location",
            );
        }
    };
    let (status, range) = match parse_range(headers.get(header::RANGE), length) {
        Ok(Some(range)) => (StatusCode::PARTIAL_CONTENT, range),
        Ok(None) => (StatusCode::OK, 0..length),
        Err(()) => {
            let mut response = refuse(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let key: UsageKey = (served.dp.id.clone(), content_version, client);
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        endpoint.count(&key, 0, 1);
        let slices: Vec<Range<u64>> = (range.start..range.end)
            .step_by(usize::try_from(SLICE).unwrap_or(usize::MAX))
            .map(|start| start..(start + SLICE).min(range.end))
            .collect();
        let store = served.store.clone();
        let counter = endpoint.clone();
        let stream = futures::stream::iter(slices)
            .map(move |slice| {
                let store = store.clone();
                let path = path.clone();
                async move { store.get_range(&path, slice).await }
            })
            .buffered(2)
            .map(move |piece| match piece {
                Ok(bytes) => {
                    counter.count(&key, bytes.len() as u64, 0);
                    Ok(bytes)
                }
                Err(error) => Err(std::io::Error::other(error.to_string())),
            });
        Response::new(Body::from_stream(stream))
    };
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&(range.end - range.start).to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) =
            HeaderValue::from_str(&format!("bytes {}-{}/{length}", range.start, range.end - 1))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::parse_range;
    use axum::http::HeaderValue;

    fn range(text: &str, length: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
        parse_range(Some(&HeaderValue::from_str(text).unwrap()), length)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(range("bytes=0-4", 10), Ok(Some(0..5)));
        assert_eq!(range("bytes=5-", 10), Ok(Some(5..10)));
        assert_eq!(range("bytes=-3", 10), Ok(Some(7..10)));
        assert_eq!(range("bytes=8-100", 10), Ok(Some(8..10)));
        assert_eq!(range("bytes=10-12", 10), Err(()));
        assert_eq!(range("bytes=4-2", 10), Ok(None));
        assert_eq!(range("bytes=-99999999999999999999", 10), Ok(Some(0..10)));
        assert_eq!(range("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(range("items=0-1", 10), Ok(None));
        // The largest numbers the header can carry neither overflow nor panic.
        assert_eq!(range("bytes=0-18446744073709551615", 10), Ok(Some(0..10)));
        assert_eq!(
            range("bytes=18446744073709551615-18446744073709551615", 10),
            Err(())
        );
        assert_eq!(range("bytes=-18446744073709551615", 10), Ok(Some(0..10)));
        assert_eq!(range("bytes=0-18446744073709551616", 10), Err(()));
    }
}
