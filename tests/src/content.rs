//! Test content: directories of files with random bytes and findable markers.

use std::io::{Read, Write};
use std::path::Path;

/// What every marker starts with: finding it anywhere in a store means plaintext leaked.
pub const MARKER_PREFIX: &str = "CLOUDDP-PLAINTEXT-MARKER-";

/// A marker that must never appear in a store: written into every generated file.
pub fn marker(index: usize) -> String {
    format!("{MARKER_PREFIX}{index:04}-THIS-MUST-NOT-LEAK")
}

/// Writes `size` bytes of random data with markers every few MiB to `path`.
pub fn write_random_file(
    path: &Path,
    size: usize,
    first_marker: usize,
) -> anyhow::Result<Vec<String>> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut random = std::fs::File::open("/dev/urandom")?;
    let mut file = std::fs::File::create(path)?;
    let mut markers = Vec::new();
    let mut written = 0;
    let mut buffer = vec![0_u8; 4 << 20];
    while written < size {
        let text = marker(first_marker + markers.len());
        let take = (size - written).min(buffer.len());
        random.read_exact(&mut buffer[..take])?;
        if take > text.len() * 2 {
            buffer[take / 2..take / 2 + text.len()].copy_from_slice(text.as_bytes());
            markers.push(text);
        }
        file.write_all(&buffer[..take])?;
        written += take;
    }
    file.sync_all()?;
    Ok(markers)
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(haystack, needle).is_some()
}

/// `GET url` as a device would: its access token, its device id and a `Range` header.
pub async fn ranged_get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    client: &str,
    range: &str,
) -> reqwest::Result<reqwest::Response> {
    http.get(url)
        .bearer_auth(token)
        .header("x-clouddp-client", client)
        .header("range", range)
        .send()
        .await
}

/// Asks for `bytes=0-9` of `url` as `client` until the endpoint answers 503 (a stopped DP), failing when it still
/// serves `within` after `since`; returns how long after `since` the refusal came.
pub async fn until_unavailable(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    client: &str,
    since: std::time::Instant,
    within: std::time::Duration,
) -> std::time::Duration {
    loop {
        let status = ranged_get(http, url, token, client, "bytes=0-9")
            .await
            .unwrap()
            .status();
        if status == 503 {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "{url} still answers {status} {within:?} after a stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Allows cloud DPs for `device` (custom client settings "Cloud", priority 1) and deploys `content`; returns the
/// deployment.
pub async fn allow_cloud_and_deploy(
    channel: tonic::transport::Channel,
    device: &str,
    content: &str,
) -> anyhow::Result<clouddp_proto::v1::Deployment> {
    use clouddp_proto::v1 as pb;
    let mut policy =
        clouddp_proto::v1::client_policy_service_client::ClientPolicyServiceClient::new(channel);
    policy
        .create_client_settings(pb::CreateClientSettingsRequest {
            settings: Some(pb::ClientSettings {
                name: "Cloud".to_owned(),
                priority: 1,
                allow_cloud_distribution_points_for_devices: true,
                device_ids: vec![device.to_owned()],
                ..Default::default()
            }),
        })
        .await?;
    let deployment = policy
        .create_deployment(pb::CreateDeploymentRequest {
            deployment: Some(pb::Deployment {
                content_id: content.to_owned(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    Ok(deployment)
}
