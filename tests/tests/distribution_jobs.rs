//! Distribution jobs are claimed by a compare-and-set in the database: many small jobs run by several workers at
//! once each run exactly once (one "distribution succeeded" line and one attempt per job).

use std::time::{Duration, Instant};

use clouddp_e2e::console;
use clouddp_e2e::content::write_random_file;
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;

const DPS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_to_many_folder_dps_runs_exactly_once() {
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .env("CLOUDDP_DM__DISTRIBUTION__JOB_CONCURRENCY", "16"),
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut client = DistributionPointServiceClient::new(manager.channel());
    let mut group = vec!["group".to_owned(), "create".to_owned(), "many".to_owned()];
    for index in 0..DPS {
        let name = format!("branch-{index:03}");
        client
            .register_distribution_point(pb::RegisterDistributionPointRequest {
                name: name.clone(),
                kind: pb::DistributionPointKind::OnPremises.into(),
                folder_path: work
                    .path()
                    .join("stores")
                    .join(&name)
                    .to_string_lossy()
                    .into_owned(),
                address: format!("https://{name}.corp.example"),
                ..Default::default()
            })
            .await
            .unwrap();
        group.extend(["--dp".to_owned(), name]);
    }
    let run = |args: &[&str]| {
        let output = console::run(&manager.url(), console::NO_MONITORING, args).unwrap();
        assert_eq!(output.code, 0, "{args:?}: {output:?}");
        output
    };
    run(&group.iter().map(String::as_str).collect::<Vec<_>>());
    let source = work.path().join("small");
    write_random_file(&source.join("tool.exe"), 64 << 10, 3).unwrap();
    run(&[
        "content",
        "add",
        "--name",
        "small",
        "--type",
        "application",
        "--source",
        source.to_str().unwrap(),
    ]);
    run(&["content", "distribute", "small", "--group", "many"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    let jobs = loop {
        let jobs = run(&["content", "status", "small", "-o", "json"])
            .json()
            .unwrap();
        let jobs = jobs.as_array().unwrap().clone();
        if jobs.len() == DPS && jobs.iter().all(|job| job["state"] == "success") {
            break jobs;
        }
        assert!(Instant::now() < deadline, "not all succeeded: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let twice: Vec<_> = jobs.iter().filter(|job| job["attempts"] != 1).collect();
    assert!(twice.is_empty(), "jobs run more than once: {twice:?}");
    let succeeded = manager.log().matches("distribution succeeded").count();
    assert_eq!(succeeded, DPS, "one success per job");
}
