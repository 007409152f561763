//! Identity and access on both services as they start with no setup: mutual TLS with the site's own CA, the
//! first administrator's console configuration, one permission per RPC enforced for every role, and the attacks
//! that worked before (reading any file, emptying any directory, locating content as another device) refused.

use std::path::Path;
use std::time::{Duration, Instant};

use clouddp_e2e::identity::{self, Site};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec, console};
use clouddp_platform::access::{PrincipalKind, RPC_PERMISSIONS, Role};
use prost::Message as _;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Request and response bodies as raw bytes: an empty body is a valid (empty) message of every type.
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }

    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

/// One RPC of the contract.
#[derive(Debug, Clone)]
struct Rpc {
    path: String,
    service: String,
    client_streaming: bool,
    server_streaming: bool,
}

fn contract() -> Vec<Rpc> {
    let set = prost_types::FileDescriptorSet::decode(clouddp_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                rpcs.push(Rpc {
                    path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    service: format!("{}.{}", file.package(), service.name()),
                    client_streaming: method.client_streaming(),
                    server_streaming: method.server_streaming(),
                });
            }
        }
    }
    assert!(
        rpcs.len() > 50,
        "the descriptor set lost its RPCs: {}",
        rpcs.len()
    );
    rpcs
}

/// Calls `rpc` with an empty request: `Ok` when the call passed authorization (whatever the handler then
/// answered, or a stream that opened), the status when authorization refused it.
async fn call(channel: &Channel, rpc: &Rpc) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path: http::uri::PathAndQuery = rpc.path.parse().unwrap();
    let answer = async {
        match (rpc.client_streaming, rpc.server_streaming) {
            (false, false) => grpc
                .unary(tonic::Request::new(Vec::new()), path, Raw)
                .await
                .map(drop),
            (false, true) => grpc
                .server_streaming(tonic::Request::new(Vec::new()), path, Raw)
                .await
                .map(drop),
            (true, false) => grpc
                .client_streaming(
                    tonic::Request::new(tokio_stream::iter(vec![Vec::new()])),
                    path,
                    Raw,
                )
                .await
                .map(drop),
            (true, true) => grpc
                .streaming(
                    tonic::Request::new(tokio_stream::iter(vec![Vec::new()])),
                    path,
                    Raw,
                )
                .await
                .map(drop),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        // A stream that stays open passed authorization.
        Err(_) => Ok(()),
        Ok(Ok(())) => Ok(()),
        Ok(Err(status))
            if matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ) =>
        {
            Err(status)
        }
        Ok(Err(_)) => Ok(()),
    }
}

/// A distribution manager and a monitoring service as a new admin starts them: no TLS flags, no plaintext.
async fn secure_site(extra_dm_args: &[String]) -> (ServiceProcess, ServiceProcess, Site) {
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .args(extra_dm_args.iter().cloned())
            .tls(),
    )
    .await
    .unwrap();
    let site = Site::of(&manager).unwrap();
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args([
                "--distribution-manager".to_owned(),
                manager.url(),
                "--credentials".to_owned(),
                site.monitoring().display().to_string(),
            ])
            .tls(),
    )
    .await
    .unwrap();
    (manager, monitoring, site)
}

fn admin_console(
    manager: &ServiceProcess,
    monitoring: &ServiceProcess,
    site: &Site,
    args: &[&str],
) -> console::ConsoleOutput {
    let config = site.admin_config().display().to_string();
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    console::run(&manager.url(), &monitoring.url(), &all).unwrap()
}

