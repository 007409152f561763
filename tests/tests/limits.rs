//! Limits that keep one caller from hurting the rest, at the content endpoint: a process started with the usual
//! soft limit of 1,024 open files raises it, a connection cap keeps room for gRPC, and connections that never
//! finish their handshake or their request headers are closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clouddp_e2e::pki::TestCa;
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The soft and hard open-file limits of process `pid`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// A TLS connection to the endpoint at `addr`, trusting `ca`, for `localhost`.
async fn tls(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut std::fs::read(ca)?.as_slice()) {
        roots.add(certificate?).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    connector.connect(name, tcp).await
}

/// `GET /healthz` over a new connection; the status line.
async fn healthz(addr: std::net::SocketAddr, ca: &std::path::Path) -> std::io::Result<String> {
    let mut stream = tls(addr, ca).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// A manager started from `spec` whose content endpoint serves a certificate for `localhost` of a test CA
/// made in `work`; the manager and that CA's certificate.
async fn endpoint_manager(
    work: &std::path::Path,
    spec: ServiceSpec,
) -> (ServiceProcess, std::path::PathBuf) {
    let pki = TestCa::new("limits-ca", work).unwrap();
    let certificate = pki.server("endpoint", &["localhost"]).unwrap();
    let manager = ServiceProcess::start(
        spec.env(
            "CLOUDDP_DM__CONTENT_ENDPOINT__CERTIFICATE",
            certificate.certificate.to_str().unwrap(),
        )
        .env(
            "CLOUDDP_DM__CONTENT_ENDPOINT__PRIVATE_KEY",
            certificate.private_key.to_str().unwrap(),
        ),
    )
    .await
    .unwrap();
    (manager, pki.certificate())
}

#[tokio::test]
async fn half_open_and_slow_connections_starve_neither_the_endpoint_nor_grpc() {
    // The test opens more connections than a default limit allows.
    let own_limit = clouddp_platform::cli::raise_file_limit();
    let work = tempfile::tempdir().unwrap();
    let (manager, ca) = endpoint_manager(
        work.path(),
        ServiceSpec::new(ServiceKind::DistributionManager)
            .file_limit(1024)
            .env("CLOUDDP_DM__CONTENT_ENDPOINT__HANDSHAKE_TIMEOUT", "1s")
            .env("CLOUDDP_DM__CONTENT_ENDPOINT__HEADER_READ_TIMEOUT", "1s"),
    )
    .await;
    let addr = manager.content_addr();

    // Started with a soft limit of 1,024, the process raised it to its hard limit.
    let (soft, hard) = open_file_limits(manager.pid().unwrap());
    assert_eq!(soft, hard.min(1 << 20), "the soft limit was not raised");
    // The documented default cap, 16,384, fits under that limit (less 1,024 kept for the rest).
    let cap = 16_384.min(usize::try_from(soft).unwrap() - 1024);
    assert!(
        manager.log().contains(&format!(
            "content endpoint connection cap max_connections={cap}"
        )),
        "{}",
        manager.log()
    );

    // 1,100 connections that never start TLS: with a soft limit of 1,024 they took the whole process down.
    let wanted = 1_100.min(
        usize::try_from(own_limit)
            .unwrap_or(1_100)
            .saturating_sub(200),
    );
    let mut half_open = Vec::with_capacity(wanted);
    let mut slowest = Duration::ZERO;
    for _ in 0..wanted {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                slowest = slowest.max(started.elapsed());
                half_open.push(stream)
            }
            outcome => {
                println!("connection {} not made: {outcome:?}", half_open.len());
                break;
            }
        }
    }
    assert_eq!(half_open.len(), wanted, "{}", manager.log());
    println!("{wanted} half-open connections made; the slowest connect took {slowest:?}");
    let held = Instant::now();

    // gRPC answers at once.
    let grpc = Instant::now();
    assert!(manager.health().await.unwrap(), "health is not SERVING");
    assert!(
        grpc.elapsed() < Duration::from_secs(1),
        "{:?}",
        grpc.elapsed()
    );

    // A real client is served while they are held (and each is closed after the handshake timeout).
    let served = loop {
        match tokio::time::timeout(Duration::from_secs(3), healthz(addr, &ca)).await {
            Ok(Ok(status)) => break status,
            outcome => assert!(
                held.elapsed() < Duration::from_secs(20),
                "the endpoint serves nobody {:?} after {} half-open connections: {outcome:?}",
                held.elapsed(),
                half_open.len()
            ),
        }
    };
    assert!(served.contains("200"), "{served}");
    println!(
        "a new client was served {:?} after {} half-open connections (cap {cap})",
        held.elapsed(),
        half_open.len()
    );
    drop(half_open);

    // A client that finishes the handshake but never finishes its headers is closed after the header timeout.
    let mut slow = tls(addr, &ca).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let waited = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "an unfinished request was held past 5 s");
    assert!(
        waited.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        waited.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{answer:?}"
    );
    assert!(healthz(addr, &ca).await.unwrap().contains("200"));

    // A client that finishes the handshake and then sends nothing is closed after the header timeout too.
    let mut silent = tls(addr, &ca).await.unwrap();
    let waited = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a silent connection was held past 5 s");
    assert!(
        waited.elapsed() >= Duration::from_millis(900),
        "{:?}",
        waited.elapsed()
    );
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_ends() {
    let work = tempfile::tempdir().unwrap();
    let (manager, ca) = endpoint_manager(
        work.path(),
        ServiceSpec::new(ServiceKind::DistributionManager)
            .env("CLOUDDP_DM__CONTENT_ENDPOINT__MAX_CONNECTIONS", "20")
            .env("CLOUDDP_DM__CONTENT_ENDPOINT__HANDSHAKE_TIMEOUT", "2s"),
    )
    .await;
    let addr = manager.content_addr();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let since = Instant::now();
    // The 21st waits for a slot: its handshake cannot finish while the 20 are open.
    let waiting = tokio::spawn(async move { healthz(addr, &ca).await });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!waiting.is_finished(), "served past the cap of 20");
    // The held ones reach their handshake timeout; the waiting client is served then.
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(
        since.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        since.elapsed()
    );
    drop(held);
}

#[tokio::test]
async fn oversized_fields_are_refused_before_any_work_on_both_services() {
    use clouddp_proto::v1 as pb;
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring).args(["--distribution-manager", &manager.url()]),
    )
    .await
    .unwrap();
    let megabyte = "a".repeat(1 << 20);
    let mut dps = pb::distribution_point_service_client::DistributionPointServiceClient::new(
        manager.channel(),
    );
    let refused = dps
        .register_distribution_point(pb::RegisterDistributionPointRequest {
            name: "big".to_owned(),
            address: format!("https://{megabyte}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.message(),
        "address: 1,048,584 bytes, more than the 4,096 allowed"
    );
    let listed = dps
        .list_distribution_points(pb::ListDistributionPointsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.distribution_points.is_empty(), "{listed:?}");

    let refused = pb::monitoring_service_client::MonitoringServiceClient::new(monitoring.channel())
        .acknowledge_alert(pb::AcknowledgeAlertRequest {
            id: "any".to_owned(),
            comment: megabyte.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("comment: "), "{refused:?}");
    assert!(refused.message().len() < 80, "{refused:?}");

    let refused =
        pb::distribution_point_group_service_client::DistributionPointGroupServiceClient::new(
            manager.channel(),
        )
        .create_group(pb::CreateGroupRequest {
            name: "g".to_owned(),
            member_ids: vec!["dp".to_owned(); 1_001],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(refused.message(), "member_ids: more than 1,000 entries");
}
