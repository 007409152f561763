//! Command-line flags every server shares, applied over the file and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{ServerSettings, TlsSettings};

/// Flags of every clouddp server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerFlags {
    /// TOML config file; values in it are overridden by environment variables, then by flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on for gRPC, for example 127.0.0.1:7400.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the service's database and files; created if missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PEM certificate chain for TLS (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (needs --tls-cert); must not be readable by others.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate issued by one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow --plaintext on a non-loopback address.
    #[arg(long)]
    pub insecure: bool,
    /// Serve plaintext gRPC with no authentication (every caller may do everything): only for tests, on
    /// loopback. By default the server speaks mutual TLS with the site's certificates.
    #[arg(long)]
    pub plaintext: bool,
    /// Load and check the configuration, print it as TOML, and exit.
    #[arg(long)]
    pub check_config: bool,
}

impl ServerFlags {
    /// Applies the flags that were given over `server` and `data_dir`.
    pub fn apply(&self, server: &mut ServerSettings, data_dir: &mut PathBuf) {
        if let Some(listen) = self.listen {
            server.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            data_dir.clone_from(dir);
        }
        if let (Some(certificate), Some(private_key)) = (&self.tls_cert, &self.tls_key) {
            server.tls = Some(TlsSettings {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
                client_ca: self.tls_client_ca.clone(),
            });
        }
        if self.insecure {
            server.insecure = true;
        }
        if self.plaintext {
            server.plaintext = true;
        }
    }
}

/// What a server binary needs from its config to start.
pub trait ServiceConfig: serde::Serialize {
    /// The listener settings.
    fn server(&self) -> &ServerSettings;
    /// The log settings.
    fn log(&self) -> &crate::config::LogSettings;
    /// Checks values that parse but are not allowed.
    fn check(&self) -> crate::config::ConfigResult<()>;
}

/// Raises the soft limit on open files to the hard limit (as the Go runtime does for every program) and returns
/// it: every connection is a file, and a soft limit of 1,024 let a few hundred idle connections take the whole
/// process down, gRPC included. Connection caps are set below it ([`file_limit`]).
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        // Linux refuses more than `fs.nr_open` (1,048,576 by default), so an unlimited hard limit asks for that.
        Ok((soft, hard)) if soft < hard.min(1 << 20) => {
            match setrlimit(Resource::RLIMIT_NOFILE, hard.min(1 << 20), hard) {
                Ok(()) => hard.min(1 << 20),
                Err(error) => {
                    tracing::warn!(soft, hard, %error, "cannot raise the open file limit");
                    soft
                }
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// The current soft limit on open files.
pub fn file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// The whole `main` of a server binary: load the config (exit 64 with one line when it is bad), print it and
/// exit for `--check-config`, else init tracing, bind the listener, and `run` until SIGTERM/SIGINT.
pub fn server_main<C, Run, Fut>(
    binary: &'static str,
    check_config: bool,
    load: impl FnOnce(&std::collections::BTreeMap<String, String>) -> anyhow::Result<C>,
    run: Run,
) -> !
where
    C: ServiceConfig,
    Run: FnOnce(C, tokio::net::TcpListener, tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // Every file the service creates (database, keys, credentials, logs) is its owner's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let env = crate::config::process_env();
    let config = match load(&env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: {error:#}");
            std::process::exit(crate::config::EXIT_CONFIG);
        }
    };
    if check_config {
        match toml::to_string(&config) {
            Ok(text) => print!("{text}"),
            Err(error) => eprintln!("{binary}: cannot print the configuration: {error}"),
        }
        std::process::exit(0);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{binary}: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    let outcome = runtime.block_on(async move {
        let _telemetry = crate::telemetry::init(binary, config.log(), &env)?;
        let files = raise_file_limit();
        tracing::info!(open_files = files, "open file limit");
        let _failpoints = crate::supervise::failpoints_from_env();
        let shutdown = crate::shutdown::on_signals()?;
        let listen = config.server().listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {listen}: {error}"))?;
        run(config, listener, shutdown).await
    });
    // Background tasks still holding the runtime must not delay the exit past the drain timeout.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("{binary}: {error:#}");
            std::process::exit(1);
        }
    }
}
