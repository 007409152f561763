//! What identity and access cost a device's call, in one run:
//!
//! 1. LocateContent on the distribution manager as it starts with no setup (mutual TLS, every call authorized,
//!    the device known from its certificate, tokens bound to it) against a bare tonic server answering the
//!    standard health check over the same mutual TLS (the manager's own server certificate, client certificates
//!    of the same site CA), driven by the same load generator in alternating rounds. Requests per second and
//!    the server's CPU per call are compared.
//! 2. The authorization decision alone (reading the principal from the certificate, the permission, the roles),
//!    timed in this process over a device certificate, as a share of the manager's CPU per LocateContent.
//!
//! Environment: N (3 rounds), SECONDS (3), CONCURRENCY (32). Run it with `./tests/bench-access` (release).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clouddp_e2e::bench::{
    alternating_rounds, env_or, health_check, median, serve_health, spawn_health_server,
};
use clouddp_e2e::identity::{self, Site};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec, console};
use clouddp_platform::access::{PrincipalKind, Role, trust_domain};
use clouddp_platform::authorize::{Authorizer, RoleBindings};
use clouddp_proto::v1 as pb;

/// The bare tonic health server's mutual TLS: the credential in `server`, client certificates of `ca`.
fn echo_tls(server: &Path, ca: &Path) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(server.join("cert.pem"))?,
            std::fs::read(server.join("key.pem"))?,
        ))
        .client_ca_root(Certificate::from_pem(std::fs::read(ca)?))
        .client_auth_optional(true))
}

fn admin(
    manager: &ServiceProcess,
    site: &Site,
    args: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let config = site.admin_config().display().to_string();
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    console::json(&manager.url(), console::NO_MONITORING, &all)
}

