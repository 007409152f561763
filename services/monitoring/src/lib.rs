//! The clouddp monitoring service: follows the distribution manager's distribution points, and (as it grows)
//! pulls their usage, writes the CloudDP logs, evaluates thresholds and streams alerts. [`run`] serves it on a
//! bound listener until a shutdown token is cancelled.
#![forbid(unsafe_code)]

pub mod access;
pub mod alerts;
pub mod config;
pub mod error;
pub mod follower;
pub mod grpc;
pub mod health;
pub mod through_manager;
pub mod usage;

use std::sync::Arc;

use clouddp_platform::grpc::GrpcServer;
use clouddp_platform::supervise::Supervisor;
use clouddp_proto::v1::monitoring_service_server::MonitoringServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

pub use config::MonConfig;
pub use follower::DpFollower;

/// The database migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "monitoring.db";

/// The gRPC services this process serves, as health reports them.
pub const SERVICES: &[&str] = clouddp_proto::MONITORING_SERVICES;

/// Opens the data directory, starts following the distribution manager, and serves gRPC on `listener` until
/// `shutdown` is cancelled.
pub async fn run(
    config: MonConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check()?;
    let supervisor = Supervisor::new();
    let data_dir = &config.storage.data_dir;
    let pool = clouddp_platform::db::open_in_data_dir(data_dir, DATABASE_FILE, &MIGRATOR).await?;
    let (audit_trail, audit_writer) =
        clouddp_platform::audit::AuditTrail::new(pool.clone(), config.audit.retention);
    let audit_task = supervisor.spawn("audit", shutdown.clone(), {
        let shutdown = shutdown.clone();
        move |heartbeat| audit_writer.clone().run(shutdown.clone(), heartbeat)
    });
    let mut server = GrpcServer::new(&config.server)?
        .supervised(supervisor.clone())
        .audited(audit_trail);
    let upstream = &config.distribution_manager;
    let credentials = &config.identity.credentials;
    let upstream_tls = if config.server.plaintext || upstream.tls != Default::default() {
        upstream.tls.clone()
    } else {
        clouddp_platform::pki::client_settings(credentials)
    };
    let channel = clouddp_platform::client::channel(&upstream.url, &upstream_tls)?;
    let mut bindings_task = None;
    if !config.server.plaintext {
        let trust_domain = clouddp_platform::pki::trust_domain_of_credential(credentials).map_err(|error| {
            anyhow::anyhow!("{error}; give --credentials (or [identity] credentials) the folder services/monitoring in the distribution manager's data dir")
        })?;
        let tls = clouddp_platform::pki::server_tls(config.server.tls.as_ref(), credentials)?;
        let bindings = Arc::new(clouddp_platform::authorize::RoleBindings::default());
        server = server.with_tls(tls).authorized(Arc::new(
            clouddp_platform::authorize::Authorizer::new(trust_domain, bindings.clone()),
        ));
        bindings_task = Some(supervisor.spawn("access", shutdown.clone(), {
            let (channel, shutdown) = (channel.clone(), shutdown.clone());
            move |heartbeat| {
                access::follow_bindings(
                    channel.clone(),
                    bindings.clone(),
                    shutdown.clone(),
                    heartbeat,
                )
            }
        }));
    }
    let follower = Arc::new(DpFollower::new(
        pool.clone(),
        channel.clone(),
        upstream.url.clone(),
    ));
    tracing::info!(data_dir = %data_dir.display(), distribution_manager = %upstream.url, "monitoring service starting");
    let follow_task = supervisor.spawn("follower", shutdown.clone(), {
        let (follower, shutdown) = (follower.clone(), shutdown.clone());
        move |heartbeat| follower.clone().run(shutdown.clone(), heartbeat)
    });
    let alerts = alerts::Alerts::new(pool.clone());
    let pull = &config.pull;
    let puller = Arc::new(usage::Puller::new(
        pool.clone(),
        follower.clone(),
        channel.clone(),
        alerts.clone(),
        pull.interval,
        pull.log_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("logs")),
        pull.log_max_bytes,
        pull.clock_offset,
        if pull.probe_content_endpoints {
            Some(usage::Probe::new(
                pull.content_endpoint_port,
                pull.content_endpoint_ca.as_deref(),
                &pull.content_endpoint_resolve,
            )?)
        } else {
            None
        },
        pull.alert_after,
    ));
    let pull_task = supervisor.spawn("pull", shutdown.clone(), {
        let (puller, shutdown) = (puller.clone(), shutdown.clone());
        move |heartbeat| puller.clone().run(shutdown.clone(), heartbeat)
    });
    let wake_task = supervisor.spawn("wake", shutdown.clone(), {
        let (puller, shutdown) = (puller.clone(), shutdown.clone());
        move |heartbeat| puller.clone().wake_postponed(shutdown.clone(), heartbeat)
    });
    let health_task = supervisor.spawn("health", shutdown.clone(), {
        let (supervisor, alerts, puller) = (supervisor.clone(), alerts.clone(), puller.clone());
        let shutdown = shutdown.clone();
        move |heartbeat| {
            health::watch(
                supervisor.clone(),
                alerts.clone(),
                puller.clone(),
                channel.clone(),
                shutdown.clone(),
                heartbeat,
            )
        }
    });

    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(
        MonitoringServiceServer::new(grpc::MonitoringGrpc::new(
            follower,
            puller,
            alerts,
            shutdown.clone(),
        ))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip),
    );
    routes.add_service(
        clouddp_proto::v1::audit_service_server::AuditServiceServer::new(
            clouddp_platform::audit::AuditGrpc::new(pool.clone()),
        )
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip),
    );
    let result = server
        .serve(listener, routes, SERVICES, shutdown.clone())
        .await;
    shutdown.cancel();
    let tasks = [pull_task, wake_task, health_task, follow_task, audit_task]
        .into_iter()
        .chain(bindings_task);
    for task in tasks {
        if let Err(error) = task.await {
            tracing::warn!(%error, "a supervisor ended abnormally");
        }
    }
    pool.close().await;
    Ok(result?)
}
