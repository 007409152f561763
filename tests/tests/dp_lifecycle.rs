//! Cloud DP service lifecycle so far: stop and start (state on the DP and on the monitoring service's watch,
//! distribution still goes on while stopped), scale with its bounds, and groups renamed and deleted.

use std::time::{Duration, Instant};

use clouddp_e2e::azurite::{ACCOUNT, Azurite};
use clouddp_e2e::console::{self, ConsoleOutput};
use clouddp_e2e::content::write_random_file;
use clouddp_e2e::{ServiceProcess, store_folder};
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;
use clouddp_proto::v1::{DistributionPointState, ListFollowedDistributionPointsRequest};

fn run(manager: &ServiceProcess, monitoring: &ServiceProcess, args: &[&str]) -> ConsoleOutput {
    console::run(&manager.url(), &monitoring.url(), args).unwrap()
}

fn ok(manager: &ServiceProcess, monitoring: &ServiceProcess, args: &[&str]) -> serde_json::Value {
    console::json(&manager.url(), &monitoring.url(), args).unwrap()
}

async fn followed_state(monitoring: &ServiceProcess, name: &str) -> Option<DistributionPointState> {
    MonitoringServiceClient::new(monitoring.channel())
        .list_followed_distribution_points(ListFollowedDistributionPointsRequest {})
        .await
        .ok()?
        .into_inner()
        .distribution_points
        .into_iter()
        .find(|dp| dp.name == name)
        .map(|dp| dp.state())
}