/// A folder DP at `localhost`, 1 MiB of content on it, and a deployment of it that any device may use.
async fn deployment(manager: &ServiceProcess, site: &Site, work: &Path) -> anyhow::Result<String> {
    let sources = work.join("sources");
    std::fs::create_dir_all(sources.join("app"))?;
    std::fs::write(sources.join("app/setup.bin"), vec![7_u8; 1 << 20])?;
    let address = format!("https://localhost:{}", manager.content_addr().port());
    let folder = work.join("stores/bench");
    admin(
        manager,
        site,
        &[
            "dp",
            "register",
            "--name",
            "bench",
            "--folder",
            folder.to_str().context("path")?,
            "--address",
            &address,
        ],
    )?;
    let added = admin(
        manager,
        site,
        &[
            "content",
            "add",
            "--name",
            "app",
            "--type",
            "application",
            "--source",
            sources.join("app").to_str().context("path")?,
        ],
    )?;
    let content = added["id"].as_str().context("content id")?.to_owned();
    admin(
        manager,
        site,
        &["content", "distribute", &content, "--dp", "bench", "--wait"],
    )?;
    let channel = identity::channel(
        &manager.url(),
        &site.first_admin(),
        Some(&site.first_admin()),
    )
    .await?;
    Ok(
        pb::client_policy_service_client::ClientPolicyServiceClient::new(channel)
            .create_deployment(pb::CreateDeploymentRequest {
                deployment: Some(pb::Deployment {
                    content_id: content,
                    allow_remote_fallback: true,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .id,
    )
}

/// The authorization decision for LocateContent over `leaf`, µs per call (median of 5 runs of 20,000).
fn authorization_us(leaf: &[u8]) -> f64 {
    let bindings = Arc::new(RoleBindings::default());
    bindings.replace([("admin".to_owned(), Role::FullAdministrator)]);
    let authorizer = Authorizer::new(trust_domain("CDP"), bindings);
    let path = "/clouddp.v1.ContentLocationService/LocateContent";
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..20_000 {
                let required = clouddp_platform::access::required(path);
                let caller = authorizer.authorize(path, required, Some(leaf));
                assert!(caller.is_ok());
            }
            started.elapsed().as_secs_f64() * 1e6 / 20_000.0
        })
        .collect();
    median(&mut runs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("echo-server") {
        let server = PathBuf::from(args.next().context("server credential")?);
        let ca = PathBuf::from(args.next().context("CA")?);
        return serve_health(Some(echo_tls(&server, &ca)?)).await;
    }
    let runs: usize = env_or("N", "3").parse()?;
    let seconds: f64 = env_or("SECONDS", "3").parse()?;
    let concurrency: usize = env_or("CONCURRENCY", "32").parse()?;
    let work = tempfile::tempdir()?;
    std::fs::create_dir_all(work.path().join("stores"))?;
    std::fs::create_dir_all(work.path().join("sources"))?;
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .args([
                "--source-root".to_owned(),
                work.path().join("sources").display().to_string(),
                "--store-root".to_owned(),
                work.path().join("stores").display().to_string(),
            ])
            .tls(),
    )
    .await?;
    let site = Site::of(&manager)?;
    let deployment = deployment(&manager, &site, work.path()).await?;

    let connections = 4;
    let devices: Vec<PathBuf> = (0..connections)
        .map(|index| site.credential(PrincipalKind::Device, &format!("pc-{index}")))
        .collect::<Result<_, _>>()?;
    let ca_dir = site.first_admin();
    let server_credential = manager.data_dir().join("pki/server");
    let ca_file = ca_dir.join("ca.pem");
    let (echo_process, echo_addr) =
        spawn_health_server(&[server_credential.as_os_str(), ca_file.as_os_str()]).await?;
    let mut echo_channels = Vec::new();
    let mut manager_channels = Vec::new();
    for device in &devices {
        echo_channels
            .push(identity::channel(&format!("https://{echo_addr}"), &ca_dir, Some(device)).await?);
        manager_channels.push(identity::channel(&manager.url(), &ca_dir, Some(device)).await?);
    }
    let (echo_channels, manager_channels) = (Arc::new(echo_channels), Arc::new(manager_channels));
    let echo_call = move |worker: usize| health_check(&echo_channels, worker);
    let locate_call = {
        let channels = manager_channels.clone();
        move |worker: usize| {
            let mut client = pb::content_location_service_client::ContentLocationServiceClient::new(
                channels[worker % channels.len()].clone(),
            );
            let request = pb::LocateContentRequest {
                ip_address: format!("10.0.{}.{}", worker / 250, worker % 250 + 1),
                deployment_id: deployment.clone(),
                ..Default::default()
            };
            async move {
                let answer = client.locate_content(request).await?.into_inner();
                if answer.locations.is_empty() {
                    bail!("no location");
                }
                anyhow::Ok(())
            }
        }
    };
    let echo_pid = echo_process.id().context("echo server pid")?;
    let manager_pid = manager.pid().context("distribution manager pid")?;
    let (mut echo, mut locate) = alternating_rounds(
        runs,
        concurrency,
        seconds,
        (echo_pid, echo_call),
        (manager_pid, locate_call),
    )
    .await?;
    let (echo_rates, locate_rates) = (echo.rates.clone(), locate.rates.clone());
    drop(echo_process);
    let (echo_rps, locate_rps) = (median(&mut echo.rates), median(&mut locate.rates));
    let (echo_us, locate_us) = (median(&mut echo.cpu_us), median(&mut locate.cpu_us));
    let leaf_pem = std::fs::read(devices[0].join("cert.pem"))?;
    let leaf = rustls_pemfile::certs(&mut leaf_pem.as_slice())
        .next()
        .context("no certificate")??;
    let authorization = authorization_us(&leaf);
    println!(
        "LocateContent over mutual TLS, authorized, tokens bound ({concurrency} concurrent over {connections} device connections, n={runs} alternating rounds of {seconds} s): median {locate_rps:.0} req/s vs bare tonic health check over the same mutual TLS {echo_rps:.0} req/s: {:.2}x (target >= 0.5x)",
        locate_rps / echo_rps
    );
    println!(
        "  rounds: LocateContent {locate_rates:.0?} req/s, health check {echo_rates:.0?} req/s; server CPU per call (median): LocateContent {locate_us:.1} µs, health check {echo_us:.1} µs"
    );
    println!(
        "  the authorization decision: {authorization:.2} µs per call = {:.1} % of LocateContent's CPU per call (target <= 10 %)",
        authorization / locate_us * 100.0
    );
    Ok(())
}
