//! A device gets its software: two on-premises DPs in different boundary groups, an internet-facing DP and two
//! cloud DPs on Azurite. LocateContent applies every rule and says why; the content endpoint checks tokens and
//! ranges and refuses a stopped DP within a second; the agent falls to the next location on a corrupted copy,
//! resumes after the endpoint is killed and restarted, and writes verified files; usage is logged to the stores.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clouddp_e2e::azurite::{ACCOUNT, Azurite};
use clouddp_e2e::certs::{Validity, self_signed};
use clouddp_e2e::console::{self, TEST_SUBSCRIPTION};
use clouddp_e2e::content::write_random_file;
use clouddp_e2e::pki::TestCa;
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::client_policy_service_client::ClientPolicyServiceClient;
use clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient;

struct Site {
    _azurite: Azurite,
    manager: ServiceProcess,
    work: tempfile::TempDir,
    ca: PathBuf,
    source: PathBuf,
    folders: Vec<(String, PathBuf)>,
    content_id: String,
    deployments: std::collections::HashMap<&'static str, String>,
}

fn ok(manager: &ServiceProcess, args: &[&str]) -> serde_json::Value {
    console::json(&manager.url(), console::NO_MONITORING, args).unwrap()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

const ON_PREMISES: [(&str, &str, &str); 3] = [
    ("onprem-a", "hq", "on-premises"),
    ("onprem-b", "branch", "on-premises"),
    ("edge", "", "internet-facing"),
];

impl Site {
    async fn build(content_mb: usize) -> Self {
        Self::build_with(content_mb, &[]).await
    }

    /// A site whose distribution manager also gets `manager_env`.
    async fn build_with(content_mb: usize, manager_env: &[(&str, &str)]) -> Self {
        let azurite = Azurite::start().await.unwrap();
        let work = tempfile::tempdir().unwrap();
        let pki = TestCa::new("clouddp-test-ca", &work.path().join("pki")).unwrap();
        let hosts: Vec<String> = ON_PREMISES
            .iter()
            .map(|(name, _, _)| format!("{name}.contoso.test"))
            .collect();
        let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let endpoint_cert = pki.server("content-endpoint", &host_refs).unwrap();
        let mut spec = ServiceSpec::new(ServiceKind::DistributionManager)
            .env(
                "CLOUDDP_DM__CONTENT_ENDPOINT__CERTIFICATE",
                &text(&endpoint_cert.certificate),
            )
            .env(
                "CLOUDDP_DM__CONTENT_ENDPOINT__PRIVATE_KEY",
                &text(&endpoint_cert.private_key),
            )
            .env(
                "CLOUDDP_DM__CONTENT_ENDPOINT__USAGE_FLUSH_INTERVAL",
                "500ms",
            );
        for (name, value) in manager_env {
            spec = spec.env(name, value);
        }
        let manager = ServiceProcess::start(spec).await.unwrap();
        let port = manager.content_addr().port().to_string();

        let mut folders = Vec::new();
        for (name, group, kind) in ON_PREMISES {
            let folder = work.path().join(format!("dp-{name}"));
            let address = format!("https://{name}.contoso.test:{port}");
            let mut args = vec![
                "dp",
                "register",
                "--name",
                name,
                "--kind",
                kind,
                "--folder",
                folder.to_str().unwrap(),
                "--address",
                &address,
            ];
            if !group.is_empty() {
                args.extend(["--boundary-group", group]);
            }
            ok(&manager, &args);
            folders.push((name.to_owned(), folder));
        }
        let management = self_signed("clouddp management", Validity::Current).unwrap();
        let management_pfx = text(
            &management
                .write_pfx(work.path(), "management", "pw", true)
                .unwrap(),
        );
        let endpoint = azurite.blob_endpoint();
        for (service, region) in [("cdp-1", "westeurope"), ("cdp-2", "northeurope")] {
            let fqdn = format!("{service}.contoso.test");
            let service_cert = pki.server(service, &[fqdn.as_str()]).unwrap();
            ok(
                &manager,
                &[
                    "dp",
                    "install",
                    "--service-name",
                    service,
                    "--subscription",
                    TEST_SUBSCRIPTION,
                    "--region",
                    region,
                    "--account",
                    ACCOUNT,
                    "--blob-endpoint",
                    &endpoint,
                    "--emulator",
                    "--management-cert",
                    &management_pfx,
                    "--management-password",
                    "pw",
                    "--service-cert",
                    &text(&service_cert.certificate),
                    "--service-key",
                    &text(&service_cert.private_key),
                ],
            );
        }
        ok(
            &manager,
            &[
                "group",
                "create",
                "everything",
                "--dp",
                "onprem-a",
                "--dp",
                "onprem-b",
                "--dp",
                "edge",
                "--dp",
                "cdp-1",
                "--dp",
                "cdp-2",
            ],
        );
        let source = work.path().join("source");
        write_random_file(&source.join("setup.bin"), content_mb << 20, 0).unwrap();
        write_random_file(&source.join("docs/readme.txt"), 4096 + 17, 100).unwrap();
        std::fs::write(source.join("empty.cfg"), b"").unwrap();
        let content = ok(
            &manager,
            &[
                "content",
                "add",
                "--name",
                "office",
                "--type",
                "application",
                "--source",
                &text(&source),
            ],
        );
        let content_id = content["id"].as_str().unwrap().to_owned();
        let jobs = ok(
            &manager,
            &[
                "content",
                "distribute",
                "office",
                "--group",
                "everything",
                "--wait",
            ],
        );
        assert_eq!(jobs.as_array().unwrap().len(), 5, "{jobs}");
        assert!(
            jobs.as_array()
                .unwrap()
                .iter()
                .all(|job| job["state"] == "success"),
            "{jobs}"
        );

        let mut policy = ClientPolicyServiceClient::new(manager.channel());
        for (name, subnet, dp) in [
            ("hq", "10.1.0.0/16", "onprem-a"),
            ("branch", "10.2.0.0/16", "onprem-b"),
        ] {
            policy
                .create_boundary_group(pb::CreateBoundaryGroupRequest {
                    boundary_group: Some(pb::BoundaryGroup {
                        name: name.to_owned(),
                        subnets: vec![subnet.to_owned()],
                        distribution_point_ids: vec![dp.to_owned()],
                        ..Default::default()
                    }),
                })
                .await
                .unwrap();
        }
        policy
            .create_client_settings(pb::CreateClientSettingsRequest {
                settings: Some(pb::ClientSettings {
                    name: "Cloud allowed".to_owned(),
                    priority: 10,
                    allow_cloud_distribution_points_for_devices: true,
                    allow_cloud_distribution_points_for_users: true,
                    device_ids: vec!["laptop-yes".to_owned()],
                    user_ids: vec!["alice".to_owned()],
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        let mut deployments = std::collections::HashMap::new();
        for (key, fallback, mode, selection) in [
            (
                "fallback",
                true,
                pb::TaskSequenceDownloadMode::Unspecified,
                pb::CloudSelection::Random,
            ),
            (
                "no-fallback",
                false,
                pb::TaskSequenceDownloadMode::Unspecified,
                pb::CloudSelection::Random,
            ),
            (
                "ts-when-needed",
                true,
                pb::TaskSequenceDownloadMode::DownloadWhenNeeded,
                pb::CloudSelection::Random,
            ),
            (
                "ts-all-first",
                true,
                pb::TaskSequenceDownloadMode::DownloadAllBeforeStart,
                pb::CloudSelection::Random,
            ),
            (
                "nearest",
                false,
                pb::TaskSequenceDownloadMode::Unspecified,
                pb::CloudSelection::Nearest,
            ),
        ] {
            let deployment = policy
                .create_deployment(pb::CreateDeploymentRequest {
                    deployment: Some(pb::Deployment {
                        content_id: "office".to_owned(),
                        name: key.to_owned(),
                        allow_remote_fallback: fallback,
                        task_sequence_download_mode: mode.into(),
                        cloud_selection: selection.into(),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner();
            deployments.insert(key, deployment.id);
        }
        Self {
            _azurite: azurite,
            manager,
            ca: pki.certificate(),
            source,
            folders,
            content_id,
            deployments,
            work,
        }
    }

    async fn locate(
        &self,
        device: &str,
        user: &str,
        ip: &str,
        internet: bool,
        deployment: &str,
    ) -> Result<pb::LocateContentResponse, tonic::Status> {
        self.locate_with(device, user, ip, internet, deployment, Default::default())
            .await
    }

    async fn locate_with(
        &self,
        device: &str,
        user: &str,
        ip: &str,
        internet: bool,
        deployment: &str,
        latency: std::collections::HashMap<String, u32>,
    ) -> Result<pb::LocateContentResponse, tonic::Status> {
        ContentLocationServiceClient::new(self.manager.channel())
            .locate_content(pb::LocateContentRequest {
                device_id: device.to_owned(),
                user_id: user.to_owned(),
                ip_address: ip.to_owned(),
                network: if internet {
                    pb::ClientNetwork::Internet
                } else {
                    pb::ClientNetwork::Intranet
                }
                .into(),
                deployment_id: self.deployments[deployment].clone(),
                region_hint: "northeurope".to_owned(),
                latency_hints_ms: latency,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    fn dp_id(&self, name: &str) -> String {
        ok(&self.manager, &["dp", "show", name])["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn folder(&self, name: &str) -> &Path {
        &self.folders.iter().find(|(dp, _)| dp == name).unwrap().1
    }

    fn resolve_args(&self) -> Vec<String> {
        let port = self.manager.content_addr().port();
        ["onprem-a", "onprem-b", "edge", "cdp-1", "cdp-2"]
            .iter()
            .flat_map(|name| {
                [
                    "--resolve".to_owned(),
                    format!("{name}.contoso.test:{port}:127.0.0.1"),
                ]
            })
            .collect()
    }

    fn agent(&self, deployment: &str, extra: &[&str], to: &Path) -> std::process::Output {
        self.agent_command(deployment, extra, to).output().unwrap()
    }

    fn agent_command(&self, deployment: &str, extra: &[&str], to: &Path) -> Command {
        let mut command = Command::new(clouddp_e2e::bin("clouddp-agent"));
        command
            .args([
                "get",
                &self.deployments[deployment],
                "--to",
                &text(to),
                "--ca-cert",
                &text(&self.ca),
                "-o",
                "json",
            ])
            .args(self.resolve_args())
            .args(extra)
            .env("CLOUDDP_AGENT__ENDPOINT", self.manager.url())
            .env(
                "CLOUDDP_AGENT__CACHE_DIR",
                text(&self.work.path().join("agent-cache")),
            )
            .env_remove("CLOUDDP_AGENT_CONFIG");
        command
    }

    fn http(&self) -> reqwest::Client {
        let port = self.manager.content_addr().port();
        let mut builder = reqwest::Client::builder().tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&self.ca).unwrap()).unwrap(),
        );
        for name in ["onprem-a", "onprem-b", "edge", "cdp-1", "cdp-2"] {
            builder = builder.resolve(
                &format!("{name}.contoso.test"),
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            );
        }
        builder.build().unwrap()
    }
}

fn names(answer: &pb::LocateContentResponse) -> Vec<&str> {
    answer
        .locations
        .iter()
        .map(|location| location.distribution_point_name.as_str())
        .collect()
}

/// The location of DP `dp` in `answer` (the test fails when it is not offered).
fn offered<'a>(answer: &'a pb::LocateContentResponse, dp: &str) -> &'a pb::ContentLocation {
    answer
        .locations
        .iter()
        .find(|location| location.distribution_point_name == dp)
        .unwrap_or_else(|| panic!("{dp} is not offered: {:?}", names(answer)))
}

fn reasons(answer: &pb::LocateContentResponse, dp: &str) -> String {
    answer
        .decisions
        .iter()
        .find(|decision| decision.distribution_point_name == dp)
        .map(|decision| decision.reasons.join("; "))
        .unwrap_or_default()
}

fn sorted(mut items: Vec<&str>) -> Vec<&str> {
    items.sort_unstable();
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_location_rule_with_its_reasons() {
    let site = Site::build(2).await;

    // Intranet, in boundary group hq: preferred, then remote (fallback allowed), then the cloud DPs.
    let answer = site
        .locate("laptop-yes", "", "10.1.2.3", false, "fallback")
        .await
        .unwrap();
    let order = names(&answer);
    assert_eq!(order[..2], ["onprem-a", "onprem-b"], "{answer:?}");
    assert_eq!(sorted(order[2..].to_vec()), ["cdp-1", "cdp-2"]);
    assert!(reasons(&answer, "onprem-a").contains("preferred"));
    assert!(reasons(&answer, "onprem-b").contains("remote"));
    assert!(reasons(&answer, "edge").contains("serves internet clients"));
    assert!(reasons(&answer, "cdp-1").contains("fallback after on-premises DPs"));
    assert_eq!(answer.data_key.len(), 32);
    assert_eq!(answer.content_id, site.content_id);
    let manifest = answer.manifest.as_ref().unwrap();
    assert_eq!(manifest.files.len(), 3);
    assert_eq!(manifest.chunk_sha256.len() as u64, manifest.chunk_count);
    assert!(
        answer
            .locations
            .iter()
            .all(|location| location.access_token.starts_with("cdp1.")
                || location.access_token.starts_with("cdp2."))
    );
    let cloud = offered(&answer, "cdp-1");
    assert_eq!(cloud.server_name, "cdp-1.contoso.test");
    assert!(
        cloud.url.starts_with("https://cdp-1.contoso.test:"),
        "{}",
        cloud.url
    );

    // No fallback: the remote DP is left out, saying why.
    let answer = site
        .locate("laptop-yes", "", "10.1.2.3", false, "no-fallback")
        .await
        .unwrap();
    assert_eq!(names(&answer)[0], "onprem-a");
    assert!(!names(&answer).contains(&"onprem-b"));
    assert!(reasons(&answer, "onprem-b").contains("does not allow fallback"));

    // Client setting No (the default) → no cloud DP; a user's own setting decides for the user.
    let answer = site
        .locate("laptop-no", "", "10.1.2.3", false, "fallback")
        .await
        .unwrap();
    assert_eq!(names(&answer), ["onprem-a", "onprem-b"]);
    assert!(
        reasons(&answer, "cdp-2").contains("for device laptop-no is No"),
        "{answer:?}"
    );
    let answer = site
        .locate("laptop-no", "alice", "10.1.2.3", false, "fallback")
        .await
        .unwrap();
    assert_eq!(
        names(&answer).len(),
        4,
        "alice may use cloud DPs: {answer:?}"
    );
    let answer = site
        .locate("laptop-yes", "bob", "10.1.2.3", false, "fallback")
        .await
        .unwrap();
    assert_eq!(names(&answer), ["onprem-a", "onprem-b"]);
    assert!(reasons(&answer, "cdp-1").contains("for user bob is No"));

    // Task sequences: "when needed" never gets a cloud DP; "all before start" may.
    let answer = site
        .locate("laptop-yes", "", "10.2.0.9", false, "ts-when-needed")
        .await
        .unwrap();
    assert_eq!(names(&answer), ["onprem-b", "onprem-a"]);
    assert!(reasons(&answer, "cdp-1").contains("when needed"));
    let answer = site
        .locate("laptop-yes", "", "10.2.0.9", false, "ts-all-first")
        .await
        .unwrap();
    assert_eq!(names(&answer).len(), 4);

    // Internet client with an internet-facing DP: only it, never a cloud DP.
    let answer = site
        .locate("laptop-yes", "", "203.0.113.7", true, "fallback")
        .await
        .unwrap();
    assert_eq!(names(&answer), ["edge"]);
    assert!(reasons(&answer, "cdp-1").contains("never fall back to a cloud DP"));
    assert!(reasons(&answer, "onprem-a").contains("not reachable from the internet"));

    // A stopped DP never appears; with the internet DP stopped, internet clients get the cloud DPs.
    ok(&site.manager, &["dp", "stop", "cdp-1"]);
    let answer = site
        .locate("laptop-yes", "", "10.9.9.9", false, "no-fallback")
        .await
        .unwrap();
    assert_eq!(names(&answer), ["cdp-2"]);
    assert!(reasons(&answer, "cdp-1").contains("stopped"));
    assert!(reasons(&answer, "onprem-a").contains("outside the client's boundary groups"));
    ok(&site.manager, &["dp", "start", "cdp-1"]);
    ok(&site.manager, &["dp", "stop", "edge"]);
    let answer = site
        .locate("laptop-yes", "", "203.0.113.7", true, "fallback")
        .await
        .unwrap();
    assert_eq!(sorted(names(&answer)), ["cdp-1", "cdp-2"]);
    assert!(reasons(&answer, "edge").contains("stopped"));
    ok(&site.manager, &["dp", "start", "edge"]);

    // Nearest: by measured latency, else by the client's region.
    let answer = site
        .locate("laptop-yes", "", "10.9.9.9", false, "nearest")
        .await
        .unwrap();
    assert_eq!(
        names(&answer),
        ["cdp-2", "cdp-1"],
        "cdp-2 is in the client's region"
    );
    let latency = [(site.dp_id("cdp-1"), 9), (site.dp_id("cdp-2"), 80)]
        .into_iter()
        .collect();
    let answer = site
        .locate_with("laptop-yes", "", "10.9.9.9", false, "nearest", latency)
        .await
        .unwrap();
    assert_eq!(names(&answer), ["cdp-1", "cdp-2"]);
    assert!(reasons(&answer, "cdp-1").contains("measured latency 9 ms"));
    // Random: both orders show up.
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..40 {
        let answer = site
            .locate("laptop-yes", "", "10.9.9.9", false, "no-fallback")
            .await
            .unwrap();
        firsts.insert(answer.locations[0].distribution_point_name.clone());
    }
    assert_eq!(
        firsts.len(),
        2,
        "random selection offers both cloud DPs first"
    );

    // No location at all: FAILED_PRECONDITION with the reasons; bad input: INVALID_ARGUMENT.
    let none = site
        .locate("laptop-no", "", "10.9.9.9", false, "no-fallback")
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::FailedPrecondition);
    // The device hears a short reason and no names of the site's DPs.
    assert!(
        none.message()
            .contains("cloud access is not allowed for this device"),
        "{none:?}"
    );
    assert!(
        !["onprem-a", "onprem-b", "edge", "cdp-1", "cdp-2"]
            .iter()
            .any(|name| none.message().contains(name)),
        "{none:?}"
    );
    // The agent prints it.
    let refused = site.agent(
        "no-fallback",
        &["--device", "laptop-no", "--ip", "10.9.9.9"],
        &site.work.path().join("refused"),
    );
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    let printed = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        printed.contains("cloud access is not allowed for this device"),
        "{printed}"
    );

    let bad_ip = site
        .locate("laptop-yes", "", "10.1.2", false, "fallback")
        .await
        .unwrap_err();
    assert_eq!(bad_ip.code(), tonic::Code::InvalidArgument);
    assert!(bad_ip.message().contains("ip_address"));
    let no_device = site
        .locate("", "", "10.1.2.3", false, "fallback")
        .await
        .unwrap_err();
    assert_eq!(no_device.code(), tonic::Code::InvalidArgument);
    assert!(
        site.manager.unexpected_errors().is_empty(),
        "{:?}",
        site.manager.unexpected_errors()
    );
}

fn report(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "agent failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn same_files(source: &Path, to: &Path) {
    for file in ["setup.bin", "docs/readme.txt", "empty.cfg"] {
        assert_eq!(
            std::fs::read(source.join(file)).unwrap(),
            std::fs::read(to.join(file)).unwrap(),
            "{file} differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_checks_tokens_and_the_agent_survives_failures() {
    let content_mb = 24;
    let mut site = Site::build(content_mb).await;
    let http = site.http();

    // Tokens and ranges at the endpoint.
    let answer = site
        .locate("laptop-yes", "", "10.1.2.3", false, "fallback")
        .await
        .unwrap();
    let onprem_a = offered(&answer, "onprem-a").clone();
    let cdp_1 = offered(&answer, "cdp-1").clone();
    let get = |location: &pb::ContentLocation, token: &str, client: &str, range: &str| {
        let (http, url) = (http.clone(), location.url.clone());
        let (token, client, range) = (token.to_owned(), client.to_owned(), range.to_owned());
        async move { clouddp_e2e::content::ranged_get(&http, &url, &token, &client, &range).await }
    };
    let sealed_length = answer.manifest.as_ref().unwrap().sealed_length;
    let span = get(
        &onprem_a,
        &onprem_a.access_token,
        "laptop-yes",
        "bytes=1000000-3500000",
    )
    .await
    .unwrap();
    assert_eq!(span.status(), 206);
    assert_eq!(
        span.headers()["content-range"],
        format!("bytes 1000000-3500000/{sealed_length}").as_str()
    );
    assert_eq!(
        span.bytes().await.unwrap().len(),
        2_500_001,
        "a range across three chunks"
    );
    let whole = http
        .head(&cdp_1.url)
        .bearer_auth(&cdp_1.access_token)
        .header("x-clouddp-client", "laptop-yes")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(
        whole.headers()["content-length"],
        sealed_length.to_string().as_str()
    );
    let missing = http.get(&onprem_a.url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let other_dp = get(&onprem_a, &cdp_1.access_token, "laptop-yes", "bytes=0-9")
        .await
        .unwrap();
    assert_eq!(
        other_dp.status(),
        403,
        "a cloud DP's token is refused by an on-premises DP"
    );
    let other_client = get(&onprem_a, &onprem_a.access_token, "desktop-9", "bytes=0-9")
        .await
        .unwrap();
    assert_eq!(other_client.status(), 403);
    let mut tampered = onprem_a.access_token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'x' { b'y' } else { b'x' };
    let tampered = get(
        &onprem_a,
        &String::from_utf8(tampered).unwrap(),
        "laptop-yes",
        "bytes=0-9",
    )
    .await
    .unwrap();
    assert_eq!(tampered.status(), 401);
    let unsatisfiable = get(
        &onprem_a,
        &onprem_a.access_token,
        "laptop-yes",
        &format!("bytes={sealed_length}-"),
    )
    .await
    .unwrap();
    assert_eq!(unsatisfiable.status(), 416);

    // Devices asking at the same moment get tokens signed together (one signature for the batch): each is
    // accepted for its own device only. Rounds of 24 concurrent calls until a batch shows up.
    let mut batched = false;
    for _ in 0..20 {
        let answers = futures::future::join_all((0..24).map(|index| {
            let site = &site;
            async move {
                let device = format!("pc-batch-{index}");
                let answer = site
                    .locate(&device, "", "10.1.2.3", false, "fallback")
                    .await
                    .unwrap();
                let location = offered(&answer, "onprem-a").clone();
                (device, location)
            }
        }))
        .await;
        for (device, location) in &answers {
            batched |= location.access_token.starts_with("cdp2.");
            let own = get(location, &location.access_token, device, "bytes=0-9")
                .await
                .unwrap();
            assert_eq!(own.status(), 206, "{device}");
            let borrowed = get(
                location,
                &location.access_token,
                "pc-batch-other",
                "bytes=0-9",
            )
            .await
            .unwrap();
            assert_eq!(
                borrowed.status(),
                403,
                "{device}'s token used by another device"
            );
        }
        // Another member's proof with this token's claims is refused.
        let tokens: Vec<&str> = answers
            .iter()
            .map(|(_, location)| location.access_token.as_str())
            .filter(|token| token.starts_with("cdp2."))
            .collect();
        if let [first, second, ..] = tokens.as_slice() {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (first.split('.').collect(), second.split('.').collect());
            let mixed = format!("cdp2.{}.{}.{}.{}", a[1], b[2], b[3], a[4]);
            if mixed != *first {
                // Refused at the signature, before the device is even compared.
                let location = &answers[0].1;
                let refused = get(location, &mixed, "pc-batch-0", "bytes=0-9")
                    .await
                    .unwrap();
                assert_eq!(
                    refused.status(),
                    401,
                    "a token with another member's index and proof"
                );
            }
        }
        if batched {
            break;
        }
    }
    assert!(batched, "24 concurrent calls never shared a signature");

    // A rotated key keeps earlier tokens valid; new tokens carry the new key.
    let mut locations = ContentLocationServiceClient::new(site.manager.channel());
    let rotated = locations
        .rotate_signing_key(pb::RotateSigningKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    let keys = locations
        .list_signing_keys(pb::ListSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 2);
    assert!(keys[0].current && keys[0].key_id == rotated.key_id);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let old_token = get(&onprem_a, &onprem_a.access_token, "laptop-yes", "bytes=0-9")
        .await
        .unwrap();
    assert_eq!(
        old_token.status(),
        206,
        "tokens of the previous key stay valid"
    );

    // Stop refuses downloads within a second; content stays; start restores.
    ok(&site.manager, &["dp", "stop", "cdp-1"]);
    let refused_after = clouddp_e2e::content::until_unavailable(
        &http,
        &cdp_1.url,
        &cdp_1.access_token,
        "laptop-yes",
        Instant::now(),
        Duration::from_secs(1),
    )
    .await;
    ok(&site.manager, &["dp", "start", "cdp-1"]);
    let started_at = Instant::now();
    while get(&cdp_1, &cdp_1.access_token, "laptop-yes", "bytes=0-9")
        .await
        .unwrap()
        .status()
        != 206
    {
        assert!(
            started_at.elapsed() < Duration::from_secs(1),
            "not serving again after a start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("stop refused downloads after {refused_after:?}");

    // A corrupted byte in the preferred DP's copy: detected, and the next location serves.
    let sealed = site.folder("onprem-a").join(format!(
        "content/{}.sealed",
        site.content_id.replace('@', "/v")
    ));
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[5 << 20] ^= 0x01;
    std::fs::write(&sealed, &bytes).unwrap();
    let to = site.work.path().join("got-1");
    let got = report(&site.agent(
        "fallback",
        &["--device", "laptop-yes", "--ip", "10.1.2.3"],
        &to,
    ));
    assert_eq!(got["served_by"], "onprem-b", "{got}");
    assert_eq!(got["tier"], "remote");
    assert_eq!(got["failed"][0]["distribution_point"], "onprem-a");
    assert!(
        got["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("integrity check"),
        "{got}"
    );
    same_files(&site.source, &to);
    assert!(!to.join(".setup.bin.clouddp-partial").exists());

    // From a cloud DP on Azurite.
    let to = site.work.path().join("got-cloud");
    let got = report(&site.agent(
        "no-fallback",
        &["--device", "laptop-yes", "--ip", "10.9.9.9"],
        &to,
    ));
    assert_eq!(got["tier"], "cloud", "{got}");
    same_files(&site.source, &to);

    // A content of one chunk (its whole digest is taken by reading the written file back, not chunk by chunk).
    let small = site.work.path().join("small-source");
    write_random_file(&small.join("notes.txt"), 300_000, 7).unwrap();
    ok(
        &site.manager,
        &[
            "content",
            "add",
            "--name",
            "notes",
            "--type",
            "application",
            "--source",
            &text(&small),
        ],
    );
    ok(
        &site.manager,
        &[
            "content",
            "distribute",
            "notes",
            "--group",
            "everything",
            "--wait",
        ],
    );
    let deployment = ClientPolicyServiceClient::new(site.manager.channel())
        .create_deployment(pb::CreateDeploymentRequest {
            deployment: Some(pb::Deployment {
                content_id: "notes".to_owned(),
                name: "notes".to_owned(),
                allow_remote_fallback: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    site.deployments.insert("notes", deployment.id);
    let to = site.work.path().join("got-small");
    let got = report(&site.agent(
        "notes",
        &["--device", "laptop-yes", "--ip", "10.1.2.3"],
        &to,
    ));
    assert_eq!(got["bytes"], 300_000, "{got}");
    assert_eq!(
        std::fs::read(small.join("notes.txt")).unwrap(),
        std::fs::read(to.join("notes.txt")).unwrap()
    );

    // Internet client: the internet-facing DP fails, and no cloud DP is tried.
    std::fs::remove_file(site.folder("edge").join(format!(
        "content/{}.sealed",
        site.content_id.replace('@', "/v")
    )))
    .unwrap();
    let to = site.work.path().join("got-internet");
    let failed = site.agent(
        "fallback",
        &[
            "--device",
            "laptop-yes",
            "--network",
            "internet",
            "--ip",
            "203.0.113.7",
        ],
        &to,
    );
    assert_eq!(failed.status.code(), Some(5), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("edge (internet): HTTP 404"), "{stderr}");
    let failure: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(failure["exit_code"], 5, "{failure}");
    assert_eq!(
        failure["failed"].as_array().unwrap().len(),
        1,
        "only the internet DP was tried: {failure}"
    );
    assert_eq!(failure["failed"][0]["distribution_point"], "edge");
    assert!(
        !stderr.contains("cdp-"),
        "no cloud DP for an internet client offered an internet DP: {stderr}"
    );

    // The content endpoint killed mid-transfer: the agent keeps what it verified and resumes after a restart.
    let to = site.work.path().join("got-resumed");
    let first = site
        .agent_command(
            "no-fallback",
            &[
                "--device",
                "laptop-yes",
                "--ip",
                "10.1.2.3",
                "--retries",
                "0",
                "--max-rate",
                "8000000",
            ],
            &to,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = site
        .work
        .path()
        .join("agent-cache")
        .join(format!("{}/state.json", site.content_id.replace('@', "-v")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = std::fs::read(&state)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .map(|state| {
                state["done"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|done| **done == serde_json::json!(true))
                    .count()
            })
            .unwrap_or(0);
        if done >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the download never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    site.manager.kill9();
    let first = tokio::task::spawn_blocking(move || first.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status.code(), Some(5), "{first:?}");
    // One kept chunk damaged on the device between the runs (a byte in its middle; setup.bin is 1 MiB chunks
    // whichever files come before it): it is read back, fails its hash, and is fetched again, not trusted.
    let done: Vec<bool> =
        serde_json::from_value(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&state).unwrap()).unwrap()["done"].clone())
            .unwrap();
    let kept = done.iter().filter(|done| **done).count() as u64;
    let damaged = (1..done.len().min(content_mb - 1))
        .find(|index| done[*index])
        .expect("a kept chunk inside setup.bin") as u64;
    {
        use std::os::unix::fs::FileExt as _;
        let partial = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(to.join(".setup.bin.clouddp-partial"))
            .unwrap();
        let mut byte = [0_u8];
        let at = (damaged << 20) + (512 << 10);
        partial.read_exact_at(&mut byte, at).unwrap();
        partial.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    }
    site.manager.restart().await.unwrap();
    let got = report(&site.agent(
        "no-fallback",
        &["--device", "laptop-yes", "--ip", "10.1.2.3"],
        &to,
    ));
    let resumed = got["resumed_bytes"].as_u64().unwrap();
    assert!(
        resumed >= 3 << 20 && resumed < got["bytes"].as_u64().unwrap(),
        "resumed, not restarted: {got}"
    );
    assert!(
        resumed <= (kept - 1) << 20,
        "the damaged chunk {damaged} is not counted as kept ({kept} were): {got}"
    );
    same_files(&site.source, &to);

    // Usage: every byte served is appended to the DP's stores (hour folders), per content and client. The first
    // download came from onprem-a until the damaged chunk, then from onprem-b.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut served = 0_u64;
        let mut objects = 0;
        for dp in ["onprem-a", "onprem-b"] {
            for entry in walk(&site.folder(dp).join("usage")) {
                let relative = entry
                    .strip_prefix(site.folder(dp))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                assert_eq!(
                    relative.matches('/').count(),
                    5,
                    "usage/YYYY/MM/DD/HH/object: {relative}"
                );
                objects += 1;
                for line in std::fs::read_to_string(&entry).unwrap().lines() {
                    let record: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_eq!(record["dp"], site.dp_id(dp));
                    if record["client"] == "laptop-yes"
                        && record["content"] == site.content_id.as_str()
                    {
                        served += record["bytes"].as_u64().unwrap();
                    }
                }
            }
        }
        if objects > 0 && served >= sealed_length - 32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage logs count {served} bytes in {objects} objects"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        site.manager.unexpected_errors().is_empty(),
        "{:?}",
        site.manager.unexpected_errors()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_endpoint_alone_serves_the_same_site() {
    let site = Site::build(2).await;
    // The endpoint role over the same data dir and site key, on its own port, with the on-premises certificate.
    let port = clouddp_e2e::free_port();
    let endpoint_cert = std::fs::read_dir(site.work.path().join("pki"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name == "content-endpoint.crt")
        })
        .unwrap();
    let log = std::fs::File::create(site.work.path().join("endpoint-role.log")).unwrap();
    let mut role = Command::new(clouddp_e2e::bin("clouddp-distribution-manager"))
        .args([
            "--role",
            "content-endpoint",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--data-dir", &text(site.manager.data_dir())])
        // The site runs without authentication (its tokens name their device): the endpoint must be told.
        .arg("--plaintext")
        .env(
            "CLOUDDP_DM__CONTENT_ENDPOINT__CERTIFICATE",
            text(&endpoint_cert),
        )
        .env(
            "CLOUDDP_DM__CONTENT_ENDPOINT__PRIVATE_KEY",
            text(&endpoint_cert.with_extension("key")),
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut builder = reqwest::Client::builder().tls_certs_only(
        reqwest::Certificate::from_pem_bundle(&std::fs::read(&site.ca).unwrap()).unwrap(),
    );
    for name in ["onprem-a", "cdp-1"] {
        builder = builder.resolve(
            &format!("{name}.contoso.test"),
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        );
    }
    let http = builder.build().unwrap();
    let answer = site
        .locate("laptop-yes", "", "10.1.2.3", false, "fallback")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for name in ["onprem-a", "cdp-1"] {
        let location = offered(&answer, name);
        // Same path and token as on the manager's own endpoint, another port.
        let url = location.url.replace(
            &format!(":{}/", site.manager.content_addr().port()),
            &format!(":{port}/"),
        );
        loop {
            let response = clouddp_e2e::content::ranged_get(
                &http,
                &url,
                &location.access_token,
                "laptop-yes",
                "bytes=0-1048607",
            )
            .await;
            match response {
                Ok(response) if response.status() == 206 => {
                    assert_eq!(response.bytes().await.unwrap().len(), 1_048_608);
                    break;
                }
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "the endpoint role does not serve {name}: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // A stop on the control plane reaches the separate endpoint within a second.
    ok(&site.manager, &["dp", "stop", "cdp-1"]);
    let stopped = Instant::now();
    let location = offered(&answer, "cdp-1");
    let url = location.url.replace(
        &format!(":{}/", site.manager.content_addr().port()),
        &format!(":{port}/"),
    );
    clouddp_e2e::content::until_unavailable(
        &http,
        &url,
        &location.access_token,
        "laptop-yes",
        stopped,
        Duration::from_secs(1),
    )
    .await;
    let _ = role.kill();
    let _ = role.wait();
    let log = std::fs::read_to_string(site.work.path().join("endpoint-role.log")).unwrap();
    assert!(log.contains("content endpoint only"), "{log}");
    assert!(
        !log.contains("gRPC server listening"),
        "the endpoint role serves no gRPC: {log}"
    );
}

/// With OpenTelemetry on, a download is one trace: the agent sends `traceparent` with LocateContent and with every
/// range request, continuing the trace it was started in (`TRACEPARENT`) or starting one, and reports its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_one_trace_from_the_agent_to_the_content_endpoint() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT_ID: &str = "00f067aa0ba902b7";
    let collector = clouddp_e2e::otlp::Collector::start().await.unwrap();
    let mut site =
        Site::build_with(2, &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())]).await;
    let continued = report(
        &site
            .agent_command(
                "fallback",
                &["--device", "laptop-yes", "--ip", "10.1.2.3"],
                &site.work.path().join("got-continued"),
            )
            .env("TRACEPARENT", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
            .output()
            .unwrap(),
    );
    assert_eq!(continued["trace_id"], TRACE_ID, "{continued}");
    let fresh = report(
        &site
            .agent_command(
                "fallback",
                &["--device", "laptop-yes", "--ip", "10.1.2.3"],
                &site.work.path().join("got-fresh"),
            )
            .env_remove("TRACEPARENT")
            .output()
            .unwrap(),
    );
    let fresh_id = fresh["trace_id"].as_str().unwrap().to_owned();
    assert!(
        fresh_id.len() == 32 && fresh_id != TRACE_ID,
        "a new trace for a download started outside one: {fresh}"
    );

    // Stopping flushes the exporter.
    site.manager.terminate(Duration::from_secs(5)).unwrap();
    for trace_id in [TRACE_ID, fresh_id.as_str()] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (locate, ranges) = loop {
            let spans: Vec<_> = collector
                .spans()
                .into_iter()
                .filter(|span| span.trace_id == trace_id)
                .collect();
            let locate = spans
                .iter()
                .find(|span| span.name.ends_with("/LocateContent"))
                .cloned();
            let ranges: Vec<_> = spans
                .into_iter()
                .filter(|span| span.name == "GET /content/{content_id}/{file}")
                .collect();
            if let Some(locate) = locate
                && !ranges.is_empty()
            {
                break (locate, ranges);
            }
            assert!(
                Instant::now() < deadline,
                "no LocateContent and content spans in trace {trace_id}: {:#?}",
                collector.spans()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(locate.service, "clouddp-distribution-manager");
        // The agent's own span is the parent of every call of the download; it is not the caller's.
        assert_ne!(locate.parent_span_id, PARENT_ID);
        assert_eq!(locate.parent_span_id.len(), 16);
        for range in &ranges {
            assert_eq!(range.service, "clouddp-distribution-manager");
            assert_eq!(range.parent_span_id, locate.parent_span_id, "{range:?}");
        }
    }
}
