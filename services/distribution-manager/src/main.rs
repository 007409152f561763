//! `clouddp-distribution-manager`: load config, init tracing, serve until SIGTERM/SIGINT.
#![forbid(unsafe_code)]

use clap::Parser;
use clouddp_distribution_manager::config::{DmConfig, ENV_PREFIX, Role};
use clouddp_platform::cli::ServerFlags;

/// The clouddp distribution manager: distribution points, content, client policy and certificates over gRPC.
///
/// Configuration comes from --config FILE, then CLOUDDP_DM__SECTION__KEY environment variables
/// (for example CLOUDDP_DM__SERVER__LISTEN=127.0.0.1:7400), then these flags.
/// A bad configuration exits with code 64.
#[derive(Debug, Parser)]
#[command(name = "clouddp-distribution-manager", version)]
struct Cli {
    #[command(flatten)]
    server: ServerFlags,
    /// Run everything (all), or only the HTTPS content endpoint (content-endpoint) over the same data dir and
    /// site key; with content-endpoint, --listen is the HTTPS listener.
    #[arg(long, value_enum)]
    role: Option<Role>,
    /// A directory content may be registered from (repeat for several); adds to [content] source_roots.
    #[arg(long = "source-root", value_name = "DIR")]
    source_roots: Vec<std::path::PathBuf>,
    /// A directory on-premises folder stores may live in (repeat for several); adds to [storage] store_roots.
    #[arg(long = "store-root", value_name = "DIR")]
    store_roots: Vec<std::path::PathBuf>,
}

/// mimalloc: LocateContent allocates its whole answer per call; with glibc's allocator the distribution
/// manager spent ~10 % more CPU per call (`./tests/bench-download` prints the CPU per call).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    clouddp_platform::cli::server_main(
        "clouddp-distribution-manager",
        cli.server.check_config,
        |env| {
            let mut config: DmConfig =
                clouddp_platform::config::load(cli.server.config.as_deref(), env, ENV_PREFIX)?;
            cli.server
                .apply(&mut config.server, &mut config.storage.data_dir);
            config
                .content
                .source_roots
                .extend(cli.source_roots.iter().cloned());
            config
                .storage
                .store_roots
                .extend(cli.store_roots.iter().cloned());
            if let Some(role) = cli.role {
                config.role = role;
            }
            if config.role == Role::ContentEndpoint {
                match cli.server.listen {
                    Some(listen) => config.content_endpoint.listen = listen,
                    None => config.server.listen = config.content_endpoint.listen,
                }
            }
            config.check()?;
            Ok(config)
        },
        clouddp_distribution_manager::run,
    )
}