async fn wait_followed(monitoring: &ServiceProcess, name: &str, state: DistributionPointState) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while followed_state(monitoring, name).await != Some(state) {
        assert!(
            Instant::now() < deadline,
            "monitoring never saw {name} {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_and_scale_a_cloud_dp() {
    let azurite = Azurite::start().await.unwrap();
    let (manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    let endpoint = azurite.blob_endpoint();
    let installed =
        console::install_cloud_dp(&manager.url(), &monitoring.url(), &azurite, "life-cdp").unwrap();
    assert_eq!(installed["state"], "ready");
    assert_eq!(
        installed["cloud"]["instances"], 2,
        "two instances by default"
    );
    assert_eq!(installed["thresholds"]["storage_alert_gb"], 2000);
    wait_followed(&monitoring, "life-cdp", DistributionPointState::Ready).await;

    let stopped = ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "stop",
            "life-cdp",
            "--reason",
            "transfer budget reached",
        ],
    );
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["state_reason"], "transfer budget reached");
    wait_followed(&monitoring, "life-cdp", DistributionPointState::Stopped).await;
    let again = ok(&manager, &monitoring, &["dp", "stop", "life-cdp"]);
    assert_eq!(
        again["revision"], stopped["revision"],
        "stopping a stopped DP changes nothing"
    );

    // The site still distributes to a stopped DP.
    let work = tempfile::tempdir().unwrap();
    write_random_file(&work.path().join("app/setup.exe"), 2_000_000, 0).unwrap();
    ok(
        &manager,
        &monitoring,
        &[
            "content",
            "add",
            "--name",
            "app",
            "--type",
            "application",
            "--source",
            work.path().join("app").to_str().unwrap(),
        ],
    );
    let jobs = ok(
        &manager,
        &monitoring,
        &["content", "distribute", "app", "--dp", "life-cdp", "--wait"],
    );
    assert_eq!(jobs[0]["state"], "success", "{jobs}");

    let started = ok(&manager, &monitoring, &["dp", "start", "life-cdp"]);
    assert_eq!(started["state"], "ready");
    assert_eq!(started["state_reason"], "");
    wait_followed(&monitoring, "life-cdp", DistributionPointState::Ready).await;
    let valid = ok(
        &manager,
        &monitoring,
        &["content", "validate", "app", "--dp", "life-cdp"],
    );
    assert_eq!(
        valid["valid"], true,
        "stop and start kept the content: {valid}"
    );

    let scaled = ok(
        &manager,
        &monitoring,
        &["dp", "scale", "life-cdp", "--instances", "4"],
    );
    assert_eq!(scaled["cloud"]["instances"], 4);
    let manifests = run(
        &manager,
        &monitoring,
        &["dp", "manifests", "--dp", "life-cdp"],
    );
    assert_eq!(manifests.code, 0, "{manifests:?}");
    assert!(
        manifests.stdout.contains("kind: Deployment")
            && manifests.stdout.contains("\n  replicas: 4\n"),
        "the instance count is the content endpoint's replica count: {manifests:?}"
    );
    assert!(
        manifests.stdout.contains("minAvailable: 3"),
        "{manifests:?}"
    );
    for bad in ["0", "17"] {
        let refused = run(
            &manager,
            &monitoring,
            &["dp", "scale", "life-cdp", "--instances", bad],
        );
        assert_eq!(refused.code, 1, "{refused:?}");
        assert!(
            refused.stderr.contains("InvalidArgument") && refused.stderr.contains("1 to 16"),
            "{refused:?}"
        );
    }
    let shown = ok(&manager, &monitoring, &["dp", "show", "life-cdp"]);
    assert_eq!(
        shown["cloud"]["instances"], 4,
        "refused scales changed nothing"
    );

    ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "register",
            "--name",
            "branch-x",
            "--folder",
            &store_folder(&manager, "branch-x"),
            "--address",
            "https://branch-x.corp.example",
        ],
    );
    let on_prem = run(
        &manager,
        &monitoring,
        &["dp", "scale", "branch-x", "--instances", "3"],
    );
    assert_eq!(on_prem.code, 1);
    assert!(
        on_prem.stderr.contains("FailedPrecondition")
            && on_prem.stderr.contains("cloud distribution points only"),
        "{on_prem:?}"
    );

    // Delete removes every object from the store, the container, the DP and its memberships.
    ok(
        &manager,
        &monitoring,
        &["group", "create", "cloud-only", "--dp", "life-cdp"],
    );
    let refused = run(&manager, &monitoring, &["dp", "delete", "life-cdp"]);
    assert_eq!(
        refused.code, 2,
        "no --yes, no terminal: bad usage: {refused:?}"
    );
    let store =
        clouddp_platform::store::AzureStore::new(clouddp_platform::store::AzureStoreConfig {
            account: ACCOUNT.to_owned(),
            container: "life-cdp".to_owned(),
            endpoint: endpoint.clone(),
            credential: clouddp_platform::store::AzureCredential::Emulator,
        })
        .unwrap();
    use clouddp_platform::store::BlobStore as _;
    assert_eq!(
        store.list("").await.unwrap().len(),
        1,
        "the content is there before the delete"
    );
    let deleted = ok(
        &manager,
        &monitoring,
        &["dp", "delete", "life-cdp", "--yes"],
    );
    assert_eq!(deleted["objects_deleted"], 1, "{deleted}");
    assert!(
        store.list("").await.is_err(),
        "the container is gone, and every blob with it"
    );
    let missing = run(&manager, &monitoring, &["dp", "show", "life-cdp"]);
    assert!(missing.stderr.contains("NotFound"), "{missing:?}");
    let groups = ok(&manager, &monitoring, &["group", "list"]);
    assert_eq!(
        groups[0]["member_count"], 0,
        "the membership went with the DP: {groups}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while followed_state(&monitoring, "life-cdp").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "monitoring still follows the deleted DP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let bad_name = run(
        &manager,
        &monitoring,
        &[
            "dp",
            "install",
            "--service-name",
            "Bad_Name",
            "--subscription",
            "0f4d3a1e-5b6c-4d7e-8f90-a1b2c3d4e5f6",
            "--region",
            "northeurope",
            "--emulator",
            "--blob-endpoint",
            &endpoint,
            "--dev-certificates",
            &console::dev_certificates_dir().to_string_lossy(),
        ],
    );
    assert_eq!(bad_name.code, 1);
    assert!(
        bad_name.stderr.contains("cloud.service_name"),
        "{bad_name:?}"
    );
}

