//! The contract as a foreign client sees it: `tests/interop/check.py` generates Python stubs from proto/ with
//! grpcio-tools and checks gzip requests, unknown enum values, an alert cursor ahead of the newest event,
//! deadlines and DP revisions against the real services. The deadline rules are checked from Rust too, with the
//! header alone (no client-side timer that would answer for the server).

use std::time::{Duration, Instant};

use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_generated_from_the_protos_gets_the_documented_answers() {
    let (manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    let folders = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(clouddp_e2e::tools_dir().join("py/bin/python"))
        .arg(clouddp_e2e::repo_root().join("tests/interop/check.py"))
        .args(["--dm", &manager.addr().to_string()])
        .args(["--monitoring", &monitoring.addr().to_string()])
        .args(["--folder", folders.path().to_str().unwrap()])
        .output()
        .expect("run tests/interop/check.py with the tools' Python (./tests/run installs grpcio)");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.lines().count() >= 12, "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_its_bad_inputs_with_the_documented_code() {
    let (manager, monitoring) = clouddp_e2e::start_both().await.unwrap();
    let output = std::process::Command::new(clouddp_e2e::tools_dir().join("py/bin/python"))
        .arg(clouddp_e2e::repo_root().join("tests/interop/conformance.py"))
        .args(["--dm", &manager.addr().to_string()])
        .args(["--monitoring", &monitoring.addr().to_string()])
        .output()
        .expect(
            "run tests/interop/conformance.py with the tools' Python (./tests/run installs grpcio)",
        );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every RPC of the descriptors has cases or a reason for none; a case per line.
    assert!(
        printed
            .lines()
            .filter(|line| line.starts_with("ok "))
            .count()
            >= 100,
        "{printed}"
    );
}

/// Sends one gRPC call with an empty message and `grpc-timeout: timeout` over a bare HTTP/2 connection (no
/// client-side timer); returns the grpc-status the server sent (headers or trailers) and how long it took.
async fn raw_call(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: &str,
) -> (Option<String>, Duration) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let started = Instant::now();
    let mut client = client.ready().await.unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = response.await.unwrap();
    if let Some(status) = response.headers().get("grpc-status") {
        return (Some(status.to_str().unwrap().to_owned()), started.elapsed());
    }
    let mut body = response.into_body();
    while let Some(frame) = body.data().await {
        let frame = frame.unwrap();
        let _ = body.flow_control().release_capacity(frame.len());
    }
    let trailers = body.trailers().await.unwrap();
    let status = trailers
        .as_ref()
        .and_then(|trailers| trailers.get("grpc-status"))
        .map(|status| status.to_str().unwrap().to_owned());
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_end_calls_and_streams_with_deadline_exceeded() {
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let deadline_exceeded = Some((tonic::Code::DeadlineExceeded as i32).to_string());
    // `grpc-timeout: 1n`: over before anything can answer.
    let (status, _) = raw_call(
        manager.addr(),
        "/clouddp.v1.DistributionPointService/ListDistributionPoints",
        "1n",
    )
    .await;
    assert_eq!(status, deadline_exceeded);
    // A watch stream with a 700 ms deadline ends then, with DEADLINE_EXCEEDED in its trailers.
    let (status, took) = tokio::time::timeout(
        Duration::from_secs(10),
        raw_call(
            manager.addr(),
            "/clouddp.v1.DistributionPointService/WatchDistributionPoints",
            "700m",
        ),
    )
    .await
    .expect("the stream outlived its deadline by 10 s");
    assert_eq!(status, deadline_exceeded);
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Without a deadline, a quick call answers OK.
    let (status, _) = raw_call(
        manager.addr(),
        "/clouddp.v1.DistributionPointService/ListDistributionPoints",
        "10S",
    )
    .await;
    assert_eq!(status, Some("0".to_owned()));
}

/// `buf breaking` holds proto/ to the previous commit's (the last commit's when the clone has no history): a
/// renumbered, retyped or removed field fails here.
#[test]
fn the_protos_stay_wire_and_json_compatible_with_the_previous_commit() {
    let root = clouddp_e2e::repo_root();
    let has_parent = std::process::Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "HEAD~1"])
        .current_dir(&root)
        .output()
        .is_ok_and(|output| output.status.success());
    let reference = if has_parent { "HEAD~1" } else { "HEAD" };
    if !has_parent {
        eprintln!("this clone has no parent commit: comparing proto/ with HEAD only");
    }
    let output = std::process::Command::new(clouddp_e2e::tools_dir().join("node_modules/.bin/buf"))
        .args(["breaking", "--against"])
        .arg(format!(
            "{}#subdir=proto,ref={reference}",
            root.join(".git").display()
        ))
        .current_dir(root.join("proto"))
        .output()
        .expect("run buf (./tests/run installs it)");
    assert!(
        output.status.success(),
        "buf breaking against {reference}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
