//! Certificates of cloud DPs through the console: every invalid input (expired, not yet valid, no key, a key of
//! another certificate, wrong .pfx password, duplicate CN, CN of a registered device, replacement with another CN)
//! is refused with a clear message and changes nothing; good ones install, replace keeping the CN, show without
//! keys, export the public .cer, and the keys are stored only sealed.

use std::path::Path;

use base64::Engine as _;

use clouddp_e2e::ServiceProcess;
use clouddp_e2e::azurite::{ACCOUNT, Azurite};
use clouddp_e2e::certs::{Validity, self_signed};
use clouddp_e2e::console::{self, ConsoleOutput, TEST_SUBSCRIPTION};
use clouddp_e2e::content::contains;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::client_policy_service_client::ClientPolicyServiceClient;

const PASSWORD: &str = "Pa55-word!";

fn run(manager: &ServiceProcess, args: &[&str]) -> ConsoleOutput {
    console::run(&manager.url(), console::NO_MONITORING, args).unwrap()
}

fn ok(manager: &ServiceProcess, args: &[&str]) -> serde_json::Value {
    console::json(&manager.url(), console::NO_MONITORING, args).unwrap()
}

/// Installs `service_name` with the management and service certificate arguments given.
fn install(
    manager: &ServiceProcess,
    azurite: &Azurite,
    service_name: &str,
    certificates: &[&str],
) -> ConsoleOutput {
    let endpoint = azurite.blob_endpoint();
    let mut args = vec![
        "dp",
        "install",
        "--service-name",
        service_name,
        "--subscription",
        TEST_SUBSCRIPTION,
        "--region",
        "westeurope",
        "--account",
        ACCOUNT,
        "--blob-endpoint",
        &endpoint,
        "--emulator",
        "-o",
        "json",
    ];
    args.extend_from_slice(certificates);
    run(manager, &args)
}

fn counts(manager: &ServiceProcess) -> (usize, usize) {
    let dps = ok(manager, &["dp", "list"]);
    let certificates = ok(manager, &["cert", "show"]);
    (
        dps.as_array().unwrap().len(),
        certificates.as_array().unwrap().len(),
    )
}