#[tokio::test]
async fn groups_are_renamed_and_deleted_without_touching_their_members() {
    let (manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "register",
            "--name",
            "member-1",
            "--folder",
            &store_folder(&manager, "m1"),
            "--address",
            "https://m1.corp.example",
        ],
    );
    let created = ok(
        &manager,
        &monitoring,
        &["group", "create", "west", "--dp", "member-1"],
    );
    assert_eq!(created["member_count"], 1);
    let renamed = ok(
        &manager,
        &monitoring,
        &["group", "rename", "west", "west-europe"],
    );
    assert_eq!(renamed["name"], "west-europe");
    assert_eq!(renamed["id"], created["id"]);
    let clash = run(&manager, &monitoring, &["group", "create", "west-europe"]);
    assert_eq!(clash.code, 1);
    assert!(clash.stderr.contains("AlreadyExists"), "{clash:?}");
    let refused = run(&manager, &monitoring, &["group", "delete", "west-europe"]);
    assert_eq!(
        refused.code, 2,
        "deleting without --yes and without a terminal is refused as bad usage: {refused:?}"
    );
    ok(
        &manager,
        &monitoring,
        &["group", "delete", "west-europe", "--yes"],
    );
    assert_eq!(
        ok(&manager, &monitoring, &["group", "list"]),
        serde_json::json!([])
    );
    let members = ok(&manager, &monitoring, &["dp", "list"]);
    assert_eq!(members[0]["name"], "member-1", "the member stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_delete_finishes_after_a_restart() {
    let mut azurite = Azurite::start().await.unwrap();
    let (mut manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    console::install_cloud_dp(&manager.url(), &monitoring.url(), &azurite, "gone-cdp").unwrap();
    // The store is down: the delete is recorded, cannot finish, and says so.
    azurite.stop();
    let failed = run(
        &manager,
        &monitoring,
        &["dp", "delete", "gone-cdp", "--yes"],
    );
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("Unavailable"), "{failed:?}");
    let shown = ok(&manager, &monitoring, &["dp", "show", "gone-cdp"]);
    assert_eq!(shown["state"], "deleting", "{shown}");

    azurite.restart().await.unwrap();
    manager.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = ok(&manager, &monitoring, &["dp", "list"]);
        if listed.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the delete did not finish after the restart: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        manager.log().contains("finishing an interrupted delete"),
        "{}",
        manager.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_update_only_the_editable_fields() {
    let azurite = Azurite::start().await.unwrap();
    let (manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    console::install_cloud_dp(&manager.url(), &monitoring.url(), &azurite, "props-cdp").unwrap();
    let set = ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "set",
            "props-cdp",
            "--storage-threshold-gb",
            "500",
            "--transfer-warning-percent",
            "40",
            "--stop-on-transfer-critical",
            "true",
        ],
    );
    assert_eq!(set["thresholds"]["storage_alert_gb"], 500);
    assert_eq!(set["thresholds"]["transfer_warning_percent"], 40);
    assert_eq!(
        set["thresholds"]["transfer_alert_gb"], 10000,
        "untouched fields stay"
    );

    // The monitoring service sees the new thresholds through the watch stream.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let followed = MonitoringServiceClient::new(monitoring.channel())
            .list_followed_distribution_points(ListFollowedDistributionPointsRequest {})
            .await
            .unwrap()
            .into_inner();
        let thresholds = followed
            .distribution_points
            .first()
            .and_then(|dp| dp.thresholds);
        if thresholds.is_some_and(|thresholds| {
            thresholds.storage_alert_gb == 500 && thresholds.stop_service_on_transfer_critical
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "monitoring never saw the new thresholds: {followed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let inverted = run(
        &manager,
        &monitoring,
        &["dp", "set", "props-cdp", "--transfer-warning-percent", "95"],
    );
    assert_eq!(inverted.code, 1, "{inverted:?}");
    assert!(
        inverted.stderr.contains("InvalidArgument") && inverted.stderr.contains("above warning"),
        "{inverted:?}"
    );
    let zero = run(
        &manager,
        &monitoring,
        &["dp", "set", "props-cdp", "--storage-threshold-gb", "0"],
    );
    assert!(zero.stderr.contains("InvalidArgument"), "{zero:?}");

    let read_only = clouddp_e2e::grpcurl::run([
        "-plaintext",
        "-d",
        r#"{"id":"props-cdp","distribution_point":{"cloud":{"region":"westus"}},"update_mask":{"paths":["cloud.region"]}}"#,
        &manager.addr().to_string(),
        "clouddp.v1.DistributionPointService/UpdateDistributionPoint",
    ])
    .unwrap();
    assert!(!read_only.success);
    assert!(
        read_only.stderr.contains("FailedPrecondition")
            && read_only
                .stderr
                .contains("install a new distribution point"),
        "{}",
        read_only.stderr
    );

    let after = ok(&manager, &monitoring, &["dp", "show", "props-cdp"]);
    assert_eq!(
        after["cloud"]["region"], "northeurope",
        "refused changes changed nothing"
    );
    assert_eq!(after["thresholds"]["transfer_warning_percent"], 40);
    assert_eq!(after["thresholds"]["storage_alert_gb"], 500);
}

/// `dp install` of `service` on Azurite's account, with `extra` flags (the blob endpoint among them, or not).
fn install(
    manager: &ServiceProcess,
    monitoring: &ServiceProcess,
    service: &str,
    extra: &[&str],
) -> ConsoleOutput {
    let certificates = console::dev_certificates_dir();
    let mut args = vec![
        "dp",
        "install",
        "--service-name",
        service,
        "--subscription",
        console::TEST_SUBSCRIPTION,
        "--account",
        clouddp_e2e::azurite::ACCOUNT,
        "--emulator",
        "--dev-certificates",
        certificates.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(manager, monitoring, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_install_is_corrected_by_installing_again_or_deleted_with_force() {
    let azurite = Azurite::start().await.unwrap();
    let (manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    let endpoint = azurite.blob_endpoint();

    // Without --blob-endpoint the emulator's account is looked for in Azure: the install fails, the DP says why.
    let failed = install(
        &manager,
        &monitoring,
        "typo-cdp",
        &["--region", "westeurope"],
    );
    assert_ne!(failed.code, 0, "{failed:?}");
    let shown = ok(&manager, &monitoring, &["dp", "show", "typo-cdp"]);
    assert_eq!(shown["state"], "error", "{shown}");
    assert!(
        !shown["state_reason"].as_str().unwrap().is_empty(),
        "{shown}"
    );

    // Installing again with the right endpoint corrects it.
    let fixed = install(
        &manager,
        &monitoring,
        "typo-cdp",
        &[
            "--region",
            "westeurope",
            "--blob-endpoint",
            &endpoint,
            "-o",
            "json",
        ],
    );
    assert_eq!(fixed.code, 0, "{fixed:?}");
    let shown = ok(&manager, &monitoring, &["dp", "show", "typo-cdp"]);
    assert_eq!(
        shown["state"], "ready",
        "the container was made at the new endpoint: {shown}"
    );

    // Installed: the same parameters are a no-op, other ones are refused naming each difference.
    let same = install(
        &manager,
        &monitoring,
        "typo-cdp",
        &["--region", "westeurope", "--blob-endpoint", &endpoint],
    );
    assert_eq!(same.code, 0, "{same:?}");
    let other = install(
        &manager,
        &monitoring,
        "typo-cdp",
        &["--region", "northeurope", "--blob-endpoint", &endpoint],
    );
    assert_eq!(other.code, 1, "{other:?}");
    assert!(
        other.stderr.contains("region") && other.stderr.contains("northeurope"),
        "{other:?}"
    );
    assert!(!other.stdout.contains("ready"), "{other:?}");
    let shown = ok(&manager, &monitoring, &["dp", "show", "typo-cdp"]);
    assert!(shown.to_string().contains("westeurope"), "{shown}");

    // A DP whose store was never reachable: delete says why and keeps it (DELETING, with the reason), --force
    // removes it and says what may be left, and its service name is free again.
    let broken = install(
        &manager,
        &monitoring,
        "gone-typo",
        &["--region", "westeurope"],
    );
    assert_ne!(broken.code, 0, "{broken:?}");
    let refused = run(
        &manager,
        &monitoring,
        &["dp", "delete", "gone-typo", "--yes"],
    );
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("--force"), "{refused:?}");
    let shown = ok(&manager, &monitoring, &["dp", "show", "gone-typo"]);
    assert_eq!(shown["state"], "deleting", "{shown}");
    assert!(
        shown["state_reason"].as_str().unwrap().contains("--force"),
        "{shown}"
    );
    let forced = ok(
        &manager,
        &monitoring,
        &["dp", "delete", "gone-typo", "--yes", "--force"],
    );
    assert!(
        forced["left_in_store"]
            .as_str()
            .unwrap()
            .contains("devstoreaccount1"),
        "{forced}"
    );
    let missing = run(&manager, &monitoring, &["dp", "show", "gone-typo"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    let again = install(
        &manager,
        &monitoring,
        "gone-typo",
        &["--region", "westeurope", "--blob-endpoint", &endpoint],
    );
    assert_eq!(again.code, 0, "the service name is free again: {again:?}");
}
