//! TLS and mutual TLS: trusted clients are accepted, untrusted ones refused; plaintext off loopback is refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clouddp_e2e::pki::{PemFiles, TestCa};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec, console};
use clouddp_proto::v1::ListFollowedDistributionPointsRequest;
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

async fn health_over_tls(url: &str, ca: &Path, identity: Option<&PemFiles>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some(files) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&files.certificate).unwrap(),
            std::fs::read(&files.private_key).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("connect: {error:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|status| format!("check: {status:?}"))
}

fn server_flags(files: &PemFiles) -> Vec<String> {
    vec![
        "--tls-cert".to_owned(),
        files.certificate.display().to_string(),
        "--tls-key".to_owned(),
        files.private_key.display().to_string(),
    ]
}

#[tokio::test]
async fn tls_accepts_clients_that_trust_the_ca_and_fails_others() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("clouddp-test-ca", dir.path()).unwrap();
    let rogue = TestCa::new("rogue-ca", &dir.path().join("rogue")).unwrap();
    let server = ca.server("dm", &["localhost", "127.0.0.1"]).unwrap();
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .args(server_flags(&server))
            .tls(),
    )
    .await
    .unwrap();

    health_over_tls(&manager.url(), &ca.certificate(), None)
        .await
        .unwrap();
    let refused = health_over_tls(&manager.url(), &rogue.certificate(), None).await;
    assert!(
        refused.is_err(),
        "a client trusting another CA must not connect"
    );

    let plaintext = Endpoint::from_shared(format!("http://{}", manager.addr()))
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect_lazy();
    let plaintext = HealthClient::new(plaintext)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(
        plaintext.is_err(),
        "plaintext must not be served on a TLS listener"
    );

    let ca_flag = ca.certificate().display().to_string();
    let listed = console::run(
        &manager.url(),
        "http://127.0.0.1:9",
        &["--ca-cert", &ca_flag, "dp", "list"],
    )
    .unwrap();
    assert_eq!(listed.code, 0, "{listed:?}");
    let untrusted = console::run(&manager.url(), "http://127.0.0.1:9", &["dp", "list"]).unwrap();
    assert_eq!(untrusted.code, 3, "{untrusted:?}");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("clouddp-test-ca", dir.path()).unwrap();
    let rogue = TestCa::new("rogue-ca", &dir.path().join("rogue")).unwrap();
    let server = ca.server("dm", &["localhost", "127.0.0.1"]).unwrap();
    let good_client = ca
        .client("monitoring-client", "clouddp-monitoring")
        .unwrap();
    let rogue_client = rogue.client("rogue-client", "clouddp-monitoring").unwrap();
    let mut flags = server_flags(&server);
    flags.extend([
        "--tls-client-ca".to_owned(),
        ca.certificate().display().to_string(),
    ]);
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .args(flags)
            .tls(),
    )
    .await
    .unwrap();

    health_over_tls(&manager.url(), &ca.certificate(), Some(&good_client))
        .await
        .unwrap();
    assert!(
        health_over_tls(&manager.url(), &ca.certificate(), None)
            .await
            .is_err(),
        "a client without a certificate must be refused"
    );
    assert!(
        health_over_tls(&manager.url(), &ca.certificate(), Some(&rogue_client))
            .await
            .is_err(),
        "a client certificate from another CA must be refused"
    );

    // Service to service: the monitoring service follows the manager over mutual TLS.
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env(
                "CLOUDDP_MON__DISTRIBUTION_MANAGER__TLS__CA_CERTIFICATE",
                &ca.certificate().display().to_string(),
            )
            .env(
                "CLOUDDP_MON__DISTRIBUTION_MANAGER__TLS__CLIENT_CERTIFICATE",
                &good_client.certificate.display().to_string(),
            )
            .env(
                "CLOUDDP_MON__DISTRIBUTION_MANAGER__TLS__CLIENT_KEY",
                &good_client.private_key.display().to_string(),
            ),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = MonitoringServiceClient::new(monitoring.channel())
            .list_followed_distribution_points(ListFollowedDistributionPointsRequest {})
            .await
            .unwrap()
            .into_inner();
        if answer.connected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "monitoring never connected over mTLS: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_manager(args: &[&str]) -> std::process::Output {
    Command::new(clouddp_e2e::bin("clouddp-distribution-manager"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn plaintext_off_loopback_and_readable_keys_are_refused_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let refused = run_manager(&[
        "--listen",
        "0.0.0.0:7400",
        "--data-dir",
        &data,
        "--check-config",
    ]);
    assert_eq!(refused.status.code(), Some(64));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("without TLS") && message.contains("--insecure"),
        "{message}"
    );
    assert_eq!(
        message.trim().lines().count(),
        1,
        "one clear line: {message}"
    );

    let allowed = run_manager(&[
        "--listen",
        "0.0.0.0:7400",
        "--insecure",
        "--data-dir",
        &data,
        "--check-config",
    ]);
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("listen = \"0.0.0.0:7400\""));

    let ca = TestCa::new("clouddp-test-ca", dir.path()).unwrap();
    let server = ca.server("dm", &["localhost"]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&server.private_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let readable = run_manager(&[
        "--tls-cert",
        &server.certificate.display().to_string(),
        "--tls-key",
        &server.private_key.display().to_string(),
        "--data-dir",
        &data,
        "--check-config",
    ]);
    assert_eq!(readable.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&readable.stderr).contains("chmod 600"),
        "{readable:?}"
    );

    let unknown = Command::new(clouddp_e2e::bin("clouddp-monitoring"))
        .args(["--data-dir", &data, "--check-config"])
        .env("CLOUDDP_MON__PULL__INTERVAL", "soon")
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("soon"),
        "{unknown:?}"
    );
}