/// Under `-o json` the console reports a refusal as JSON on standard error: its code and message are checked.
fn refused(output: &ConsoleOutput, code: &str, text: &str) {
    assert_eq!(output.code, 1, "{output:?}");
    let stderr = match serde_json::from_str::<serde_json::Value>(&output.stderr) {
        Ok(error) => {
            assert_eq!(error["error"]["kind"], "refused", "{output:?}");
            format!(
                "{} {}",
                error["error"]["code"],
                error["error"]["message"].as_str().unwrap_or_default()
            )
        }
        Err(_) => output.stderr.clone(),
    };
    assert!(stderr.contains(code), "expected {code}: {output:?}");
    assert!(stderr.contains(text), "expected {text:?}: {output:?}");
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_inputs_are_checked_and_nothing_changes_on_refusal() {
    let azurite = Azurite::start().await.unwrap();
    let manager = ServiceProcess::start(clouddp_e2e::ServiceSpec::new(
        clouddp_e2e::ServiceKind::DistributionManager,
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path();

    let management = self_signed("clouddp management", Validity::Current).unwrap();
    let management_pfx = path(
        &management
            .write_pfx(files, "management", PASSWORD, true)
            .unwrap(),
    );
    let service_a = self_signed("cdp-a.contoso.test", Validity::Current).unwrap();
    let (service_a_crt, service_a_key) = service_a.write_pem(files, "service-a").unwrap();
    let (service_a_crt, service_a_key) = (path(&service_a_crt), path(&service_a_key));
    let good_management = [
        "--management-cert",
        &management_pfx,
        "--management-password",
        PASSWORD,
    ];

    // Each bad input: a clear error, and no DP and no certificate stored.
    let expired = self_signed("cdp-x.contoso.test", Validity::Expired).unwrap();
    let (expired_crt, expired_key) = expired.write_pem(files, "expired").unwrap();
    let not_yet = self_signed("cdp-y.contoso.test", Validity::NotYet).unwrap();
    let (not_yet_crt, not_yet_key) = not_yet.write_pem(files, "not-yet").unwrap();
    let no_key_pfx = path(
        &service_a
            .write_pfx(files, "no-key", PASSWORD, false)
            .unwrap(),
    );
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![
                "--service-cert".into(),
                path(&expired_crt),
                "--service-key".into(),
                path(&expired_key),
            ],
            "InvalidArgument",
            "expired on",
        ),
        (
            vec![
                "--service-cert".into(),
                path(&not_yet_crt),
                "--service-key".into(),
                path(&not_yet_key),
            ],
            "InvalidArgument",
            "not valid yet",
        ),
        (
            vec![
                "--service-cert".into(),
                service_a_crt.clone(),
                "--service-key".into(),
                path(&expired_key),
            ],
            "InvalidArgument",
            "does not belong to the certificate",
        ),
        (
            vec![
                "--service-cert".into(),
                no_key_pfx.clone(),
                "--service-password".into(),
                PASSWORD.into(),
            ],
            "InvalidArgument",
            "without its private key",
        ),
    ];
    for (service_args, code, text) in &cases {
        let mut args: Vec<&str> = good_management.to_vec();
        args.extend(service_args.iter().map(String::as_str));
        refused(&install(&manager, &azurite, "cdp-a", &args), code, text);
        assert_eq!(counts(&manager), (0, 0), "nothing stored after {text:?}");
    }
    let wrong_password = install(
        &manager,
        &azurite,
        "cdp-a",
        &[
            "--management-cert",
            &management_pfx,
            "--management-password",
            "not-it",
            "--service-cert",
            &service_a_crt,
            "--service-key",
            &service_a_key,
        ],
    );
    refused(&wrong_password, "InvalidArgument", "password is wrong");
    assert!(
        !wrong_password.stderr.contains("not-it"),
        "the password is never echoed: {wrong_password:?}"
    );
    assert_eq!(counts(&manager), (0, 0));

    // A good install: the service certificate's CN is the service FQDN.
    let mut args: Vec<&str> = good_management.to_vec();
    args.extend([
        "--service-cert",
        &service_a_crt,
        "--service-key",
        &service_a_key,
    ]);
    let installed = install(&manager, &azurite, "cdp-a", &args);
    assert_eq!(installed.code, 0, "{installed:?}");
    let dp_a = installed.json().unwrap();
    assert_eq!(dp_a["state"], "ready");
    assert_eq!(dp_a["cloud"]["service_fqdn"], "cdp-a.contoso.test");
    assert_eq!(dp_a["address"], "https://cdp-a.contoso.test");
    let shown = ok(&manager, &["dp", "show", "cdp-a"]);
    let thumbprints: Vec<&str> = shown["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cert| cert["thumbprint"].as_str().unwrap())
        .collect();
    assert!(
        thumbprints.contains(&service_a.thumbprint().as_str()),
        "{shown}"
    );
    assert!(
        thumbprints.contains(&management.thumbprint().as_str()),
        "{shown}"
    );
    assert_eq!(counts(&manager), (1, 2));

    // Another DP may not reuse the CN, nor take a registered device's name.
    let duplicate = self_signed("CDP-A.contoso.test", Validity::Current).unwrap();
    let (duplicate_crt, duplicate_key) = duplicate.write_pem(files, "duplicate").unwrap();
    let mut args: Vec<&str> = good_management.to_vec();
    let (duplicate_crt, duplicate_key) = (path(&duplicate_crt), path(&duplicate_key));
    args.extend([
        "--service-cert",
        &duplicate_crt,
        "--service-key",
        &duplicate_key,
    ]);
    refused(
        &install(&manager, &azurite, "cdp-b", &args),
        "AlreadyExists",
        "already the service FQDN of distribution point cdp-a",
    );
    assert_eq!(counts(&manager), (1, 2));

    ClientPolicyServiceClient::new(manager.channel())
        .create_client_settings(pb::CreateClientSettingsRequest {
            settings: Some(pb::ClientSettings {
                name: "Lab devices".to_owned(),
                priority: 1,
                device_ids: vec!["DEVBOX".to_owned()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let device = self_signed("devbox.contoso.test", Validity::Current).unwrap();
    let (device_crt, device_key) = device.write_pem(files, "device").unwrap();
    let (device_crt, device_key) = (path(&device_crt), path(&device_key));
    let mut args: Vec<&str> = good_management.to_vec();
    args.extend(["--service-cert", &device_crt, "--service-key", &device_key]);
    refused(
        &install(&manager, &azurite, "cdp-b", &args),
        "AlreadyExists",
        "matches the registered device \"DEVBOX\"",
    );
    assert_eq!(counts(&manager), (1, 2));

    // A replacement must keep the CN; one that does replaces the certificate.
    let other = self_signed("cdp-other.contoso.test", Validity::Current).unwrap();
    let other_pfx = path(&other.write_pfx(files, "other", PASSWORD, true).unwrap());
    let changed_cn = run(
        &manager,
        &[
            "cert",
            "import-service",
            &other_pfx,
            "--dp",
            "cdp-a",
            "--password",
            PASSWORD,
        ],
    );
    refused(&changed_cn, "FailedPrecondition", "must keep the same CN");
    assert_eq!(counts(&manager), (1, 2));
    let renewed = self_signed("cdp-a.contoso.test", Validity::Current).unwrap();
    let renewed_pfx = path(&renewed.write_pfx(files, "renewed", PASSWORD, true).unwrap());
    let replaced = ok(
        &manager,
        &[
            "cert",
            "import-service",
            &renewed_pfx,
            "--dp",
            "cdp-a",
            "--password",
            PASSWORD,
        ],
    );
    assert_eq!(replaced["thumbprint"], renewed.thumbprint());
    assert_eq!(replaced["distribution_point_ids"][0], dp_a["id"]);
    let shown = ok(&manager, &["dp", "show", "cdp-a"]);
    assert_eq!(shown["cloud"]["service_fqdn"], "cdp-a.contoso.test");
    let service_now: Vec<&serde_json::Value> = shown["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cert| cert["kind"] == "service")
        .collect();
    assert_eq!(service_now.len(), 1, "{shown}");
    assert_eq!(service_now[0]["thumbprint"], renewed.thumbprint());

    // Show: subject, thumbprint, validity; never a key. Export: the DER .cer.
    let table = run(&manager, &["cert", "show"]);
    assert_eq!(table.code, 0);
    assert!(table.stdout.contains(&renewed.thumbprint()), "{table:?}");
    assert!(!table.stdout.contains("PRIVATE KEY"));
    let one = ok(&manager, &["cert", "show", &renewed.thumbprint()]);
    assert_eq!(one[0]["subject"], "CN=cdp-a.contoso.test, O=clouddp tests");
    assert_eq!(one[0]["has_private_key"], true);
    assert!(one[0]["not_after"].as_str().unwrap().starts_with('2'));
    let cer = files.join("exported.cer");
    ok(
        &manager,
        &[
            "cert",
            "export",
            one[0]["id"].as_str().unwrap(),
            "--out",
            &path(&cer),
        ],
    );
    assert_eq!(std::fs::read(&cer).unwrap(), renewed.der);
    let missing = run(
        &manager,
        &[
            "cert",
            "export",
            "cert-00000000-0000-0000-0000-000000000000",
        ],
    );
    refused(&missing, "NotFound", "no certificate has the id");

    // A .publishsettings v1 file gives a management certificate and its subscription.
    let publish = self_signed("Windows Azure Tools", Validity::Current).unwrap();
    let settings = path(
        &publish
            .write_publish_settings(files, "subscription", TEST_SUBSCRIPTION)
            .unwrap(),
    );
    let imported = ok(&manager, &["cert", "import-management", &settings]);
    assert_eq!(imported["subscription_id"], TEST_SUBSCRIPTION);
    assert_eq!(imported["kind"], "management");

    // Private keys are in the database only sealed.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(manager.data_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            stored.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    assert!(
        contains(&stored, base64(&renewed.der).as_bytes()),
        "the public certificate is stored (base64 DER)"
    );
    for cert in [&management, &service_a, &renewed, &publish] {
        assert!(
            !contains(&stored, &cert.key_der),
            "a private key is stored in the clear"
        );
        assert!(
            !contains(&stored, base64(&cert.key_der).as_bytes()),
            "a private key is stored in base64"
        );
        assert!(
            !contains(&stored, cert.key_pem.as_bytes()),
            "a private key is stored as PEM"
        );
    }
    assert!(
        !contains(&stored, PASSWORD.as_bytes()),
        "a password is stored"
    );
    assert!(
        manager.unexpected_errors().is_empty(),
        "{:?}",
        manager.unexpected_errors()
    );
}
