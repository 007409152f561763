//! The content pipeline end to end: multi-file content sealed and distributed through a DP group to an
//! Azurite-backed cloud DP and a folder DP at once; the stores hold no plaintext and no file name; validation
//! passes; a kill -9 mid-distribution resumes without re-uploading staged parts; the reference's rules refuse
//! forbidden content before any byte moves.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clouddp_e2e::azurite::{ACCOUNT, Azurite};
use clouddp_e2e::console::{self, ConsoleOutput};
use clouddp_e2e::content::{MARKER_PREFIX, contains, write_random_file};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_platform::store::{
    AzureCredential, AzureStore, AzureStoreConfig, BlobStore, LocalFolderStore,
};

const MIB: usize = 1 << 20;
/// Parts of a 200 MiB content: 200 chunks of 1 MiB, eight chunks a part.
const PARTS: usize = 25;

fn run(manager: &ServiceProcess, args: &[&str]) -> ConsoleOutput {
    console::run(&manager.url(), console::NO_MONITORING, args).unwrap()
}

fn ok(manager: &ServiceProcess, args: &[&str]) -> ConsoleOutput {
    let output = run(manager, args);
    assert_eq!(output.code, 0, "clouddp {args:?} failed: {output:?}");
    output
}

/// Polls `clouddp content status CONTENT [--dp DP]` until the first job succeeds; fails on a failed job or
/// after `timeout`.
async fn wait_for_success(
    manager: &ServiceProcess,
    content_id: &str,
    dp: Option<&str>,
    timeout: Duration,
    what: &str,
) {
    let mut args = vec!["content", "status", content_id, "-o", "json"];
    if let Some(dp) = dp {
        args.extend(["--dp", dp]);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let status = ok(manager, &args).json().unwrap();
        if status[0]["state"] == "success" {
            return;
        }
        assert_ne!(status[0]["state"], "failed", "{what}: {status}");
        assert!(Instant::now() < deadline, "{what}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (60 s at most) until the manager's log shows `parts` staged parts.
async fn until_parts_staged(manager: &ServiceProcess, parts: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while manager.log().matches("part staged").count() < parts {
        assert!(
            Instant::now() < deadline,
            "distribution never started: {}",
            manager.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn install_cloud_dp(manager: &ServiceProcess, azurite: &Azurite, service_name: &str) {
    console::install_cloud_dp(
        &manager.url(),
        console::NO_MONITORING,
        azurite,
        service_name,
    )
    .unwrap();
}

fn cloud_store(azurite: &Azurite, container: &str) -> AzureStore {
    AzureStore::new(AzureStoreConfig {
        account: ACCOUNT.to_owned(),
        container: container.to_owned(),
        endpoint: azurite.blob_endpoint(),
        credential: AzureCredential::Emulator,
    })
    .unwrap()
}

/// Reads every object of `store` in ranges and fails if a marker, a file name or the content name shows up.
async fn assert_store_reveals_nothing(store: &dyn BlobStore, secrets: &[String]) -> u64 {
    let objects = store.list("").await.unwrap();
    assert!(!objects.is_empty(), "{} holds nothing", store.describe());
    let mut bytes_read = 0;
    for object in &objects {
        for secret in secrets {
            assert!(
                !object.path.contains(secret.as_str()),
                "object name {} reveals {secret}",
                object.path
            );
        }
        let window = 8 * MIB as u64;
        let overlap = 128;
        let mut offset = 0;
        while offset < object.size {
            let end = (offset + window).min(object.size);
            let start = offset.saturating_sub(overlap);
            let data = store.get_range(&object.path, start..end).await.unwrap();
            for secret in secrets {
                assert!(
                    !contains(&data, secret.as_bytes()),
                    "{} of {} reveals {secret:?}",
                    object.path,
                    store.describe()
                );
            }
            bytes_read += end - offset;
            offset = end;
        }
    }
    bytes_read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_file_content_reaches_cloud_and_folder_dps_through_a_group_sealed() {
    let azurite = Azurite::start().await.unwrap();
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("office-suite");
    let mut markers = Vec::new();
    markers.extend(
        write_random_file(
            &source.join("setup/office-installer-x64.msi"),
            120 * MIB + 12_345,
            0,
        )
        .unwrap(),
    );
    markers.extend(
        write_random_file(&source.join("data/payload-cabinet.cab"), 80 * MIB - 7, 100).unwrap(),
    );
    markers.extend(write_random_file(&source.join("readme-confidential.txt"), 3000, 200).unwrap());
    assert!(markers.len() > 40, "every file carries markers");
    // Every marker starts with the prefix, so finding none of it proves no marker leaked.
    let secrets: Vec<String> = [
        MARKER_PREFIX,
        "office-installer-x64",
        "payload-cabinet",
        "readme-confidential",
        "office-suite",
    ]
    .map(str::to_owned)
    .to_vec();

    install_cloud_dp(&manager, &azurite, "contoso-cdp1");
    let folder = work.path().join("branch-folder");
    ok(
        &manager,
        &[
            "dp",
            "register",
            "--name",
            "branch-1",
            "--folder",
            folder.to_str().unwrap(),
            "--address",
            "https://branch-1.corp.example",
        ],
    );
    ok(
        &manager,
        &[
            "group",
            "create",
            "everywhere",
            "--dp",
            "contoso-cdp1",
            "--dp",
            "branch-1",
        ],
    );
    let added = ok(
        &manager,
        &[
            "content",
            "add",
            "--name",
            "office-suite",
            "--type",
            "application",
            "--source",
            source.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    assert_eq!(added["files"], 3);
    let content_id = added["id"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let distributed = ok(
        &manager,
        &[
            "content",
            "distribute",
            "office-suite",
            "--group",
            "everywhere",
            "--wait",
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    let elapsed = started.elapsed();
    let jobs = distributed.as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{distributed}");
    for job in jobs {
        assert_eq!(job["state"], "success", "{job}");
        assert_eq!(job["bytes_done"], job["bytes_total"]);
    }
    eprintln!("distributed ~200 MiB to two DPs in {elapsed:?}");

    let read = assert_store_reveals_nothing(&cloud_store(&azurite, "contoso-cdp1"), &secrets).await;
    assert!(
        read > 200 * MIB as u64,
        "the whole sealed object was read back: {read}"
    );
    assert_store_reveals_nothing(&LocalFolderStore::new(&folder), &secrets).await;

    for dp in ["contoso-cdp1", "branch-1"] {
        let report = ok(
            &manager,
            &["content", "validate", &content_id, "--dp", dp, "-o", "json"],
        )
        .json()
        .unwrap();
        assert_eq!(report["valid"], true, "{report}");
        assert_eq!(report["chunks_checked"], 201, "{report}");
    }
    let groups = ok(&manager, &["group", "list", "-o", "json"])
        .json()
        .unwrap();
    assert_eq!(groups[0]["content_count"], 1);

    // A DP that joins the group later gets the group's content.
    let late = work.path().join("late-folder");
    ok(
        &manager,
        &[
            "dp",
            "register",
            "--name",
            "late-1",
            "--folder",
            late.to_str().unwrap(),
            "--address",
            "https://late-1.corp.example",
        ],
    );
    ok(&manager, &["group", "add", "everywhere", "--dp", "late-1"]);
    wait_for_success(
        &manager,
        &content_id,
        Some("late-1"),
        Duration::from_secs(60),
        "late member never got the content",
    )
    .await;

    // Removing deletes the object from the DP's store.
    ok(
        &manager,
        &[
            "content",
            "remove",
            &content_id,
            "--dp",
            "branch-1",
            "--yes",
        ],
    );
    assert!(
        LocalFolderStore::new(&folder)
            .list("content/")
            .await
            .unwrap()
            .is_empty(),
        "removed content left objects behind"
    );
    let invalid = run(
        &manager,
        &["content", "validate", &content_id, "--dp", "branch-1"],
    );
    assert_eq!(invalid.code, 1, "{invalid:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_distribution_resumes_without_re_uploading_staged_parts() {
    let azurite = Azurite::start().await.unwrap();
    let mut manager =
        ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager).env(
            "RUST_LOG",
            "info,clouddp_distribution_manager::distribution=debug",
        ))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("big");
    write_random_file(&source.join("image.wim"), 200 * MIB, 0).unwrap();
    install_cloud_dp(&manager, &azurite, "resume-cdp");
    let added = ok(
        &manager,
        &[
            "content",
            "add",
            "--name",
            "big-image",
            "--type",
            "os-image",
            "--source",
            source.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    let content_id = added["id"].as_str().unwrap().to_owned();
    let path = format!(
        "content/{}/v1.sealed",
        added["content_id"].as_str().unwrap()
    );
    ok(
        &manager,
        &["content", "distribute", &content_id, "--dp", "resume-cdp"],
    );

    // Kill it once a good part of the content is staged, but not all.
    until_parts_staged(&manager, 6).await;
    manager.kill9();
    let staged_before = manager.log().matches("part staged").count();
    assert!(
        staged_before < PARTS,
        "the kill came too late to test a resume ({staged_before} of {PARTS} parts)"
    );
    let store = cloud_store(&azurite, "resume-cdp");
    assert_eq!(
        store.head(&path).await.unwrap(),
        None,
        "no half-written object may exist"
    );

    manager.restart().await.unwrap();
    wait_for_success(
        &manager,
        &content_id,
        None,
        Duration::from_secs(120),
        "the distribution did not finish after the restart",
    )
    .await;
    assert!(
        manager.log().contains("resuming distribution"),
        "{}",
        manager.log()
    );

    let mut uploads: HashMap<u64, usize> = HashMap::new();
    for line in manager
        .log()
        .lines()
        .filter(|line| line.contains("part staged"))
    {
        let part: u64 = line
            .split("part=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no part number in {line}"));
        *uploads.entry(part).or_default() += 1;
    }
    assert_eq!(uploads.len(), PARTS, "every part was staged: {uploads:?}");
    let twice: Vec<u64> = uploads
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(part, _)| *part)
        .collect();
    assert!(
        uploads.values().all(|count| *count <= 2),
        "a part was uploaded more than twice: {uploads:?}"
    );
    assert!(
        twice.len() <= 4,
        "only parts in flight at the kill may be uploaded again, not {twice:?}"
    );

    let report = ok(
        &manager,
        &[
            "content",
            "validate",
            &content_id,
            "--dp",
            "resume-cdp",
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    assert_eq!(report["valid"], true, "{report}");
    let objects = store.list("").await.unwrap();
    assert_eq!(objects.len(), 1, "one object, no orphans: {objects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_rules_refuse_cloud_dps_before_any_byte_moves() {
    let azurite = Azurite::start().await.unwrap();
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("small");
    write_random_file(&source.join("file.bin"), 100_000, 0).unwrap();
    install_cloud_dp(&manager, &azurite, "rules-cdp");
    let folder = work.path().join("onprem");
    ok(
        &manager,
        &[
            "dp",
            "register",
            "--name",
            "onprem-1",
            "--folder",
            folder.to_str().unwrap(),
            "--address",
            "https://onprem-1.corp.example",
        ],
    );

    let cases: [(&str, &[&str], &str); 6] = [
        (
            "updates",
            &["--type", "software-update-package"],
            "software update packages cannot be hosted",
        ),
        (
            "pxe-boot",
            &["--type", "boot-image", "--pxe"],
            "PXE-enabled content cannot be hosted",
        ),
        (
            "multicast-boot",
            &["--type", "boot-image", "--multicast"],
            "multicast-enabled content cannot be hosted",
        ),
        (
            "run-from-dp",
            &["--type", "package", "--run-from-dp"],
            "packages that run from the distribution point",
        ),
        (
            "appv",
            &["--type", "application", "--app-v-streaming"],
            "App-V streamed applications",
        ),
        (
            "prestaged",
            &["--type", "package", "--prestaged"],
            "prestaged content cannot be hosted",
        ),
    ];
    for (name, flags, rule) in cases {
        let mut args = vec![
            "content",
            "add",
            "--name",
            name,
            "--source",
            source.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        ok(&manager, &args);
        let refused = run(
            &manager,
            &[
                "content",
                "distribute",
                name,
                "--dp",
                "rules-cdp",
                "--dp",
                "onprem-1",
            ],
        );
        assert_eq!(refused.code, 1, "{name}: {refused:?}");
        assert!(
            refused.stderr.contains("FailedPrecondition"),
            "{name}: {}",
            refused.stderr
        );
        assert!(refused.stderr.contains(rule), "{name}: {}", refused.stderr);
        let status = ok(&manager, &["content", "status", name, "-o", "json"])
            .json()
            .unwrap();
        assert_eq!(
            status,
            serde_json::json!([]),
            "{name}: a refused request queues nothing, not even for the on-premises DP"
        );
    }
    assert!(
        cloud_store(&azurite, "rules-cdp")
            .list("")
            .await
            .unwrap()
            .is_empty(),
        "no blob was written to the cloud DP"
    );

    // On-premises DPs accept what cloud DPs may not hold.
    let accepted = ok(
        &manager,
        &[
            "content",
            "distribute",
            "pxe-boot",
            "--dp",
            "onprem-1",
            "--wait",
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    assert_eq!(accepted[0]["state"], "success", "{accepted}");

    // Through a group, the cloud member is skipped with its rule and the on-premises member gets the content.
    ok(
        &manager,
        &[
            "group",
            "create",
            "mixed",
            "--dp",
            "rules-cdp",
            "--dp",
            "onprem-1",
        ],
    );
    let through_group = run(
        &manager,
        &[
            "content",
            "distribute",
            "multicast-boot",
            "--group",
            "mixed",
            "-o",
            "json",
        ],
    );
    assert_eq!(through_group.code, 0, "{through_group:?}");
    assert!(
        through_group
            .stderr
            .contains("skipped group member rules-cdp")
            && through_group
                .stderr
                .contains("multicast-enabled content cannot be hosted"),
        "{through_group:?}"
    );
    let queued = through_group.json().unwrap();
    assert_eq!(queued.as_array().unwrap().len(), 1, "{queued}");
    assert_eq!(queued[0]["distribution_point"], "onprem-1", "{queued}");
    // A cloud DP joining a group that holds such content is skipped for it too.
    ok(
        &manager,
        &["group", "create", "boot-group", "--dp", "onprem-1"],
    );
    ok(
        &manager,
        &[
            "content",
            "distribute",
            "run-from-dp",
            "--group",
            "boot-group",
        ],
    );
    ok(
        &manager,
        &["group", "add", "boot-group", "--dp", "rules-cdp"],
    );
    let status = ok(
        &manager,
        &["content", "status", "run-from-dp", "-o", "json"],
    )
    .json()
    .unwrap();
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|job| job["distribution_point"] == "onprem-1"),
        "{status}"
    );

    let pull = run(
        &manager,
        &[
            "dp",
            "install",
            "--service-name",
            "pull-cdp",
            "--subscription",
            "0f4d3a1e-5b6c-4d7e-8f90-a1b2c3d4e5f6",
            "--region",
            "westeurope",
            "--emulator",
            "--blob-endpoint",
            &azurite.blob_endpoint(),
            "--dev-certificates",
            &clouddp_e2e::console::dev_certificates_dir().to_string_lossy(),
        ],
    );
    assert_eq!(pull.code, 0, "an ordinary install works: {pull:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_is_retried_with_backoff_until_the_store_is_back() {
    let mut azurite = Azurite::start().await.unwrap();
    // Retries 100 ms apart at most: the old limit of 5 attempts is passed within a second or two.
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .env("CLOUDDP_DM__DISTRIBUTION__RETRY_BASE", "50ms")
            .env("CLOUDDP_DM__DISTRIBUTION__RETRY_MAX", "100ms"),
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("app");
    write_random_file(&source.join("setup.exe"), 3 * MIB, 0).unwrap();
    install_cloud_dp(&manager, &azurite, "outage-cdp");
    let added = ok(
        &manager,
        &[
            "content",
            "add",
            "--name",
            "app",
            "--type",
            "application",
            "--source",
            source.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    let content_id = added["id"].as_str().unwrap().to_owned();

    azurite.stop();
    ok(
        &manager,
        &["content", "distribute", &content_id, "--dp", "outage-cdp"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_retry_shown = false;
    let retried = loop {
        let status = ok(&manager, &["content", "status", &content_id, "-o", "json"])
            .json()
            .unwrap();
        assert_ne!(
            status[0]["state"], "failed",
            "an outage never fails the job: {status}"
        );
        next_retry_shown |= status[0]["state"] == "waiting"
            && !status[0]["next_attempt_time"].as_str().unwrap().is_empty();
        if status[0]["attempts"].as_u64().unwrap_or(0) >= 8 && next_retry_shown {
            break status;
        }
        assert!(Instant::now() < deadline, "no retry seen: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(
        retried[0]["state"], "failed",
        "a transient outage must not fail the job yet: {retried}"
    );
    assert!(
        !retried[0]["error"].as_str().unwrap().is_empty(),
        "the last error is shown: {retried}"
    );

    azurite.restart().await.unwrap();
    wait_for_success(
        &manager,
        &content_id,
        None,
        Duration::from_secs(60),
        "never recovered",
    )
    .await;
    let report = ok(
        &manager,
        &[
            "content",
            "validate",
            &content_id,
            "--dp",
            "outage-cdp",
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    assert_eq!(report["valid"], true, "{report}");

    // An admin cancels a job that cannot get through: it stops retrying and says why; redistribute restarts it.
    azurite.stop();
    ok(
        &manager,
        &["content", "redistribute", &content_id, "--dp", "outage-cdp"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok(&manager, &["content", "status", &content_id, "-o", "json"])
        .json()
        .unwrap()[0]["attempts"]
        .as_u64()
        .unwrap_or(0)
        < 2
    {
        assert!(Instant::now() < deadline, "no retry seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = ok(
        &manager,
        &[
            "content",
            "cancel",
            &content_id,
            "--dp",
            "outage-cdp",
            "-o",
            "json",
        ],
    )
    .json()
    .unwrap();
    assert_eq!(cancelled[0]["state"], "failed", "{cancelled}");
    assert_eq!(
        cancelled[0]["error"], "cancelled by an administrator",
        "{cancelled}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = ok(&manager, &["content", "status", &content_id, "-o", "json"])
        .json()
        .unwrap();
    assert_eq!(
        after[0]["state"], "failed",
        "no retry after a cancel: {after}"
    );
    assert_eq!(after[0]["attempts"], cancelled[0]["attempts"], "{after}");
    let again = ok(&manager, &["content", "cancel", &content_id, "-o", "json"])
        .json()
        .unwrap();
    assert_eq!(
        again[0]["state"], "failed",
        "cancelling a failed job changes nothing: {again}"
    );
    azurite.restart().await.unwrap();
    ok(
        &manager,
        &["content", "redistribute", &content_id, "--dp", "outage-cdp"],
    );
    wait_for_success(
        &manager,
        &content_id,
        None,
        Duration::from_secs(60),
        "a cancelled job redistributed",
    )
    .await;
    let unknown = run(&manager, &["content", "cancel", "no-such-content"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("NOT_FOUND")
            || unknown.stderr.contains("not found")
            || unknown.stderr.contains("no content"),
        "{unknown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_the_store_lost_are_staged_again() {
    let mut azurite = Azurite::start().await.unwrap();
    let mut manager =
        ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager).env(
            "RUST_LOG",
            "info,clouddp_distribution_manager::distribution=debug",
        ))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("lost");
    write_random_file(&source.join("image.wim"), 120 * MIB, 4).unwrap();
    install_cloud_dp(&manager, &azurite, "lost-cdp");
    ok(
        &manager,
        &[
            "content",
            "add",
            "--name",
            "lost",
            "--type",
            "os-image",
            "--source",
            source.to_str().unwrap(),
        ],
    );
    ok(
        &manager,
        &["content", "distribute", "lost", "--dp", "lost-cdp"],
    );
    // Some parts staged, then the manager dies and the store loses what it had acknowledged.
    until_parts_staged(&manager, 4).await;
    manager.kill9();
    azurite.restart_empty().await.unwrap();
    manager.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = ok(&manager, &["content", "status", "lost", "-o", "json"])
            .json()
            .unwrap();
        assert_ne!(status[0]["state"], "failed", "{status}");
        if status[0]["state"] == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "never finished: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        manager
            .log()
            .contains("the store lost staged parts; staging every part again"),
        "{}",
        manager.log()
    );
    let report = ok(
        &manager,
        &[
            "content", "validate", "lost", "--dp", "lost-cdp", "-o", "json",
        ],
    )
    .json()
    .unwrap();
    assert_eq!(report["valid"], true, "{report}");
}
