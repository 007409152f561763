//! TLS and mutual TLS: trusted clients are accepted, untrusted ones refused; plaintext off loopback is refused.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clouddp_e2e::pki::{PemFiles, TestCa};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec, console};
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

    // The operator's server certificate serves; callers authenticate with the site's credentials.
    let ca_flag = ca.certificate().display().to_string();
    let admin = manager.data_dir().join("admin");
    let (cert, key) = (
        admin.join("cert.pem").display().to_string(),
        admin.join("key.pem").display().to_string(),
    );
    let listed = console::run(
        &manager.url(),
        "http://127.0.0.1:9",
        &[
            "--ca-cert",
            &ca_flag,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
            "dp",
            "list",
        ],
    )
    .unwrap();
    assert_eq!(listed.code, 0, "{listed:?}");
    let anonymous = console::run(
        &manager.url(),
        "http://127.0.0.1:9",
        &["--ca-cert", &ca_flag, "dp", "list"],
    )
    .unwrap();
    assert_eq!(anonymous.code, 1, "{anonymous:?}");
    assert!(
        anonymous.stderr.contains("Unauthenticated")
            && anonymous.stderr.contains("client certificate"),
        "{anonymous:?}"
    );
    let untrusted = console::run(&manager.url(), "http://127.0.0.1:9", &["dp", "list"]).unwrap();
    assert_eq!(untrusted.code, 3, "{untrusted:?}");
}

#[tokio::test]
async fn an_operator_client_ca_admits_only_certificates_that_name_a_principal_of_the_site() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("clouddp-test-ca", dir.path()).unwrap();
    let rogue = TestCa::new("rogue-ca", &dir.path().join("rogue")).unwrap();
    let server = ca.server("dm", &["localhost", "127.0.0.1"]).unwrap();
    let unnamed_client = ca.client("unnamed-client", "clouddp-monitoring").unwrap();
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

    // Health stays open for load balancers and probes, with or without a certificate.
    health_over_tls(&manager.url(), &ca.certificate(), Some(&unnamed_client))
        .await
        .unwrap();
    health_over_tls(&manager.url(), &ca.certificate(), None)
        .await
        .unwrap();
    assert!(
        health_over_tls(&manager.url(), &ca.certificate(), Some(&rogue_client))
            .await
            .is_err(),
        "a client certificate from another CA must be refused"
    );
    // A certificate of the client CA that names no spiffe:// principal of the site is nobody.
    let ca_flag = ca.certificate().display().to_string();
    let unnamed = console::run(
        &manager.url(),
        "http://127.0.0.1:9",
        &[
            "--ca-cert",
            &ca_flag,
            "--client-cert",
            &unnamed_client.certificate.display().to_string(),
            "--client-key",
            &unnamed_client.private_key.display().to_string(),
            "dp",
            "list",
        ],
    )
    .unwrap();
    assert_eq!(unnamed.code, 1, "{unnamed:?}");
    assert!(unnamed.stderr.contains("names no principal"), "{unnamed:?}");
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
        "--plaintext",
        "--data-dir",
        &data,
        "--check-config",
    ]);
    assert_eq!(refused.status.code(), Some(64));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("in plaintext") && message.contains("--insecure"),
        "{message}"
    );
    assert_eq!(
        message.trim().lines().count(),
        1,
        "one clear line: {message}"
    );

    let secure = run_manager(&[
        "--listen",
        "0.0.0.0:7400",
        "--data-dir",
        &data,
        "--check-config",
    ]);
    assert_eq!(
        secure.status.code(),
        Some(0),
        "mutual TLS is the default: {secure:?}"
    );
    let allowed = run_manager(&[
        "--listen",
        "0.0.0.0:7400",
        "--plaintext",
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
