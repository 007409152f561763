//! The clouddp distribution manager: the control plane for distribution points, DP groups, content, client
//! policy and certificates. [`run`] serves it on a bound listener until a shutdown token is cancelled, so the
//! binary and the tests start it the same way.
#![forbid(unsafe_code)]

pub mod access;
pub mod certs;
pub mod config;
pub mod content;
pub mod credentials;
pub mod devices;
pub mod distribution;
pub mod dp;
pub mod endpoint;
pub mod error;
pub mod groups;
pub mod grpc;
pub mod keys;
pub mod locate;
pub mod policy;
pub mod site;
pub mod tokens;

use std::sync::Arc;

use clouddp_platform::grpc::GrpcServer;
use clouddp_platform::supervise::Supervisor;
use clouddp_proto::v1::access_service_server::AccessServiceServer;
use clouddp_proto::v1::audit_service_server::AuditServiceServer;
use clouddp_proto::v1::certificate_service_server::CertificateServiceServer;
use clouddp_proto::v1::client_policy_service_server::ClientPolicyServiceServer;
use clouddp_proto::v1::content_location_service_server::ContentLocationServiceServer;
use clouddp_proto::v1::content_service_server::ContentServiceServer;
use clouddp_proto::v1::device_service_server::DeviceServiceServer;
use clouddp_proto::v1::distribution_point_group_service_server::DistributionPointGroupServiceServer;
use clouddp_proto::v1::distribution_point_service_server::DistributionPointServiceServer;
use clouddp_proto::v1::site_service_server::SiteServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

pub use config::DmConfig;
pub use dp::DistributionManager;

/// The database migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The largest request the client policy service takes: client settings with 100,000 device ids of 255
/// characters.
pub const CLIENT_POLICY_MAX_REQUEST: usize = 32 << 20;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "distribution-manager.db";

/// The gRPC services this process serves, as health reports them.
pub const SERVICES: &[&str] = clouddp_proto::DISTRIBUTION_MANAGER_SERVICES;

/// Unless a test asked for plaintext: the site's certificates (created on the first start, with the first
/// administrator's credential), mutual TLS, and every call authorized.
async fn secure(
    server: GrpcServer,
    config: &DmConfig,
    access_store: &access::AccessStore,
    bindings: Arc<clouddp_platform::authorize::RoleBindings>,
) -> anyhow::Result<(GrpcServer, Option<Arc<clouddp_platform::pki::SiteCa>>)> {
    if config.server.plaintext {
        return Ok((server, None));
    }
    let trust_domain = clouddp_platform::access::trust_domain(&config.site.code);
    let credentials = access::SiteCredentials::in_data_dir(&config.storage.data_dir);
    let site_ca = Arc::new(credentials.ensure(&trust_domain, config.server.listen)?);
    access_store.bootstrap().await?;
    // The operator's own server certificate when given; callers still authenticate with certificates of the site
    // CA (or of the files' client CA).
    let server = server.with_tls(clouddp_platform::pki::server_tls(
        config.server.tls.as_ref(),
        &credentials.server_dir,
    )?);
    let authorizer = clouddp_platform::authorize::Authorizer::new(trust_domain, bindings);
    Ok((server.authorized(Arc::new(authorizer)), Some(site_ca)))
}

/// What the content endpoint trusts and serves: the site CA and server credential the first start made (none on
/// a site a test runs without authentication).
fn endpoint_trust(config: &DmConfig) -> anyhow::Result<endpoint::EndpointTrust> {
    if config.server.plaintext {
        return Ok(endpoint::EndpointTrust::default());
    }
    let credentials = access::SiteCredentials::in_data_dir(&config.storage.data_dir);
    let site_ca = credentials.ca_dir.join(clouddp_platform::pki::CA_FILE);
    anyhow::ensure!(
        site_ca.is_file(),
        "the site CA {} is missing: start the distribution manager on this data dir once before a content endpoint",
        site_ca.display()
    );
    Ok(endpoint::EndpointTrust {
        site_ca: Some(site_ca),
        server_credential: Some(credentials.server_dir),
    })
}

