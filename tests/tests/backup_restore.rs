//! Site backup and restore: the backup holds the whole configuration but no private key and no site key; a
//! restore with another site key, into a site that is not empty, or of a damaged file is refused and changes
//! nothing; a restore on an empty data dir with the same key brings everything back, cloud DPs wait for their
//! certificates, and once they are imported again the DP is ready and its content opens and validates.

use std::path::Path;

use base64::Engine as _;
use clouddp_e2e::azurite::{ACCOUNT, Azurite};
use clouddp_e2e::certs::{Validity, self_signed};
use clouddp_e2e::console::{self, ConsoleOutput, TEST_SUBSCRIPTION};
use clouddp_e2e::content::{contains, write_random_file};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::client_policy_service_client::ClientPolicyServiceClient;
use clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient;

fn run(manager: &ServiceProcess, args: &[&str]) -> ConsoleOutput {
    console::run(&manager.url(), console::NO_MONITORING, args).unwrap()
}

fn ok(manager: &ServiceProcess, args: &[&str]) -> serde_json::Value {
    console::json(&manager.url(), console::NO_MONITORING, args).unwrap()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

fn dp_count(manager: &ServiceProcess) -> usize {
    ok(manager, &["dp", "list"]).as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_on_an_empty_site_with_the_same_key() {
    let azurite = Azurite::start().await.unwrap();
    let mut original = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let files = work.path();

    // A cloud DP with certificates the admin keeps, an on-premises DP, a group, content, a client setting.
    let management = self_signed("clouddp management", Validity::Current).unwrap();
    let management_pfx = text(
        &management
            .write_pfx(files, "management", "pw-1", true)
            .unwrap(),
    );
    let service = self_signed("bk-cdp.contoso.test", Validity::Current).unwrap();
    let service_pfx = text(&service.write_pfx(files, "service", "pw-2", true).unwrap());
    let endpoint = azurite.blob_endpoint();
    ok(
        &original,
        &[
            "dp",
            "install",
            "--service-name",
            "bk-cdp",
            "--subscription",
            TEST_SUBSCRIPTION,
            "--region",
            "westeurope",
            "--account",
            ACCOUNT,
            "--blob-endpoint",
            &endpoint,
            "--emulator",
            "--management-cert",
            &management_pfx,
            "--management-password",
            "pw-1",
            "--service-cert",
            &service_pfx,
            "--service-password",
            "pw-2",
        ],
    );
    let folder = files.join("onprem-folder");
    ok(
        &original,
        &[
            "dp",
            "register",
            "--name",
            "bk-onprem",
            "--folder",
            &text(&folder),
            "--address",
            "https://bk-onprem.contoso.test",
            "--boundary-group",
            "hq",
        ],
    );
    ok(
        &original,
        &[
            "group",
            "create",
            "bk-group",
            "--dp",
            "bk-cdp",
            "--dp",
            "bk-onprem",
        ],
    );
    let source = files.join("source/app.bin");
    write_random_file(&source, 3 << 20, 0).unwrap();
    let content = ok(
        &original,
        &[
            "content",
            "add",
            "--name",
            "bk-app",
            "--type",
            "application",
            "--source",
            &text(&source),
        ],
    );
    let content_id = content["id"].as_str().unwrap().to_owned();
    let distributed = ok(
        &original,
        &[
            "content",
            "distribute",
            "bk-app",
            "--group",
            "bk-group",
            "--wait",
        ],
    );
    assert!(
        distributed
            .as_array()
            .unwrap()
            .iter()
            .all(|job| job["state"] == "success"),
        "{distributed}"
    );
    ClientPolicyServiceClient::new(original.channel())
        .create_client_settings(pb::CreateClientSettingsRequest {
            settings: Some(pb::ClientSettings {
                name: "Cloud for laptops".to_owned(),
                priority: 5,
                allow_cloud_distribution_points_for_devices: true,
                device_ids: vec!["laptop-7".to_owned()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let site = ok(&original, &["site", "show"]);
    let before = ok(&original, &["dp", "show", "bk-cdp"]);
    assert_eq!(before["content_count"], 1, "{before}");

    // The backup: everything but private keys and the site key.
    let backup = files.join("site.backup");
    ok(&original, &["site", "backup", &text(&backup)]);
    let bytes = std::fs::read(&backup).unwrap();
    assert!(
        contains(&bytes, b"bk-cdp") && contains(&bytes, b"bk-app") && contains(&bytes, b"laptop-7")
    );
    let site_key = std::fs::read(original.data_dir().join("site.key")).unwrap();
    for secret in [
        site_key.clone(),
        hex_lower(&site_key).into_bytes(),
        hex_lower(&site_key).to_uppercase().into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(&site_key)
            .into_bytes(),
    ] {
        assert!(!contains(&bytes, &secret), "the site key is in the backup");
    }
    for cert in [&management, &service] {
        for secret in [
            cert.key_der.clone(),
            hex_lower(&cert.key_der).to_uppercase().into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(&cert.key_der)
                .into_bytes(),
        ] {
            assert!(!contains(&bytes, &secret), "a private key is in the backup");
        }
        assert!(
            !contains(&bytes, &hex_lower(&cert.der).to_uppercase().into_bytes()),
            "certificates are not backed up: they are imported again"
        );
    }

    // Another site key: refused, nothing changed.
    let stranger = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let refused = run(&stranger, &["site", "restore", &text(&backup)]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("FailedPrecondition")
            && refused.stderr.contains("another site key"),
        "{refused:?}"
    );
    assert_eq!(dp_count(&stranger), 0);

    // A damaged or truncated file: refused.
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    let damaged_path = files.join("damaged.backup");
    std::fs::write(&damaged_path, &damaged).unwrap();
    let truncated_path = files.join("truncated.backup");
    std::fs::write(&truncated_path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    for path in [&damaged_path, &truncated_path] {
        let refused = run(&stranger, &["site", "restore", &text(path)]);
        assert_eq!(refused.code, 1, "{refused:?}");
        assert!(
            refused.stderr.contains("InvalidArgument")
                && refused.stderr.contains("damaged or incomplete"),
            "{refused:?}"
        );
    }
    assert_eq!(dp_count(&stranger), 0);

    // The original machine is gone; a new one has only the site key.
    let key_copy = files.join("site.key");
    std::fs::write(&key_copy, &site_key).unwrap();
    std::fs::set_permissions(
        &key_copy,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    original
        .terminate(std::time::Duration::from_secs(5))
        .unwrap();
    let restored = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .env("CLOUDDP_DM__SITE__KEY_FILE", &text(&key_copy)),
    )
    .await
    .unwrap();
    assert_eq!(
        ok(&restored, &["site", "show"])["site_key_fingerprint"],
        site["site_key_fingerprint"]
    );
    let summary = ok(&restored, &["site", "restore", &text(&backup)]);
    assert_eq!(summary["distribution_points"], 2, "{summary}");
    assert_eq!(summary["content_versions"], 1, "{summary}");
    assert_eq!(summary["distributions"], 2, "{summary}");
    assert_eq!(summary["groups"], 1, "{summary}");
    assert_eq!(summary["certificates_required"], 1, "{summary}");
    let again = run(&restored, &["site", "restore", &text(&backup)]);
    assert!(again.stderr.contains("needs an empty site"), "{again:?}");

    let cloud = ok(&restored, &["dp", "show", "bk-cdp"]);
    assert_eq!(cloud["state"], "certificates required", "{cloud}");
    assert!(
        cloud["state_reason"]
            .as_str()
            .unwrap()
            .contains("import the management and service certificates")
    );
    assert_eq!(cloud["certificates"].as_array().unwrap().len(), 0);
    assert_eq!(cloud["cloud"]["service_fqdn"], "bk-cdp.contoso.test");
    assert_eq!(cloud["id"], before["id"]);
    assert_eq!(cloud["content_count"], 1);
    let onprem = ok(&restored, &["dp", "show", "bk-onprem"]);
    assert_eq!(onprem["state"], "ready");
    assert_eq!(onprem["boundary_groups"][0], "hq");
    let groups = ok(&restored, &["group", "list"]);
    assert_eq!(groups[0]["member_count"], 2, "{groups}");
    assert_eq!(groups[0]["content_count"], 1, "{groups}");
    let settings = ClientPolicyServiceClient::new(restored.channel())
        .get_client_settings(pb::GetClientSettingsRequest {
            id: "Cloud for laptops".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(settings.device_ids, vec!["laptop-7".to_owned()]);
    assert!(settings.allow_cloud_distribution_points_for_devices);

    // Before its certificates are back, the cloud DP serves nothing: not offered, and its endpoint refuses.
    let deployment = ClientPolicyServiceClient::new(restored.channel())
        .create_deployment(pb::CreateDeploymentRequest {
            deployment: Some(pb::Deployment {
                content_id: "bk-app".to_owned(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let locate = || {
        let mut client = ContentLocationServiceClient::new(restored.channel());
        let deployment = deployment.id.clone();
        async move {
            client
                .locate_content(pb::LocateContentRequest {
                    device_id: "laptop-7".to_owned(),
                    deployment_id: deployment,
                    ..Default::default()
                })
                .await
        }
    };
    let waiting = locate().await.unwrap_err();
    assert_eq!(waiting.code(), tonic::Code::FailedPrecondition);
    assert!(
        waiting
            .message()
            .contains("the distribution points that have the content are not serving now"),
        "{waiting:?}"
    );

    // Certificates again: management first (still waiting), then service (ready), and the content opens.
    ok(
        &restored,
        &[
            "cert",
            "import-management",
            &management_pfx,
            "--dp",
            "bk-cdp",
            "--password",
            "pw-1",
        ],
    );
    assert_eq!(
        ok(&restored, &["dp", "show", "bk-cdp"])["state"],
        "certificates required"
    );
    let other_cn = self_signed("someone-else.contoso.test", Validity::Current).unwrap();
    let other_pfx = text(&other_cn.write_pfx(files, "other", "pw-3", true).unwrap());
    let wrong = run(
        &restored,
        &[
            "cert",
            "import-service",
            &other_pfx,
            "--dp",
            "bk-cdp",
            "--password",
            "pw-3",
        ],
    );
    assert!(wrong.stderr.contains("must keep the same CN"), "{wrong:?}");
    ok(
        &restored,
        &[
            "cert",
            "import-service",
            &service_pfx,
            "--dp",
            "bk-cdp",
            "--password",
            "pw-2",
        ],
    );
    let ready = ok(&restored, &["dp", "show", "bk-cdp"]);
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(ready["certificates"].as_array().unwrap().len(), 2);
    for dp in ["bk-cdp", "bk-onprem"] {
        let report = ok(&restored, &["content", "validate", &content_id, "--dp", dp]);
        assert_eq!(report["valid"], true, "{dp}: {report}");
    }
    // Serving again: offered to the device, and its endpoint (by SNI, with its re-imported certificate) serves.
    let answer = locate().await.unwrap().into_inner();
    let location = &answer.locations[0];
    assert_eq!(location.distribution_point_name, "bk-cdp");
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(service.cert_pem.as_bytes()).unwrap()])
        .resolve("bk-cdp.contoso.test", restored.content_addr())
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let response = clouddp_e2e::content::ranged_get(
            &http,
            &location.url,
            &location.access_token,
            "laptop-7",
            "bytes=0-1048607",
        )
        .await;
        // The endpoint picks up the certificate within its refresh interval.
        match response {
            Ok(response) if response.status() == 206 => {
                assert_eq!(response.bytes().await.unwrap().len(), 1_048_608);
                break;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "not serving: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        restored.unexpected_errors().is_empty(),
        "{:?}",
        restored.unexpected_errors()
    );
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
