//! `clouddp-agent`: the device side of clouddp.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use clouddp_agent::AgentConfig;
use clouddp_agent::config::Network;
use clouddp_agent::get::{GetOptions, TraceContext, get};

/// clouddp-agent: finds where a deployment's content is, downloads it from the best allowed distribution point,
/// verifies and decrypts it.
///
/// Configuration comes from --config FILE, then CLOUDDP_AGENT__KEY environment variables
/// (for example CLOUDDP_AGENT__DEVICE_ID=pc-042), then flags.
///
/// Exit codes: 0 success; 1 bad input or a local problem; 2 bad command line; 3 the distribution manager cannot
/// be reached; 4 the site refused or allows no location; 5 every location failed (the verified part is kept
/// for the next run); 6 the content failed verification; 64 bad configuration.
#[derive(Debug, Parser)]
#[command(name = "clouddp-agent", version)]
struct Cli {
    /// TOML config file (see deploy/config/agent.toml).
    #[arg(long, env = "CLOUDDP_AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Lines for people.
    Text,
    /// One JSON document.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetworkFlag {
    Intranet,
    Internet,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration as TOML.
    Config,
    /// Renew the enrolled device's certificate with a new key, authenticating with the current one (`get`
    /// renews on its own within renew_before_days of the expiry).
    Renew {
        /// Renew even when the certificate is far from its expiry.
        #[arg(long)]
        force: bool,
    },
    /// Enroll this device with a bulk registration token (`clouddp device token create`): makes its key here,
    /// sends a certificate request, and keeps the site's certificate in identity_dir. Later commands
    /// authenticate with it.
    Enroll {
        /// The bulk registration token.
        #[arg(long, env = "CLOUDDP_ENROLLMENT_TOKEN", hide_env_values = true)]
        token: String,
        /// This device's id (default: device_id of the config, else the host name).
        #[arg(long)]
        device: Option<String>,
        /// The site CA certificate (PEM) to trust the distribution manager with (the admin has it as
        /// admin/ca.pem in the distribution manager's data dir).
        #[arg(long = "ca-cert", value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Download a deployment's content into a directory: locate, try the locations in order, resume an
    /// interrupted download, verify every chunk and the whole, decrypt, and write the files atomically.
    ///
    /// Every call of the download carries one W3C trace context (continued from TRACEPARENT when set), and the
    /// trace id is printed, so the download can be found in the distribution manager's traces.
    Get {
        /// The deployment (dep-…) whose content to get.
        deployment: String,
        /// The directory the content's files are written to.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// This device's id (overrides device_id).
        #[arg(long)]
        device: Option<String>,
        /// The signed-in user (overrides user_id).
        #[arg(long)]
        user: Option<String>,
        /// Intranet or internet (overrides network).
        #[arg(long, value_enum)]
        network: Option<NetworkFlag>,
        /// This device's IP address for boundary groups (overrides ip_address).
        #[arg(long, value_name = "ADDR")]
        ip: Option<String>,
        /// The device's Azure region (overrides region).
        #[arg(long)]
        region: Option<String>,
        /// Connect HOST:PORT to ADDR instead of resolving HOST (like curl --resolve); repeatable.
        #[arg(long, value_name = "HOST:PORT:ADDR")]
        resolve: Vec<String>,
        /// A PEM CA certificate to trust for the distribution points; repeatable.
        #[arg(long = "ca-cert", value_name = "FILE")]
        ca_certs: Vec<PathBuf>,
        /// Attempts per location on transient failures before the next location is tried.
        #[arg(long, default_value_t = 5)]
        retries: u32,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Do not show a progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Limit the download rate, in bytes per second (0: no limit).
        #[arg(long, value_name = "BYTES_PER_SECOND", default_value_t = 0)]
        max_rate: u64,
    },
}

fn parse_resolve(text: &str) -> Result<(String, SocketAddr), String> {
    let mut parts = text.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("--resolve {text:?}: write HOST:PORT:ADDR"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--resolve {text:?}: bad port"))?;
    let addr: std::net::IpAddr = addr
        .trim_matches(['[', ']'])
        .parse()
        .map_err(|_| format!("--resolve {text:?}: bad address"))?;
    Ok((host.to_owned(), SocketAddr::new(addr, port)))
}

/// The single-threaded runtime a command runs on, or the exit code when it cannot start.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("clouddp-agent: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = std::env::vars().collect();
    let mut config = match AgentConfig::load(cli.config.as_deref(), &env) {
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
        Command::Renew { force } => {
            let Some(identity) = clouddp_agent::enroll::Identity::load(&config.identity_dir) else {
                eprintln!(
                    "clouddp-agent: no enrolled identity in {}; enroll first (clouddp-agent enroll --token …)",
                    config.identity_dir.display()
                );
                return ExitCode::FAILURE;
            };
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            match runtime.block_on(clouddp_agent::enroll::renew(&config, &identity, force)) {
                Ok(renewed) => {
                    println!(
                        "{} the certificate of device/{}",
                        if renewed {
                            "renewed"
                        } else {
                            "kept (not due yet)"
                        },
                        identity.device_id
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("clouddp-agent: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
        Command::Enroll {
            token,
            device,
            ca_cert,
        } => {
            let device = device
                .or_else(|| (!config.device_id.trim().is_empty()).then(|| config.device_id.clone()))
                .or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|name| name.trim().to_owned())
                })
                .unwrap_or_default();
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            match runtime.block_on(clouddp_agent::enroll::enroll(
                &config,
                &token,
                &device,
                ca_cert.as_deref(),
            )) {
                Ok(identity) => {
                    println!(
                        "enrolled as device/{}; identity in {}",
                        identity.device_id,
                        identity.dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("clouddp-agent: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
        Command::Get {
            deployment,
            to,
            device,
            user,
            network,
            ip,
            region,
            resolve,
            ca_certs,
            retries,
            output,
            no_progress,
            max_rate,
        } => {
            if let Some(device) = device {
                config.device_id = device;
            }
            if user.is_some() {
                config.user_id = user;
            }
            if let Some(network) = network {
                config.network = match network {
                    NetworkFlag::Intranet => Network::Intranet,
                    NetworkFlag::Internet => Network::Internet,
                };
            }
            if ip.is_some() {
                config.ip_address = ip;
            }
            if region.is_some() {
                config.region = region;
            }
            if let Err(error) = config.check() {
                eprintln!("clouddp-agent: {error}");
                return ExitCode::from(64);
            }
            let resolve = match resolve
                .iter()
                .map(|text| parse_resolve(text))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(resolve) => resolve,
                Err(error) => {
                    eprintln!("clouddp-agent: {error}");
                    return ExitCode::from(2);
                }
            };
            let options = GetOptions {
                deployment,
                to,
                resolve,
                ca_certificates: ca_certs,
                retries,
                progress: output == Output::Text && !no_progress,
                max_rate,
                trace: TraceContext::from_env(),
            };
            let trace_id = options.trace.trace_id().to_owned();
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            match runtime.block_on(get(&config, options)) {
                Ok(report) => {
                    match output {
                        Output::Json => match serde_json::to_string_pretty(&report) {
                            Ok(text) => println!("{text}"),
                            Err(error) => eprintln!("clouddp-agent: {error}"),
                        },
                        Output::Text => {
                            println!(
                                "got {} ({} files, {} bytes in {:.1} s{}) from {} ({})",
                                report.content,
                                report.files.len(),
                                report.bytes,
                                report.seconds,
                                if report.resumed_bytes > 0 {
                                    format!(
                                        ", {} bytes resumed from the cache",
                                        report.resumed_bytes
                                    )
                                } else {
                                    String::new()
                                },
                                report.served_by,
                                report.tier
                            );
                            for reason in &report.reasons {
                                println!("  why: {reason}");
                            }
                            for attempt in &report.failed {
                                println!(
                                    "  before it, {} ({}) failed: {}",
                                    attempt.distribution_point, attempt.tier, attempt.error
                                );
                            }
                            println!("  trace: {}", report.trace_id);
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("clouddp-agent: {error}");
                    eprintln!("clouddp-agent: trace {trace_id}");
                    if output == Output::Json {
                        // Scripts get the failure as JSON too, with every location that was tried.
                        let attempts = match &error {
                            clouddp_agent::get::GetError::AllLocationsFailed { attempts } => {
                                attempts.clone()
                            }
                            _ => Vec::new(),
                        };
                        let value = serde_json::json!({
                            "error": error.to_string(),
                            "exit_code": error.exit_code(),
                            "failed": attempts,
                            "trace_id": trace_id,
                        });
                        println!("{value}");
                    }
                    ExitCode::from(error.exit_code())
                }
            }
        }
    }
}