#[tokio::test]
async fn every_rpc_is_allowed_to_exactly_the_roles_the_table_gives_it() {
    let (manager, monitoring, site) = secure_site(&[]).await;
    let ca = site.first_admin();
    for (name, role) in [
        ("infra", "infrastructure-administrator"),
        ("apps", "application-administrator"),
        ("analyst", "read-only-analyst"),
    ] {
        let principal = format!("admin/{name}");
        let granted = admin_console(
            &manager,
            &monitoring,
            &site,
            &["access", "grant", &principal, role],
        );
        assert_eq!(granted.code, 0, "{granted:?}");
    }
    let listed = admin_console(
        &manager,
        &monitoring,
        &site,
        &["access", "list", "-o", "json"],
    );
    assert_eq!(listed.code, 0, "{listed:?}");
    let listed = listed.json().unwrap();
    assert_eq!(listed["bindings"].as_array().unwrap().len(), 4, "{listed}");

    let principals: Vec<(&str, Option<std::path::PathBuf>, Vec<Role>)> = vec![
        ("no credential", None, vec![]),
        (
            "admin/admin",
            Some(site.first_admin()),
            vec![Role::FullAdministrator],
        ),
        (
            "admin/infra",
            Some(site.credential(PrincipalKind::Admin, "infra").unwrap()),
            vec![Role::InfrastructureAdministrator],
        ),
        (
            "admin/apps",
            Some(site.credential(PrincipalKind::Admin, "apps").unwrap()),
            vec![Role::ApplicationAdministrator],
        ),
        (
            "admin/analyst",
            Some(site.credential(PrincipalKind::Admin, "analyst").unwrap()),
            vec![Role::ReadOnlyAnalyst],
        ),
        (
            "admin/nobody",
            Some(site.credential(PrincipalKind::Admin, "nobody").unwrap()),
            vec![],
        ),
        (
            "device/pc-0042",
            Some(site.credential(PrincipalKind::Device, "pc-0042").unwrap()),
            vec![Role::Device],
        ),
        (
            "service/monitoring",
            Some(site.monitoring()),
            vec![Role::MonitoringService],
        ),
        (
            "service/content-endpoint",
            Some(
                site.credential(PrincipalKind::Service, "content-endpoint")
                    .unwrap(),
            ),
            vec![Role::ContentEndpoint],
        ),
    ];
    // Monitoring reads the bindings from the manager: wait until it knows the analyst.
    let analyst = identity::channel(&monitoring.url(), &ca, principals[4].1.as_deref())
        .await
        .unwrap();
    let monitoring_rpc = contract()
        .into_iter()
        .find(|rpc| rpc.path.ends_with("MonitoringService/ListAlerts"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&analyst, &monitoring_rpc).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "monitoring never learned the role bindings"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut checked = 0;
    let mut wrong = Vec::new();
    for (label, credential, roles) in &principals {
        let dm = identity::channel(&manager.url(), &ca, credential.as_deref())
            .await
            .unwrap();
        let mon = identity::channel(&monitoring.url(), &ca, credential.as_deref())
            .await
            .unwrap();
        for rpc in contract() {
            let permission = RPC_PERMISSIONS
                .iter()
                .find(|(path, _)| *path == rpc.path)
                .map(|(_, permission)| *permission)
                .unwrap_or_else(|| panic!("{} has no entry in the permission table", rpc.path));
            let channel = if clouddp_proto::MONITORING_SERVICES.contains(&rpc.service.as_str()) {
                &mon
            } else {
                assert!(
                    clouddp_proto::DISTRIBUTION_MANAGER_SERVICES.contains(&rpc.service.as_str()),
                    "{} is served by no service",
                    rpc.service
                );
                &dm
            };
            let outcome = call(channel, &rpc).await;
            checked += 1;
            // Enrollment carries its own credential (a token): every caller reaches the handler.
            let expected_allowed =
                !permission.needs_certificate() || roles.iter().any(|role| role.allows(permission));
            let verdict = match (&outcome, credential.is_some(), expected_allowed) {
                (Ok(()), false, true) => None,
                (Err(status), false, false) if status.code() == Code::Unauthenticated => None,
                (Ok(()), true, true) => None,
                (Err(status), true, false)
                    if status.code() == Code::PermissionDenied
                        && status.message().contains(permission.name())
                        && Role::holding(permission)
                            .iter()
                            .all(|holder| status.message().contains(holder.name())) =>
                {
                    None
                }
                _ => Some(format!(
                    "{label} {}: expected {}, got {outcome:?}",
                    rpc.path,
                    if expected_allowed {
                        "allowed"
                    } else if credential.is_none() {
                        "UNAUTHENTICATED"
                    } else {
                        "PERMISSION_DENIED naming the permission and its roles"
                    }
                )),
            };
            wrong.extend(verdict);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} calls wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Health stays open to probes without a certificate.
    let anonymous = identity::channel(&manager.url(), &ca, None).await.unwrap();
    tonic_health::pb::health_client::HealthClient::new(anonymous)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_revoked_role_is_refused_within_a_second_on_both_services() {
    let (manager, monitoring, site) = secure_site(&[]).await;
    let ca = site.first_admin();
    let granted = admin_console(
        &manager,
        &monitoring,
        &site,
        &["access", "grant", "admin/bob", "read-only-analyst"],
    );
    assert_eq!(granted.code, 0, "{granted:?}");
    let bob = site.credential(PrincipalKind::Admin, "bob").unwrap();
    let rpcs = contract();
    let list_dps = rpcs
        .iter()
        .find(|rpc| rpc.path.ends_with("/ListDistributionPoints"))
        .unwrap();
    let list_alerts = rpcs
        .iter()
        .find(|rpc| rpc.path.ends_with("/ListAlerts"))
        .unwrap();
    let dm = identity::channel(&manager.url(), &ca, Some(&bob))
        .await
        .unwrap();
    let mon = identity::channel(&monitoring.url(), &ca, Some(&bob))
        .await
        .unwrap();
    call(&dm, list_dps).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&mon, list_alerts).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "monitoring never learned bob's role"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Streams bob opened before the revocation.
    let mut watch =
        clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient::new(
            dm.clone(),
        )
        .watch_distribution_points(clouddp_proto::v1::WatchDistributionPointsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut alerts =
        clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient::new(mon.clone())
            .subscribe_alerts(clouddp_proto::v1::SubscribeAlertsRequest::default())
            .await
            .unwrap()
            .into_inner();

    let revoked = admin_console(
        &manager,
        &monitoring,
        &site,
        &["access", "revoke", "admin/bob", "read-only-analyst"],
    );
    assert_eq!(revoked.code, 0, "{revoked:?}");
    let revoked_at = Instant::now();
    // Both streams end with PERMISSION_DENIED within a second, with no further event.
    let ended = tokio::time::timeout(Duration::from_secs(1), end_of(&mut watch))
        .await
        .expect("the watch stream outlived the revocation by a second");
    assert_eq!(
        ended.map(|status| status.code()),
        Some(Code::PermissionDenied)
    );
    let ended = tokio::time::timeout(
        Duration::from_secs(2) - revoked_at.elapsed().min(Duration::from_secs(1)),
        end_of(&mut alerts),
    )
    .await
    .expect("the alert stream outlived the revocation");
    assert_eq!(
        ended.map(|status| status.code()),
        Some(Code::PermissionDenied)
    );
    println!(
        "open streams ended {:?} after the revocation",
        revoked_at.elapsed()
    );
    assert_eq!(
        call(&dm, list_dps).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    loop {
        match call(&mon, list_alerts).await {
            Err(status) if status.code() == Code::PermissionDenied => break,
            _ => assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "monitoring still served bob after a second"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "revocation reached monitoring in {:?}",
        revoked_at.elapsed()
    );

    // The last Full Administrator cannot be revoked, so the site is never left without one.
    let last = admin_console(
        &manager,
        &monitoring,
        &site,
        &["access", "revoke", "admin/admin", "full-administrator"],
    );
    assert_eq!(last.code, 1, "{last:?}");
    assert!(last.stderr.contains("last Full Administrator"), "{last:?}");
}

/// Reads `stream` to its end: the status it ended with, or `None` when it ended cleanly.
async fn end_of<T>(stream: &mut tonic::Streaming<T>) -> Option<tonic::Status> {
    loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(status) => return Some(status),
        }
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn files_outside_the_roots_are_neither_read_nor_deleted_and_devices_are_only_themselves() {
    let roots = tempfile::tempdir().unwrap();
    let sources = roots.path().join("sources");
    let stores = roots.path().join("stores");
    std::fs::create_dir_all(&sources).unwrap();
    std::fs::create_dir_all(&stores).unwrap();
    let (manager, monitoring, site) = secure_site(&[
        "--source-root".to_owned(),
        sources.display().to_string(),
        "--store-root".to_owned(),
        stores.display().to_string(),
    ])
    .await;
    let admin = |args: &[&str]| admin_console(&manager, &monitoring, &site, args);

    // Reading any file: refused outside the source roots, through a link, and through a link deep inside.
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret.txt"), b"not for devices");
    let secret = outside.path().join("secret.txt").display().to_string();
    let site_key = manager.data_dir().join("site.key").display().to_string();
    for path in [secret.as_str(), site_key.as_str(), "/etc/passwd"] {
        let refused = admin(&[
            "content",
            "add",
            "--name",
            "steal",
            "--type",
            "application",
            "--source",
            path,
        ]);
        assert_eq!(refused.code, 1, "{path}: {refused:?}");
        assert!(
            refused.stderr.contains("not inside a content source root"),
            "{refused:?}"
        );
    }
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), sources.join("link.txt"))
        .unwrap();
    write(&sources.join("app/bin/tool.exe"), b"tool");
    std::os::unix::fs::symlink(outside.path(), sources.join("app/bin/more")).unwrap();
    for path in [sources.join("link.txt"), sources.join("app")] {
        let path = path.display().to_string();
        let refused = admin(&[
            "content",
            "add",
            "--name",
            "steal",
            "--type",
            "application",
            "--source",
            &path,
        ]);
        assert_eq!(refused.code, 1, "{path}: {refused:?}");
        assert!(refused.stderr.contains("link"), "{refused:?}");
    }
    let dotted = format!("{}/../{}", sources.display(), outside.path().display());
    let refused = admin(&[
        "content",
        "add",
        "--name",
        "steal",
        "--type",
        "application",
        "--source",
        &dotted,
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");

    // Emptying any directory: a folder DP lives only below a store root, never over the manager's data.
    let data_dir = manager.data_dir().display().to_string();
    for folder in ["/", "/etc", data_dir.as_str(), stores.to_str().unwrap()] {
        let refused = admin(&[
            "dp",
            "register",
            "--name",
            "wipe",
            "--folder",
            folder,
            "--address",
            "https://wipe.example",
        ]);
        assert_eq!(refused.code, 1, "{folder}: {refused:?}");
        assert!(refused.stderr.contains("folder_path"), "{refused:?}");
    }

    // A DP's delete removes what clouddp wrote there and nothing else.
    let folder = stores.join("branch");
    let registered = admin(&[
        "dp",
        "register",
        "--name",
        "branch",
        "--folder",
        folder.to_str().unwrap(),
        "--address",
        "https://branch.example",
    ]);
    assert_eq!(registered.code, 0, "{registered:?}");
    std::fs::remove_file(sources.join("app/bin/more")).unwrap();
    let added = admin(&[
        "content",
        "add",
        "--name",
        "app",
        "--type",
        "application",
        "--source",
        sources.join("app").to_str().unwrap(),
    ]);
    assert_eq!(added.code, 0, "{added:?}");
    let distributed = admin(&["content", "distribute", "app", "--dp", "branch", "--wait"]);
    assert_eq!(distributed.code, 0, "{distributed:?}");
    let foreign = [
        folder.join("content/notes.txt"),
        folder.join("usage/readme.txt"),
        folder.join("keep.txt"),
    ];
    for path in &foreign {
        write(path, b"someone else's");
    }
    let sealed: Vec<_> = walk(&folder.join("content"))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "sealed"))
        .collect();
    assert_eq!(sealed.len(), 1, "{sealed:?}");
    let deleted = admin(&["dp", "delete", "branch", "--yes"]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(
        !sealed[0].exists(),
        "the sealed content stays after the delete"
    );
    for path in &foreign {
        assert!(path.exists(), "{} was deleted", path.display());
    }

    // A device locates content only as itself; an administrator locates nothing.
    let ca = site.first_admin();
    let device = site.credential(PrincipalKind::Device, "pc-0042").unwrap();
    let channel = identity::channel(&manager.url(), &ca, Some(&device))
        .await
        .unwrap();
    let mut locator =
        clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient::new(
            channel,
        );
    let other = locator
        .locate_content(clouddp_proto::v1::LocateContentRequest {
            device_id: "pc-0099".to_owned(),
            deployment_id: "dep-any".to_owned(),
            ip_address: "10.0.0.1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(other.message().contains("only as itself"), "{other:?}");
    let itself = locator
        .locate_content(clouddp_proto::v1::LocateContentRequest {
            deployment_id: "dep-none".to_owned(),
            ip_address: "10.0.0.1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        itself.code(),
        Code::NotFound,
        "the device's own call reaches the handler: {itself:?}"
    );
    let admin_channel = identity::channel(&manager.url(), &ca, Some(&ca))
        .await
        .unwrap();
    let refused =
        clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient::new(
            admin_channel,
        )
        .get_store_access(clouddp_proto::v1::GetStoreAccessRequest {
            id: "any".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("Monitoring Service"),
        "{refused:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn the_first_start_writes_a_console_configuration_that_works_with_no_flags() {
    let (manager, monitoring, site) = secure_site(&[]).await;
    let config = site.admin_config();
    use std::os::unix::fs::PermissionsExt as _;
    for secret in [
        config.clone(),
        site.first_admin().join("key.pem"),
        manager.data_dir().join("pki/ca.key"),
    ] {
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", secret.display());
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("endpoint = \"https://127.0.0.1:"), "{text}");
    // The console with CLOUDDP_CONFIG alone (the monitoring endpoint given, since this one's port is free).
    let listed = std::process::Command::new(clouddp_e2e::bin("clouddp"))
        .args(["--monitoring-endpoint", &monitoring.url(), "status"])
        .env("CLOUDDP_CONFIG", &config)
        .env_remove("CLOUDDP_ENDPOINT")
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("SERVING") || text.contains("serving"),
        "{text}"
    );
    // Monitoring follows the manager with the credential the site gave it.
    let channel = identity::channel(
        &monitoring.url(),
        &site.first_admin(),
        Some(&site.first_admin()),
    )
    .await
    .unwrap();
    let mut client =
        clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let followed = client
            .list_followed_distribution_points(
                clouddp_proto::v1::ListFollowedDistributionPointsRequest {},
            )
            .await
            .unwrap()
            .into_inner();
        if followed.connected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "monitoring never connected:\n{}",
            monitoring.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Without the configuration the console says how to get one.
    let bare = console::run(&manager.url(), &monitoring.url(), &["dp", "list"]).unwrap();
    assert_eq!(bare.code, 3, "{bare:?}");
    assert!(bare.stderr.contains("CLOUDDP_CONFIG"), "{bare:?}");
}

#[tokio::test]
async fn grpcurl_works_with_the_documented_certificate_flags() {
    use clouddp_e2e::grpcurl;
    let (manager, _monitoring, site) = secure_site(&[]).await;
    let admin = site.first_admin();
    let file = |name: &str| admin.join(name).display().to_string();
    let address = format!("127.0.0.1:{}", manager.addr().port());
    let with = |args: &[&str]| -> Vec<String> {
        let mut all = vec![
            "-cacert".to_owned(),
            file("ca.pem"),
            "-cert".to_owned(),
            file("cert.pem"),
            "-key".to_owned(),
            file("key.pem"),
        ];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        all
    };
    let listed = grpcurl::ok(with(&[&address, "list"])).unwrap();
    assert!(listed.contains("clouddp.v1.AccessService"), "{listed}");
    let described = grpcurl::ok(with(&[
        &address,
        "describe",
        "clouddp.v1.DistributionPointService",
    ]))
    .unwrap();
    assert!(
        described.contains("RegisterDistributionPoint"),
        "{described}"
    );
    let body = format!(
        r#"{{"name":"dp1","kind":"DISTRIBUTION_POINT_KIND_ON_PREMISES","folder_path":{:?},"address":"https://dp1.lab:7443"}}"#,
        clouddp_e2e::store_folder(&manager, "dp1")
    );
    let registered = grpcurl::ok(with(&[
        "-d",
        &body,
        &address,
        "clouddp.v1.DistributionPointService/RegisterDistributionPoint",
    ]))
    .unwrap();
    assert!(registered.contains("\"dp1\""), "{registered}");
    let health = grpcurl::ok([
        "-cacert",
        &file("ca.pem"),
        &address,
        "grpc.health.v1.Health/Check",
    ])
    .unwrap();
    assert!(health.contains("SERVING"), "{health}");
    let anonymous = grpcurl::run([
        "-cacert",
        &file("ca.pem"),
        &address,
        "clouddp.v1.DistributionPointService/ListDistributionPoints",
    ])
    .unwrap();
    assert!(!anonymous.success, "{anonymous:?}");
    assert!(
        anonymous.stderr.contains("Unauthenticated"),
        "{anonymous:?}"
    );
}

fn agent(identity_dir: &Path, manager: &ServiceProcess, args: &[&str]) -> std::process::Output {
    std::process::Command::new(clouddp_e2e::bin("clouddp-agent"))
        .args(args)
        .env("CLOUDDP_AGENT__ENDPOINT", manager.url())
        .env("CLOUDDP_AGENT__IDENTITY_DIR", identity_dir)
        .env_remove("CLOUDDP_AGENT_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn devices_enroll_with_a_token_and_a_blocked_device_is_refused_at_once() {
    let (manager, monitoring, site) = secure_site(&[]).await;
    let admin = |args: &[&str]| admin_console(&manager, &monitoring, &site, args);
    let created = admin(&[
        "device",
        "token",
        "create",
        "--uses",
        "2",
        "--expires",
        "1h",
        "-o",
        "json",
    ]);
    assert_eq!(created.code, 0, "{created:?}");
    let token = created.json().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let ca = site.first_admin().join("ca.pem").display().to_string();
    let devices = tempfile::tempdir().unwrap();
    let pc42 = devices.path().join("pc-0042");
    let enrolled = agent(
        &pc42,
        &manager,
        &[
            "enroll",
            "--token",
            &token,
            "--device",
            "pc-0042",
            "--ca-cert",
            &ca,
        ],
    );
    assert!(enrolled.status.success(), "{enrolled:?}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(pc42.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let pc43 = devices.path().join("pc-0043");
    let second = agent(
        &pc43,
        &manager,
        &[
            "enroll",
            "--token",
            &token,
            "--device",
            "pc-0043",
            "--ca-cert",
            &ca,
        ],
    );
    assert!(second.status.success(), "{second:?}");
    let used_up = agent(
        &devices.path().join("x"),
        &manager,
        &[
            "enroll",
            "--token",
            &token,
            "--device",
            "pc-9",
            "--ca-cert",
            &ca,
        ],
    );
    assert_eq!(used_up.status.code(), Some(4), "{used_up:?}");
    assert!(
        String::from_utf8_lossy(&used_up.stderr).contains("used up"),
        "{used_up:?}"
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    let bad = agent(
        &devices.path().join("y"),
        &manager,
        &[
            "enroll",
            "--token",
            &forged,
            "--device",
            "pc-9",
            "--ca-cert",
            &ca,
        ],
    );
    assert_eq!(bad.status.code(), Some(4), "{bad:?}");

    // The device authenticates with its own certificate: the site knows it from it.
    let url = manager.url();
    let locate = |dir: std::path::PathBuf| {
        let url = url.clone();
        async move {
            let channel = identity::channel(&url, &dir, Some(&dir)).await.unwrap();
            clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient::new(
                channel,
            )
            .locate_content(clouddp_proto::v1::LocateContentRequest {
                deployment_id: "dep-none".to_owned(),
                ip_address: "10.0.0.1".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_err()
        }
    };
    assert_eq!(locate(pc42.clone()).await.code(), Code::NotFound);
    let got = agent(
        &pc42,
        &manager,
        &[
            "get",
            "dep-none",
            "--to",
            devices.path().join("out").to_str().unwrap(),
        ],
    );
    assert_eq!(got.status.code(), Some(4), "{got:?}");
    assert!(
        String::from_utf8_lossy(&got.stderr).contains("NotFound"),
        "the agent reached the handler as itself: {got:?}"
    );

    let listed = admin(&["device", "list", "-o", "json"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let ids: Vec<String> = listed.json().unwrap()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|device| device["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["pc-0042", "pc-0043"]);

    let blocked = admin(&["device", "block", "pc-0042", "--reason", "reported stolen"]);
    assert_eq!(blocked.code, 0, "{blocked:?}");
    let at = Instant::now();
    let refused = locate(pc42.clone()).await;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("blocked"), "{refused:?}");
    assert!(at.elapsed() < Duration::from_secs(1));
    assert_eq!(
        locate(pc43.clone()).await.code(),
        Code::NotFound,
        "another device is untouched"
    );
    let again = admin(&["device", "token", "create", "-o", "json"]);
    let again = again.json().unwrap()["token"].as_str().unwrap().to_owned();
    let re_enrolled = agent(
        &devices.path().join("z"),
        &manager,
        &[
            "enroll",
            "--token",
            &again,
            "--device",
            "pc-0042",
            "--ca-cert",
            &ca,
        ],
    );
    assert_eq!(
        re_enrolled.status.code(),
        Some(4),
        "a blocked device cannot enroll again: {re_enrolled:?}"
    );
    let unblocked = admin(&["device", "unblock", "pc-0042"]);
    assert_eq!(unblocked.code, 0, "{unblocked:?}");
    assert_eq!(locate(pc42.clone()).await.code(), Code::NotFound);

    let trail = admin(&["audit", "list", "--rpc", "EnrollDevice", "-o", "json"]);
    let trail = trail.json().unwrap()["events"].as_array().unwrap().clone();
    assert!(
        trail
            .iter()
            .any(|event| event["target"] == "pc-0042" && event["code"] == "OK")
            && trail.iter().any(|event| event["code"] == "UNAUTHENTICATED"),
        "{trail:#?}"
    );
    let text = serde_json::to_string(&trail).unwrap();
    assert!(!text.contains(&token), "a token secret in the audit trail");
}

/// Creates a registration token for `uses` devices.
fn registration_token(admin: impl Fn(&[&str]) -> console::ConsoleOutput, uses: &str) -> String {
    let created = admin(&["device", "token", "create", "--uses", uses, "-o", "json"]);
    assert_eq!(created.code, 0, "{created:?}");
    created.json().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Enrolls `device` into `dir` with `token`.
fn enroll(manager: &ServiceProcess, site: &Site, dir: &Path, token: &str, device: &str) {
    let ca = site.first_admin().join("ca.pem").display().to_string();
    let enrolled = agent(
        dir,
        manager,
        &[
            "enroll",
            "--token",
            token,
            "--device",
            device,
            "--ca-cert",
            &ca,
        ],
    );
    assert!(enrolled.status.success(), "{enrolled:?}");
}

/// An HTTPS client that trusts the site CA and presents `credential` (a device's identity folder) when given.
fn device_http(site: &Site, credential: Option<&Path>) -> reqwest::Client {
    let ca = std::fs::read(site.first_admin().join("ca.pem")).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap());
    if let Some(dir) = credential {
        let mut pem = std::fs::read(dir.join("cert.pem")).unwrap();
        pem.extend(std::fs::read(dir.join("key.pem")).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn access_tokens_are_bound_to_the_device_certificate_not_to_a_header() {
    let roots = tempfile::tempdir().unwrap();
    let sources = roots.path().join("sources");
    let stores = roots.path().join("stores");
    std::fs::create_dir_all(&stores).unwrap();
    let payload: Vec<u8> = (0..300_000_u32).flat_map(u32::to_le_bytes).collect();
    write(&sources.join("app/setup.bin"), &payload);
    let (manager, monitoring, site) = secure_site(&[
        "--source-root".to_owned(),
        sources.display().to_string(),
        "--store-root".to_owned(),
        stores.display().to_string(),
    ])
    .await;
    let admin = |args: &[&str]| admin_console(&manager, &monitoring, &site, args);
    // The on-premises DP is reached at `localhost`: the endpoint serves the site's server certificate there.
    let address = format!("https://localhost:{}", manager.content_addr().port());
    let registered = admin(&[
        "dp",
        "register",
        "--name",
        "hq",
        "--folder",
        stores.join("hq").to_str().unwrap(),
        "--address",
        &address,
    ]);
    assert_eq!(registered.code, 0, "{registered:?}");
    let added = admin(&[
        "content",
        "add",
        "--name",
        "app",
        "--type",
        "application",
        "--source",
        sources.join("app").to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(added.code, 0, "{added:?}");
    let content = added.json().unwrap()["id"].as_str().unwrap().to_owned();
    let distributed = admin(&["content", "distribute", &content, "--dp", "hq", "--wait"]);
    assert_eq!(distributed.code, 0, "{distributed:?}");
    let admin_channel = identity::channel(
        &manager.url(),
        &site.first_admin(),
        Some(&site.first_admin()),
    )
    .await
    .unwrap();
    // No boundary group holds the devices: the DP is a remote fallback.
    let deployment =
        clouddp_proto::v1::client_policy_service_client::ClientPolicyServiceClient::new(
            admin_channel,
        )
        .create_deployment(clouddp_proto::v1::CreateDeploymentRequest {
            deployment: Some(clouddp_proto::v1::Deployment {
                content_id: content.clone(),
                allow_remote_fallback: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .id;

    let token = registration_token(admin, "2");
    let devices = tempfile::tempdir().unwrap();
    let (pc42, pc43) = (
        devices.path().join("pc-0042"),
        devices.path().join("pc-0043"),
    );
    enroll(&manager, &site, &pc42, &token, "pc-0042");
    enroll(&manager, &site, &pc43, &token, "pc-0043");

    // The enrolled agent downloads with its certificate and trusts the endpoint's with no flag.
    let out = devices.path().join("out");
    let got = agent(
        &pc42,
        &manager,
        &["get", &deployment, "--to", out.to_str().unwrap()],
    );
    assert!(got.status.success(), "{got:?}");
    assert_eq!(std::fs::read(out.join("setup.bin")).unwrap(), payload);

    // The token pc-0042 was given works only on a connection that presents pc-0042's certificate.
    let channel = identity::channel(&manager.url(), &pc42, Some(&pc42))
        .await
        .unwrap();
    let answer =
        clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient::new(
            channel,
        )
        .locate_content(clouddp_proto::v1::LocateContentRequest {
            deployment_id: deployment.clone(),
            ip_address: "10.0.0.1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let location = &answer.locations[0];
    let fetch = |credential: Option<&Path>| {
        let http = device_http(&site, credential);
        let (url, token) = (location.url.clone(), location.access_token.clone());
        async move {
            let response =
                clouddp_e2e::content::ranged_get(&http, &url, &token, "pc-0042", "bytes=0-99")
                    .await
                    .unwrap();
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = fetch(None).await;
    assert_eq!(
        status, 401,
        "no certificate, the device named in the header: {body}"
    );
    assert!(
        body.contains("not bound to the client certificate"),
        "{body}"
    );
    assert!(
        body.contains("connect with the device certificate"),
        "{body}"
    );
    let (status, body) = fetch(Some(&pc43)).await;
    assert_eq!(status, 401, "another device's certificate: {body}");
    let (status, body) = fetch(Some(&pc42)).await;
    assert_eq!(status, 206, "{body}");
}

#[tokio::test]
async fn identities_survive_a_backup_and_restore_with_no_re_enrollment() {
    let (manager, monitoring, site) = secure_site(&[]).await;
    let admin = |args: &[&str]| admin_console(&manager, &monitoring, &site, args);
    let token = registration_token(admin, "2");
    let devices = tempfile::tempdir().unwrap();
    let (pc42, pc66) = (
        devices.path().join("pc-0042"),
        devices.path().join("pc-0066"),
    );
    enroll(&manager, &site, &pc42, &token, "pc-0042");
    enroll(&manager, &site, &pc66, &token, "pc-0066");
    let blocked = admin(&["device", "block", "pc-0066", "--reason", "stolen"]);
    assert_eq!(blocked.code, 0, "{blocked:?}");
    let granted = admin(&[
        "access",
        "grant",
        "admin/alice",
        "application-administrator",
    ]);
    assert_eq!(granted.code, 0, "{granted:?}");
    let backup = devices.path().join("site.backup");
    let backed_up = admin(&["site", "backup", backup.to_str().unwrap()]);
    assert_eq!(backed_up.code, 0, "{backed_up:?}");
    // The CA key travels sealed, never in the clear.
    let ca_key = std::fs::read_to_string(manager.data_dir().join("pki/ca.key")).unwrap();
    let body: String = ca_key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let text = std::fs::read_to_string(&backup).unwrap();
    assert!(
        !text.contains(&body[..40]),
        "the CA key is in the backup in the clear"
    );

    // A new machine with only the site key and the backup.
    let key_copy = devices.path().join("site.key");
    std::fs::copy(manager.data_dir().join("site.key"), &key_copy).unwrap();
    let mut restored = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .env("CLOUDDP_DM__SITE__KEY_FILE", key_copy.to_str().unwrap())
            .tls(),
    )
    .await
    .unwrap();
    let restored_site = Site::of(&restored).unwrap();
    let config = restored_site.admin_config().display().to_string();
    let restore = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        console::run(&restored.url(), console::NO_MONITORING, &all).unwrap()
    };
    let answer = restore(&["site", "restore", backup.to_str().unwrap(), "-o", "json"]);
    assert_eq!(answer.code, 0, "{answer:?}");
    let summary = answer.json().unwrap();
    assert_eq!(summary["devices"], 2, "{summary}");
    assert_eq!(summary["restart_required"], true, "{summary}");
    restored.restart().await.unwrap();

    // The original device certificate works on the restored site, the blocked one stays blocked, and the
    // re-issued first administrator's credential sees the restored bindings.
    let locate = |dir: std::path::PathBuf, url: String| async move {
        let channel = identity::channel(&url, &dir, Some(&dir)).await.unwrap();
        clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient::new(
            channel,
        )
        .locate_content(clouddp_proto::v1::LocateContentRequest {
            deployment_id: "dep-none".to_owned(),
            ip_address: "10.0.0.1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err()
    };
    assert_eq!(
        locate(pc42.clone(), restored.url()).await.code(),
        Code::NotFound
    );
    assert_eq!(
        locate(pc66.clone(), restored.url()).await.code(),
        Code::PermissionDenied
    );
    let config = restored_site.admin_config().display().to_string();
    let listed = console::run(
        &restored.url(),
        console::NO_MONITORING,
        &["--config", &config, "access", "list", "-o", "json"],
    )
    .unwrap();
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains("admin/alice"), "{listed:?}");
    let devices_listed = console::run(
        &restored.url(),
        console::NO_MONITORING,
        &["--config", &config, "device", "list", "-o", "json"],
    )
    .unwrap();
    assert!(
        devices_listed.stdout.contains("pc-0042"),
        "{devices_listed:?}"
    );
    // The original site's administrator credential is valid on the restored site too.
    let original_admin = console::run(
        &restored.url(),
        console::NO_MONITORING,
        &[
            "--config",
            site.admin_config().to_str().unwrap(),
            "access",
            "list",
        ],
    )
    .unwrap();
    assert_eq!(original_admin.code, 0, "{original_admin:?}");
}

#[tokio::test]
async fn an_issued_administrator_credential_can_be_revoked_and_is_refused_within_a_second() {
    let (manager, monitoring, site) = secure_site(&[]).await;
    let admin = |args: &[&str]| admin_console(&manager, &monitoring, &site, args);
    let folders = tempfile::tempdir().unwrap();
    let alice = folders.path().join("alice");
    let issued = admin(&[
        "access",
        "credential",
        "issue",
        "admin/alice",
        "--out",
        alice.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(issued.code, 0, "{issued:?}");
    let serial = issued.json().unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_owned();
    use std::os::unix::fs::PermissionsExt as _;
    for (file, mode) in [("key.pem", 0o600), ("clouddp.toml", 0o600)] {
        let actual = std::fs::metadata(alice.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(actual, mode, "{file}");
    }
    let granted = admin(&["access", "grant", "admin/alice", "full-administrator"]);
    assert_eq!(granted.code, 0, "{granted:?}");
    // alice works with her folder alone, on both services.
    let config = alice.join("clouddp.toml").display().to_string();
    let as_alice = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        console::run(&manager.url(), &monitoring.url(), &all).unwrap()
    };
    assert_eq!(as_alice(&["access", "list"]).code, 0);
    let until_monitoring = Instant::now() + Duration::from_secs(3);
    while as_alice(&["alerts", "list"]).code != 0 {
        assert!(
            Instant::now() < until_monitoring,
            "monitoring never took alice's role"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = admin(&["access", "credential", "list", "-o", "json"]);
    let credentials = listed.json().unwrap()["credentials"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(credentials.len(), 2, "{credentials:?}");
    let first = credentials
        .iter()
        .find(|credential| credential["principal"] == "admin/admin")
        .unwrap();
    assert_eq!(first["issued_by"], "site");

    // Revoked: both services refuse it within a second.
    let revoked = admin(&["access", "credential", "revoke", &serial.to_uppercase()]);
    assert_eq!(revoked.code, 0, "{revoked:?}");
    let since = Instant::now();
    let refused = as_alice(&["access", "list"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("was revoked"), "{refused:?}");
    loop {
        let answer = as_alice(&["alerts", "list"]);
        if answer.code != 0 && answer.stderr.contains("was revoked") {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "monitoring still serves the revoked credential: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "monitoring refused the revoked credential {:?} after the revocation",
        since.elapsed()
    );
    // The first administrator's credential is now the last one of a Full Administrator: it stays.
    let last = admin(&[
        "access",
        "credential",
        "revoke",
        first["serial"].as_str().unwrap(),
    ]);
    assert_eq!(last.code, 1, "{last:?}");
    assert!(
        last.stderr.contains("last one of a Full Administrator"),
        "{last:?}"
    );
    let audit = admin(&["audit", "list", "-o", "json"]);
    assert!(audit.stdout.contains("RevokeAdminCredential"), "{audit:?}");
}

/// The serial of the certificate in an identity folder.
fn serial(dir: &Path) -> String {
    clouddp_platform::pki::serial_of(&std::fs::read_to_string(dir.join("cert.pem")).unwrap())
        .unwrap()
}

#[tokio::test]
async fn the_agent_renews_its_certificate_before_expiry_with_a_new_key() {
    let (manager, monitoring, site) = secure_site(&[]).await;
    let admin = |args: &[&str]| admin_console(&manager, &monitoring, &site, args);
    let token = registration_token(admin, "1");
    let devices = tempfile::tempdir().unwrap();
    let pc42 = devices.path().join("pc-0042");
    enroll(&manager, &site, &pc42, &token, "pc-0042");
    let (enrolled_serial, enrolled_key) =
        (serial(&pc42), std::fs::read(pc42.join("key.pem")).unwrap());

    // Far from its expiry (397 days), nothing happens unless asked.
    let kept = agent(&pc42, &manager, &["renew"]);
    assert!(kept.status.success(), "{kept:?}");
    assert_eq!(serial(&pc42), enrolled_serial);
    let renewed = agent(&pc42, &manager, &["renew", "--force"]);
    assert!(renewed.status.success(), "{renewed:?}");
    let forced_serial = serial(&pc42);
    assert_ne!(forced_serial, enrolled_serial);
    assert_ne!(
        std::fs::read(pc42.join("key.pem")).unwrap(),
        enrolled_key,
        "the key stayed"
    );

    // Within renew_before_days of the expiry, `get` renews on its own, then locates as the same device.
    let got = std::process::Command::new(clouddp_e2e::bin("clouddp-agent"))
        .args([
            "get",
            "dep-none",
            "--to",
            devices.path().join("out").to_str().unwrap(),
        ])
        .env("CLOUDDP_AGENT__ENDPOINT", manager.url())
        .env("CLOUDDP_AGENT__IDENTITY_DIR", &pc42)
        .env("CLOUDDP_AGENT__RENEW_BEFORE_DAYS", "398")
        .env_remove("CLOUDDP_AGENT_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert!(stderr.contains("renewed the device certificate"), "{got:?}");
    assert!(
        stderr.contains("NotFound"),
        "the renewed certificate reached the handler: {got:?}"
    );
    assert_ne!(serial(&pc42), forced_serial);
    assert!(!pc42.join("key.pem.next").exists() && !pc42.join("cert.pem.next").exists());

    // A renewal cut short after the key was replaced is finished when the identity is next loaded.
    let next = pc42.join("cert.pem.next");
    std::fs::copy(pc42.join("cert.pem"), &next).unwrap();
    let listed = agent(&pc42, &manager, &["renew"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(!next.exists());
    let devices_listed = admin(&["device", "list", "-o", "json"]);
    let count = devices_listed.json().unwrap()["devices"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(count, 1, "renewals made no new device");
}
