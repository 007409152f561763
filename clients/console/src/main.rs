//! `clouddp`: the admin command line of clouddp, over the clouddp.v1 gRPC API.
#![forbid(unsafe_code)]

mod access;
mod alerts;
mod audit;
mod cert;
mod connect;
mod content;
mod device;
mod dp;
mod manifests;
mod output;
mod site;
mod status;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::connect::Endpoints;
use crate::output::OutputFormat;

/// Exit code when a service cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code when the service refused or failed the request.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad command-line usage (clap's own, and a confirmation not given).
pub const EXIT_USAGE: u8 = 2;

/// clouddp: manage cloud and on-premises distribution points, content and alerts.
///
/// Exit codes: 0 success; 1 the request was refused or failed (the message says why);
/// 2 bad command-line usage; 3 a service could not be reached.
#[derive(Debug, Parser)]
#[command(name = "clouddp", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Output format: a table for people, or JSON for scripts.
    #[arg(long, short = 'o', global = true, help_heading = "Global options", hide = true, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show whether the distribution manager and the monitoring service are up.
    Status,
    /// Manage distribution points.
    #[command(subcommand)]
    Dp(dp::DpCommand),
    /// Register content and distribute it to distribution points.
    #[command(subcommand)]
    Content(content::ContentCommand),
    /// Manage distribution point groups.
    #[command(subcommand)]
    Group(content::GroupCommand),
    /// Import, show and export management and service certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Show the site, and back up or restore its configuration.
    #[command(subcommand)]
    Site(site::SiteCommand),
    /// Show a cloud DP's usage against its thresholds (from the monitoring service).
    #[command(subcommand)]
    Usage(alerts::UsageCommand),
    /// List, show, postpone, acknowledge and watch alerts (from the monitoring service).
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Administrators' roles (grant, revoke, list) and credentials (issue, list, revoke).
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// List the audit trail: every change and every refused call, on both services.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Enrollment tokens, enrolled devices, blocking.
    #[command(subcommand)]
    Device(device::DeviceCommand),
}

/// The global options, written once in `clouddp --help` rather than repeated in every command's help.
const GLOBAL_OPTIONS: &str = "\
Global options (before or after any command; environment variable, default):
      --config <FILE>              endpoints and credentials (CLOUDDP_CONFIG, ~/.config/clouddp/config.toml);
                                   the site writes one for its first admin: <dm data dir>/admin/clouddp.toml
      --endpoint <URL>             distribution manager (CLOUDDP_ENDPOINT, https://127.0.0.1:7400)
      --monitoring-endpoint <URL>  monitoring (CLOUDDP_MONITORING_ENDPOINT, https://127.0.0.1:7401)
      --ca-cert <FILE>             PEM CA for https:// URLs (CLOUDDP_CA_CERT)
      --client-cert <FILE>         client certificate for mutual TLS (CLOUDDP_CLIENT_CERT)
      --client-key <FILE>          its private key (CLOUDDP_CLIENT_KEY)
      --timeout <SECONDS>          per call (CLOUDDP_TIMEOUT, 30)
  -o, --output <table|json>        for people or for scripts, errors too (table)";

/// The command line: the global options are listed once at the top and pointed to from every command.
fn command() -> clap::Command {
    fn point_to_globals(command: clap::Command) -> clap::Command {
        command
            .after_help(
                "Global options (--endpoint, --output, TLS, --timeout): see `clouddp --help`.",
            )
            .mut_subcommands(point_to_globals)
    }
    Cli::command()
        .after_help(GLOBAL_OPTIONS)
        .mut_subcommands(point_to_globals)
}

/// True when the command line asks for JSON output (`-o json`, `--output json`, `--output=json`).
fn wants_json() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .any(|pair| (pair[0] == "-o" || pair[0] == "--output") && pair[1] == "json")
        || args
            .iter()
            .any(|arg| arg == "--output=json" || arg == "-ojson")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let parsed = command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        // Under `-o json` a usage error is JSON too; help and version print as usual.
        Err(error) if wants_json() && error.use_stderr() => {
            let message = error.render().to_string();
            eprintln!(
                "{}",
                serde_json::json!({
                    "error": { "kind": "usage", "message": message.trim() },
                    "exit_code": EXIT_USAGE,
                })
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Err(error) => error.exit(),
    };
    let mut cli = cli;
    let outcome = match cli.endpoints.resolve() {
        Err(error) => Err(error),
        Ok(()) => run(cli.command, &cli.endpoints, cli.output).await,
    };
    match outcome {
        Ok(code) => code,
        // Under `-o json` an error is JSON too (on standard error), so a script reads both the same way.
        Err(error) if cli.output == OutputFormat::Json => {
            eprintln!("{}", error.to_json());
            ExitCode::from(error.exit_code())
        }
        Err(error) => {
            eprintln!("clouddp: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs one command.
async fn run(
    command: Command,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> connect::CliResult<ExitCode> {
    match command {
        Command::Status => status::run(endpoints, output).await,
        Command::Dp(command) => dp::run(command, endpoints, output).await,
        Command::Content(command) => content::run(command, endpoints, output).await,
        Command::Group(command) => content::run_group(command, endpoints, output).await,
        Command::Cert(command) => cert::run(command, endpoints, output).await,
        Command::Site(command) => site::run(command, endpoints, output).await,
        Command::Usage(command) => alerts::run_usage(command, endpoints, output).await,
        Command::Alerts(command) => alerts::run_alerts(command, endpoints, output).await,
        Command::Access(command) => access::run(command, endpoints, output).await,
        Command::Audit(command) => audit::run(command, endpoints, output).await,
        Command::Device(command) => device::run(command, endpoints, output).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_options_are_listed_once_not_in_every_command() {
        let mut root = command();
        root.build();
        let top = root.render_help().to_string();
        assert!(
            top.contains("--monitoring-endpoint") && top.contains("--output"),
            "{top}"
        );
        let show = root
            .find_subcommand_mut("dp")
            .and_then(|dp| dp.find_subcommand_mut("show"))
            .expect("dp show");
        let text = show.render_help().to_string();
        assert!(!text.contains("--monitoring-endpoint"), "{text}");
        assert!(text.contains("see `clouddp --help`"), "{text}");
    }
}
