//! `clouddp-agent`: the device side of clouddp.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clouddp_agent::AgentConfig;

/// clouddp-agent: finds where a deployment's content is, downloads it from the best allowed distribution point,
/// verifies and decrypts it.
///
/// Configuration comes from --config FILE, then CLOUDDP_AGENT__KEY environment variables
/// (for example CLOUDDP_AGENT__DEVICE_ID=pc-042). Exit codes: 0 success; 64 bad configuration.
#[derive(Debug, Parser)]
#[command(name = "clouddp-agent", version)]
struct Cli {
    /// TOML config file (see deploy/config/agent.toml).
    #[arg(long, env = "CLOUDDP_AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration as TOML.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = std::env::vars().collect();
    let config = match AgentConfig::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("clouddp-agent: {error}");
            return ExitCode::from(64);
        }
    };
    match cli.command {
        Command::Config => match toml::to_string(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("clouddp-agent: cannot print the configuration: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
