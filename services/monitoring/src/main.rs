//! `clouddp-monitoring`: load config, init tracing, serve until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use clap::Parser;
use clouddp_monitoring::config::{ENV_PREFIX, MonConfig};
use clouddp_platform::cli::ServerFlags;

/// The clouddp monitoring service: follows the distribution manager's distribution points, pulls their usage,
/// evaluates thresholds and streams alerts over gRPC.
///
/// Configuration comes from --config FILE, then CLOUDDP_MON__SECTION__KEY environment variables
/// (for example CLOUDDP_MON__PULL__INTERVAL=30s), then these flags. A bad configuration exits with code 64.
#[derive(Debug, Parser)]
#[command(name = "clouddp-monitoring", version)]
struct Cli {
    #[command(flatten)]
    server: ServerFlags,
    /// The distribution manager's gRPC URL, for example https://127.0.0.1:7400.
    #[arg(long, value_name = "URL")]
    distribution_manager: Option<String>,
    /// The service credential folder the distribution manager wrote (services/monitoring in its data dir).
    #[arg(long, value_name = "DIR")]
    credentials: Option<std::path::PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    clouddp_platform::cli::server_main(
        "clouddp-monitoring",
        cli.server.check_config,
        |env| {
            let mut config: MonConfig =
                clouddp_platform::config::load(cli.server.config.as_deref(), env, ENV_PREFIX)?;
            cli.server
                .apply(&mut config.server, &mut config.storage.data_dir);
            if let Some(dir) = &cli.credentials {
                config.identity.credentials.clone_from(dir);
            }
            if let Some(url) = &cli.distribution_manager {
                config.distribution_manager.url.clone_from(url);
            }
            config.check()?;
            Ok(config)
        },
        clouddp_monitoring::run,
    )
}
