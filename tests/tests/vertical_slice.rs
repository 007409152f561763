//! The vertical slice: DPs registered through the console are persisted by the distribution manager, and the
//! monitoring service follows them through the watch stream, across a kill -9 and restart of the manager.

use std::time::{Duration, Instant};

use clouddp_e2e::{ServiceProcess, console};
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;
use clouddp_proto::v1::{
    ListFollowedDistributionPointsRequest, ListFollowedDistributionPointsResponse,
};

async fn followed(monitoring: &ServiceProcess) -> ListFollowedDistributionPointsResponse {
    MonitoringServiceClient::new(monitoring.channel())
        .list_followed_distribution_points(ListFollowedDistributionPointsRequest {})
        .await
        .expect("monitoring answers ListFollowedDistributionPoints")
        .into_inner()
}

async fn wait_for(
    monitoring: &ServiceProcess,
    what: &str,
    condition: impl Fn(&ListFollowedDistributionPointsResponse) -> bool,
) -> ListFollowedDistributionPointsResponse {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = followed(monitoring).await;
        if condition(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last answer: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(answer: &ListFollowedDistributionPointsResponse) -> Vec<String> {
    answer
        .distribution_points
        .iter()
        .map(|dp| dp.name.clone())
        .collect()
}

#[tokio::test]
async fn monitoring_follows_dps_across_a_distribution_manager_restart() {
    let (mut manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    let dm = manager.url();
    let mon = monitoring.url();
    let (folder_a, folder_b) = (
        clouddp_e2e::store_folder(&manager, "branch-a"),
        clouddp_e2e::store_folder(&manager, "edge-b"),
    );

    let registered = console::run(
        &dm,
        &mon,
        &[
            "dp",
            "register",
            "--name",
            "branch-a",
            "--folder",
            &folder_a,
            "--address",
            "https://branch-a.corp.example:7443",
            "--boundary-group",
            "hq",
        ],
    )
    .unwrap();
    assert_eq!(registered.code, 0, "{registered:?}");
    assert!(
        registered
            .stdout
            .contains("registered distribution point branch-a"),
        "{registered:?}"
    );

    let listed = console::run(&dm, &mon, &["dp", "list", "--output", "json"]).unwrap();
    assert_eq!(listed.code, 0, "{listed:?}");
    let listed = listed.json().unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "branch-a");
    assert_eq!(listed[0]["kind"], "on-premises");
    assert_eq!(listed[0]["boundary_groups"][0], "hq");
    assert_eq!(listed[0]["thresholds"]["storage_alert_gb"], 2000);

    let first = wait_for(&monitoring, "branch-a to be followed", |answer| {
        answer.connected && names(answer) == ["branch-a"]
    })
    .await;
    assert_eq!(first.connections, 1);
    assert_eq!(first.distribution_manager, dm);

    manager.kill9();
    wait_for(&monitoring, "the watch stream to drop", |answer| {
        !answer.connected
    })
    .await;
    let down = console::run(&dm, &mon, &["dp", "list"]).unwrap();
    assert_eq!(down.code, 3, "{down:?}");
    assert!(
        down.stderr
            .contains("cannot reach the distribution manager"),
        "{down:?}"
    );
    let still_followed = followed(&monitoring).await;
    assert_eq!(
        names(&still_followed),
        ["branch-a"],
        "followed DPs survive the outage"
    );

    manager.restart().await.unwrap();
    let persisted = console::run(&dm, &mon, &["dp", "list", "--output", "json"])
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        persisted[0]["name"], "branch-a",
        "the DP survived the restart: {persisted}"
    );

    let second = console::run(
        &dm,
        &mon,
        &[
            "dp",
            "register",
            "--name",
            "edge-b",
            "--kind",
            "internet-facing",
            "--folder",
            &folder_b,
            "--address",
            "https://edge-b.example.com",
        ],
    )
    .unwrap();
    assert_eq!(second.code, 0, "{second:?}");
    let after = wait_for(&monitoring, "both DPs after the restart", |answer| {
        answer.connected && names(answer) == ["branch-a", "edge-b"]
    })
    .await;
    assert!(
        after.connections >= 2,
        "the monitoring service reconnected: {after:?}"
    );
    assert!(
        monitoring.log().contains("reconnecting"),
        "{}",
        monitoring.log()
    );
}

#[tokio::test]
async fn console_reports_status_and_refuses_bad_input_clearly() {
    let (manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    let (dm, mon) = (manager.url(), monitoring.url());

    let status = console::run(&dm, &mon, &["status", "--output", "json"]).unwrap();
    assert_eq!(status.code, 0, "{status:?}");
    let status = status.json().unwrap();
    assert_eq!(status[0]["status"], "SERVING");
    assert_eq!(status[1]["status"], "SERVING");
    assert!(
        status[1]["detail"]
            .as_str()
            .unwrap()
            .contains("connected to"),
        "{status}"
    );

    let table = console::run(&dm, &mon, &["status"]).unwrap();
    assert!(
        table.stdout.contains("distribution manager") && table.stdout.contains("SERVING"),
        "{table:?}"
    );

    let bad = console::run(
        &dm,
        &mon,
        &[
            "dp",
            "register",
            "--name",
            "../etc",
            "--folder",
            "/srv/x",
            "--address",
            "https://x.example",
        ],
    )
    .unwrap();
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("InvalidArgument") && bad.stderr.contains("name"),
        "{bad:?}"
    );
    let http = console::run(
        &dm,
        &mon,
        &[
            "dp",
            "register",
            "--name",
            "plain",
            "--folder",
            "/srv/x",
            "--address",
            "http://x.example",
        ],
    )
    .unwrap();
    assert_eq!(http.code, 1, "{http:?}");
    assert!(http.stderr.contains("https://"), "{http:?}");
    let missing = console::run(&dm, &mon, &["dp", "show", "nope"]).unwrap();
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("NotFound"), "{missing:?}");
    let nothing = console::run(&dm, &mon, &["dp", "list", "--output", "json"])
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        nothing,
        serde_json::json!([]),
        "refused requests changed nothing"
    );

    let unreachable = console::run("http://127.0.0.1:9", &mon, &["status"]).unwrap();
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert!(
        unreachable.stdout.contains("UNREACHABLE"),
        "{unreachable:?}"
    );
}