/// The roots content sources and folder stores are confined to; `stores/` in the data dir is created and always
/// a store root.
fn confinement(config: &DmConfig) -> anyhow::Result<dp::Confinement> {
    use clouddp_platform::confine::Roots;
    let data_stores = config.storage.data_dir.join(config::DATA_DIR_STORES);
    std::fs::create_dir_all(&data_stores)
        .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", data_stores.display()))?;
    let mut store_roots = vec![std::fs::canonicalize(&data_stores)?];
    store_roots.extend(config.storage.store_roots.iter().cloned());
    Ok(dp::Confinement {
        sources: Roots::new(
            "content source",
            "[content] source_roots (or --source-root)",
            &config.content.source_roots,
        )?,
        stores: Roots::new(
            "folder store",
            "[storage] store_roots (or --store-root)",
            &store_roots,
        )?,
        data_dir: std::fs::canonicalize(&config.storage.data_dir)?,
    })
}

/// Opens the data directory and database, then serves gRPC on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: DmConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check()?;
    let data_dir = &config.storage.data_dir;
    let pool = clouddp_platform::db::open_in_data_dir(data_dir, DATABASE_FILE, &MIGRATOR).await?;
    let site_key = match &config.site.key_file {
        Some(path) => keys::SiteKey::load_or_create(path, false)?,
        None => keys::SiteKey::load_or_create(&data_dir.join(keys::SITE_KEY_FILE), true)?,
    };
    let manager = Arc::new(
        DistributionManager::new(
            pool.clone(),
            config.site.code.to_ascii_uppercase(),
            Arc::new(site_key),
        )
        .with_roots(confinement(&config)?),
    );
    let supervisor = Supervisor::new();
    let token_keys = tokens::TokenKeys::open(
        pool.clone(),
        manager.site_key().clone(),
        config.role == config::Role::All,
    )
    .await?;
    if config.role == config::Role::ContentEndpoint {
        // Only the content endpoint: `listener` is its HTTPS listener.
        tracing::info!(data_dir = %data_dir.display(), "distribution manager starting as a content endpoint only");
        let endpoint = endpoint::ContentEndpoint::new(
            manager,
            token_keys,
            config.content_endpoint.clone(),
            endpoint_trust(&config)?,
        )
        .await?;
        let result = endpoint.serve(listener, supervisor, shutdown).await;
        pool.close().await;
        return result;
    }
    let bindings = Arc::new(clouddp_platform::authorize::RoleBindings::default());
    let access_store = access::AccessStore::open(pool.clone(), bindings.clone()).await?;
    let (audit_trail, audit_writer) =
        clouddp_platform::audit::AuditTrail::new(pool.clone(), config.audit.retention);
    let audit_task = supervisor.spawn("audit", shutdown.clone(), {
        let shutdown = shutdown.clone();
        move |heartbeat| audit_writer.clone().run(shutdown.clone(), heartbeat)
    });
    let (server, site_ca) = secure(
        GrpcServer::new(&config.server)?
            .supervised(supervisor.clone())
            .audited(audit_trail),
        &config,
        &access_store,
        bindings.clone(),
    )
    .await?;
    let devices = devices::Devices::open(pool.clone(), bindings.clone(), site_ca.clone()).await?;
    let credentials =
        credentials::Credentials::open(pool.clone(), bindings, site_ca.clone()).await?;
    if site_ca.is_some() {
        let first = access::SiteCredentials::in_data_dir(&config.storage.data_dir)
            .admin_dir
            .join(clouddp_platform::pki::CERT_FILE);
        if let Ok(certificate) = std::fs::read_to_string(&first) {
            credentials
                .record_first(&certificate, access::FIRST_ADMIN)
                .await?;
        }
    }
    let mut content_endpoint_task = None;
    let mut public_port = config.content_endpoint.public_port;
    if config.content_endpoint.enabled {
        let listen = config.content_endpoint.listen;
        let https = TcpListener::bind(listen).await.map_err(|error| {
            anyhow::anyhow!("cannot listen on {listen} (content endpoint): {error}")
        })?;
        if public_port == 0 {
            public_port = https.local_addr()?.port();
        }
        let endpoint = endpoint::ContentEndpoint::new(
            manager.clone(),
            token_keys.clone(),
            config.content_endpoint.clone(),
            endpoint_trust(&config)?,
        )
        .await?;
        content_endpoint_task = Some(tokio::spawn(endpoint.serve(
            https,
            supervisor.clone(),
            shutdown.clone(),
        )));
    }
    let locator = locate::Locator::new(
        manager.clone(),
        policy::Policy::new(pool.clone(), manager.generation().clone()),
        token_keys,
        config.tokens.lifetime,
        if public_port == 0 {
            config::DEFAULT_CONTENT_PORT
        } else {
            public_port
        },
    );
    let distributor = Arc::new(distribution::Distributor::new(
        manager.clone(),
        config.distribution.to_settings(),
    ));
    match manager.resume_deletes().await {
        Ok(0) => {}
        Ok(finished) => tracing::info!(finished, "finished interrupted distribution point deletes"),
        Err(error) => {
            tracing::warn!(%error, "cannot finish an interrupted distribution point delete yet; retry the delete")
        }
    }
    let distributor_task = supervisor.spawn("distribution", shutdown.clone(), {
        let (distributor, shutdown) = (distributor.clone(), shutdown.clone());
        move |heartbeat| distributor.clone().run(shutdown.clone(), heartbeat)
    });
    tracing::info!(data_dir = %data_dir.display(), site = %config.site.code, "distribution manager starting");

    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(
            DistributionPointServiceServer::new(grpc::DistributionPointGrpc::new(
                manager.clone(),
                shutdown.clone(),
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            DistributionPointGroupServiceServer::new(grpc::DistributionPointGroupGrpc::new(
                manager.clone(),
                distributor.clone(),
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            ContentServiceServer::new(grpc::ContentGrpc::new(
                manager.clone(),
                distributor.clone(),
                shutdown.clone(),
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            CertificateServiceServer::new(grpc::CertificateGrpc::new(manager.clone()))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            ClientPolicyServiceServer::new(grpc::ClientPolicyGrpc::new(policy::Policy::new(
                pool.clone(),
                manager.generation().clone(),
            )))
            .max_decoding_message_size(CLIENT_POLICY_MAX_REQUEST)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            ContentLocationServiceServer::new(grpc::ContentLocationGrpc::new(locator))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            SiteServiceServer::new(grpc::SiteGrpc::new(
                site::Site::new(
                    manager.clone(),
                    access::SiteCredentials::in_data_dir(&config.storage.data_dir).ca_dir,
                )
                .with_identities(
                    access_store.clone(),
                    devices.clone(),
                    credentials.clone(),
                ),
            ))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            AccessServiceServer::new(grpc::AccessGrpc::new(access_store, credentials))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            DeviceServiceServer::new(grpc::DeviceGrpc::new(devices))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
        )
        .add_service(
            AuditServiceServer::new(clouddp_platform::audit::AuditGrpc::new(pool.clone()))
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip),
        );
    let result = server
        .serve(listener, routes, SERVICES, shutdown.clone())
        .await;
    shutdown.cancel();
    // Jobs stop between parts and keep what they staged; do not wait long for a part in flight.
    if tokio::time::timeout(std::time::Duration::from_millis(300), distributor_task)
        .await
        .is_err()
    {
        tracing::info!(
            "distribution stopped with parts in flight; they are staged again at the next start"
        );
    }
    if tokio::time::timeout(std::time::Duration::from_secs(2), audit_task)
        .await
        .is_err()
    {
        tracing::warn!("the audit trail did not finish writing at exit");
    }
    if let Some(task) = content_endpoint_task {
        match tokio::time::timeout(std::time::Duration::from_secs(3), task).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "content endpoint ended with an error"),
            Err(_) => tracing::info!("content endpoint still draining at exit"),
            _ => {}
        }
    }
    pool.close().await;
    Ok(result?)
}
