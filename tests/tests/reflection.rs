//! grpcurl lists, describes and calls both services through server reflection; health is served.

use clouddp_e2e::{ServiceProcess, grpcurl};

async fn both() -> (ServiceProcess, ServiceProcess) {
    clouddp_e2e::start_both().await.unwrap()
}

#[tokio::test]
async fn grpcurl_lists_each_services_own_contracts() {
    let (manager, monitoring) = both().await;
    let listed = grpcurl::ok(["-plaintext", &manager.addr().to_string(), "list"]).unwrap();
    for service in clouddp_proto::DISTRIBUTION_MANAGER_SERVICES
        .iter()
        .copied()
        .chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ])
    {
        assert!(
            listed.lines().any(|line| line == service),
            "{service} not in:\n{listed}"
        );
    }
    assert!(
        !listed.contains("clouddp.v1.MonitoringService"),
        "the manager must not advertise monitoring:\n{listed}"
    );

    let listed = grpcurl::ok(["-plaintext", &monitoring.addr().to_string(), "list"]).unwrap();
    for service in [
        "clouddp.v1.MonitoringService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|line| line == service),
            "{service} not in:\n{listed}"
        );
    }
    assert!(!listed.contains("DistributionPointService"), "{listed}");
}

#[tokio::test]
async fn grpcurl_describes_documented_messages_and_methods() {
    let (manager, monitoring) = both().await;
    let described = grpcurl::ok([
        "-plaintext",
        &manager.addr().to_string(),
        "describe",
        "clouddp.v1.DistributionPointService",
    ])
    .unwrap();
    assert!(
        described.contains("rpc WatchDistributionPoints"),
        "{described}"
    );
    assert!(
        described.contains("returns ( stream .clouddp.v1.DistributionPointEvent )"),
        "{described}"
    );
    assert!(
        described.contains("// Stops the DP's service"),
        "doc comments must reach reflection:\n{described}"
    );

    let message = grpcurl::ok([
        "-plaintext",
        &manager.addr().to_string(),
        "describe",
        "clouddp.v1.Thresholds",
    ])
    .unwrap();
    assert!(
        message.contains("uint64 storage_alert_gb = 1;"),
        "{message}"
    );
    assert!(message.contains("Default 2000"), "{message}");

    let alerts = grpcurl::ok([
        "-plaintext",
        &monitoring.addr().to_string(),
        "describe",
        "clouddp.v1.MonitoringService.SubscribeAlerts",
    ])
    .unwrap();
    assert!(
        alerts.contains("stream .clouddp.v1.AlertStreamMessage"),
        "{alerts}"
    );
}

#[tokio::test]
async fn grpcurl_calls_health_and_rpcs_with_clear_errors() {
    let (manager, monitoring) = both().await;
    for service in [&manager, &monitoring] {
        let health = grpcurl::ok([
            "-plaintext",
            &service.addr().to_string(),
            "grpc.health.v1.Health/Check",
        ])
        .unwrap();
        assert!(health.contains("\"SERVING\""), "{health}");
    }
    let named = grpcurl::ok([
        "-plaintext",
        "-d",
        r#"{"service":"clouddp.v1.DistributionPointService"}"#,
        &manager.addr().to_string(),
        "grpc.health.v1.Health/Check",
    ])
    .unwrap();
    assert!(named.contains("\"SERVING\""), "{named}");

    let register = format!(
        r#"{{"name":"dp-grpcurl","kind":"DISTRIBUTION_POINT_KIND_ON_PREMISES","folder_path":{:?},"address":"https://dp.lab:7443"}}"#,
        clouddp_e2e::store_folder(&manager, "dp")
    );
    let registered = grpcurl::ok([
        "-plaintext",
        "-d",
        register.as_str(),
        &manager.addr().to_string(),
        "clouddp.v1.DistributionPointService/RegisterDistributionPoint",
    ])
    .unwrap();
    let registered: serde_json::Value = serde_json::from_str(&registered).unwrap();
    assert_eq!(registered["name"], "dp-grpcurl");
    assert!(registered["id"].as_str().unwrap().starts_with("dp-"));

    let invalid = grpcurl::run([
        "-plaintext",
        "-d",
        r#"{"name":"x","kind":"DISTRIBUTION_POINT_KIND_ON_PREMISES","folder_path":"relative/path","address":"https://dp.lab"}"#,
        &manager.addr().to_string(),
        "clouddp.v1.DistributionPointService/RegisterDistributionPoint",
    ])
    .unwrap();
    assert!(!invalid.success);
    assert!(
        invalid.stderr.contains("InvalidArgument"),
        "{}",
        invalid.stderr
    );
    assert!(invalid.stderr.contains("folder_path"), "{}", invalid.stderr);

    let certificates = grpcurl::run([
        "-plaintext",
        &manager.addr().to_string(),
        "clouddp.v1.CertificateService/ListCertificates",
    ])
    .unwrap();
    assert!(certificates.success, "{}", certificates.stderr);
    let defaults = grpcurl::run([
        "-plaintext",
        "-d",
        r#"{"id":"default"}"#,
        &manager.addr().to_string(),
        "clouddp.v1.ClientPolicyService/GetClientSettings",
    ])
    .unwrap();
    assert!(defaults.success, "{}", defaults.stderr);
    assert!(
        defaults.stdout.contains("\"isDefault\": true"),
        "{}",
        defaults.stdout
    );
    assert!(
        !defaults
            .stdout
            .contains("allowCloudDistributionPointsForDevices"),
        "cloud DPs are not allowed by default (false is not printed): {}",
        defaults.stdout
    );

    let alerts = grpcurl::run([
        "-plaintext",
        &monitoring.addr().to_string(),
        "clouddp.v1.MonitoringService/ListAlerts",
    ])
    .unwrap();
    assert!(alerts.success, "{}", alerts.stderr);
    let unknown = grpcurl::run([
        "-plaintext",
        "-d",
        r#"{"id":"alert-nope"}"#,
        &monitoring.addr().to_string(),
        "clouddp.v1.MonitoringService/GetAlert",
    ])
    .unwrap();
    assert!(!unknown.success);
    assert!(
        unknown.stderr.contains("NotFound") && unknown.stderr.contains("alerts list"),
        "{}",
        unknown.stderr
    );
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_both_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let (manager, _monitoring) = both().await;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = v1::server_reflection_client::ServerReflectionClient::new(manager.channel())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(listed)) =
        answer.message_response
    else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<String> = listed
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.contains(&"clouddp.v1.DistributionPointService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.reflection.v1.ServerReflection".to_owned()),
        "{names:?}"
    );

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "clouddp.v1.ContentService".to_owned(),
            ),
        ),
    };
    let mut answers =
        v1alpha::server_reflection_client::ServerReflectionClient::new(manager.channel())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    assert!(
        matches!(
            answer.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref files))
                if !files.file_descriptor_proto.is_empty()
        ),
        "{answer:?}"
    );
}
