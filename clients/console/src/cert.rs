//! `clouddp cert …`: management and service certificates; and the certificate flags of `dp install`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::certificate_service_client::CertificateServiceClient;
use serde_json::json;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{OutputFormat, print_json, table, time_text};

/// Certificate commands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Import a management certificate: a .pfx (password from --password or CLOUDDP_PFX_PASSWORD) or a
    /// .publishsettings v1 file. With --dp it becomes that cloud DP's management certificate.
    ImportManagement {
        /// The .pfx or .publishsettings file.
        file: PathBuf,
        /// The cloud DP (id or name) that uses it.
        #[arg(long)]
        dp: Option<String>,
        /// The .pfx password.
        #[arg(
            long,
            env = "CLOUDDP_PFX_PASSWORD",
            hide_env_values = true,
            default_value = ""
        )]
        password: String,
    },
    /// Import or replace a cloud DP's service certificate: a .pfx (password from --password or
    /// CLOUDDP_PFX_PASSWORD) or a PEM certificate with --key. A replacement must keep the same CN.
    ImportService {
        /// The .pfx or PEM certificate file.
        file: PathBuf,
        /// The cloud DP (id or name).
        #[arg(long)]
        dp: String,
        /// The PEM private key, for a PEM certificate.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The .pfx password.
        #[arg(
            long,
            env = "CLOUDDP_PFX_PASSWORD",
            hide_env_values = true,
            default_value = ""
        )]
        password: String,
    },
    /// Show certificates (subject, thumbprint, validity; never a private key): one by id or thumbprint, or all,
    /// or those of one DP.
    Show {
        /// A certificate id or thumbprint; all when omitted.
        id: Option<String>,
        /// Only the certificates of this DP.
        #[arg(long)]
        dp: Option<String>,
    },
    /// Export a certificate's public part as a DER .cer file, for upload to the Azure subscription.
    Export {
        /// The certificate id or thumbprint.
        id: String,
        /// Where to write it; `<common name>.cer` in the current directory by default.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// The certificate flags of `dp install`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallCertificates {
    /// The management certificate: a .pfx or .publishsettings v1 file, or an imported certificate's id.
    #[arg(
        long,
        value_name = "FILE|ID",
        required_unless_present = "dev_certificates"
    )]
    pub management_cert: Option<String>,
    /// The management .pfx password.
    #[arg(
        long,
        env = "CLOUDDP_MANAGEMENT_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub management_password: String,
    /// The service certificate: a .pfx or PEM file, or an imported certificate's id. Its CN is the service FQDN.
    #[arg(
        long,
        value_name = "FILE|ID",
        required_unless_present = "dev_certificates"
    )]
    pub service_cert: Option<String>,
    /// The service certificate's PEM private key, for a PEM certificate.
    #[arg(long, value_name = "FILE")]
    pub service_key: Option<PathBuf>,
    /// The service .pfx password.
    #[arg(
        long,
        env = "CLOUDDP_SERVICE_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub service_password: String,
    /// For tests and evaluation: make self-signed management and service certificates (service CN
    /// `<service name>.cloudapp.net`), keep copies as password-less .pfx files in DIR, and use them.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["management_cert", "service_cert"])]
    pub dev_certificates: Option<PathBuf>,
}

impl InstallCertificates {
    /// The management and service certificate sources of an install of `service_name`.
    pub fn sources(
        &self,
        service_name: &str,
    ) -> CliResult<(pb::CertificateSource, pb::CertificateSource)> {
        if let Some(dir) = &self.dev_certificates {
            let management = dev_pfx(
                dir,
                service_name,
                "management",
                &format!("clouddp management {service_name}"),
            )?;
            let service = dev_pfx(
                dir,
                service_name,
                "service",
                &format!("{service_name}.cloudapp.net"),
            )?;
            return Ok((
                source_from_file(&management, "", None)?,
                source_from_file(&service, "", None)?,
            ));
        }
        let pick = |value: &Option<String>,
                    password: &str,
                    key: Option<&Path>|
         -> CliResult<pb::CertificateSource> {
            let value = value.as_deref().unwrap_or_default();
            if value.starts_with("cert-") && !Path::new(value).exists() {
                return Ok(pb::CertificateSource {
                    source: Some(pb::certificate_source::Source::CertificateId(
                        value.to_owned(),
                    )),
                });
            }
            source_from_file(Path::new(value), password, key)
        };
        Ok((
            pick(&self.management_cert, &self.management_password, None)?,
            pick(
                &self.service_cert,
                &self.service_password,
                self.service_key.as_deref(),
            )?,
        ))
    }
}

/// Makes a self-signed certificate with `common_name` and writes it with its key as `DIR/<service>-<use>.pfx`
/// (no password, mode 0600); an existing file is reused.
fn dev_pfx(dir: &Path, service_name: &str, usage: &str, common_name: &str) -> CliResult<PathBuf> {
    let path = dir.join(format!("{service_name}-{usage}.pfx"));
    if path.exists() {
        return Ok(path);
    }
    let local =
        |what: &str, error: &dyn std::fmt::Display| CliError::Local(format!("{what}: {error}"));
    let mut params = rcgen::CertificateParams::new(vec![common_name.replace(' ', "-")])
        .map_err(|error| local("dev certificate", &error))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 86_400)).into();
    let key = rcgen::KeyPair::generate().map_err(|error| local("dev key", &error))?;
    let certificate = params
        .self_signed(&key)
        .map_err(|error| local("dev certificate", &error))?;
    let entry = p12_keystore::PrivateKeyChain::new(
        certificate.der().as_ref()[..20].to_vec(),
        p12_keystore::PrivateKey::from_der(&key.serialize_der())
            .map_err(|error| local("dev key", &error))?,
        [p12_keystore::Certificate::from_der(certificate.der())
            .map_err(|error| local("dev certificate", &error))?],
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(usage, p12_keystore::KeyStoreEntry::PrivateKeyChain(entry));
    let data = store
        .writer("")
        .write()
        .map_err(|error| local("dev .pfx", &error))?;
    std::fs::create_dir_all(dir)
        .map_err(|error| local(&format!("cannot create {}", dir.display()), &error))?;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| local(&format!("cannot create {}", path.display()), &error))?;
    std::io::Write::write_all(&mut file, &data)
        .map_err(|error| local(&format!("cannot write {}", path.display()), &error))?;
    eprintln!(
        "clouddp: wrote the self-signed {usage} certificate {common_name:?} to {} (keep it: a restore needs it)",
        path.display()
    );
    Ok(path)
}

/// Reads a certificate file: .publishsettings (XML), PEM (with `key`, or a key in the same file), or .pfx.
pub fn source_from_file(
    path: &Path,
    password: &str,
    key: Option<&Path>,
) -> CliResult<pb::CertificateSource> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|error| CliError::Local(format!("cannot read {}: {error}", path.display())))
    };
    let data = read(path)?;
    let trimmed = data.trim_ascii_start();
    use pb::certificate_source::Source;
    let source = if trimmed.starts_with(b"<") {
        Source::PublishSettings(data)
    } else if trimmed.starts_with(b"-----BEGIN") {
        let key_pem = match key {
            Some(key) => read(key)?,
            None => data.clone(),
        };
        Source::Pem(pb::PemPair {
            certificate_pem: String::from_utf8_lossy(&data).into_owned(),
            private_key_pem: String::from_utf8_lossy(&key_pem).into_owned(),
        })
    } else {
        Source::Pkcs12(pb::Pkcs12 {
            data,
            password: password.to_owned(),
        })
    };
    Ok(pb::CertificateSource {
        source: Some(source),
    })
}

fn kind_label(kind: i32) -> &'static str {
    match pb::CertificateKind::try_from(kind).unwrap_or_default() {
        pb::CertificateKind::Management => "management",
        pb::CertificateKind::Service => "service",
        pb::CertificateKind::Unspecified => "unknown",
    }
}

/// A certificate as JSON.
pub fn cert_json(info: &pb::CertificateInfo) -> serde_json::Value {
    json!({
        "id": info.id,
        "kind": kind_label(info.kind),
        "subject": info.subject,
        "common_name": info.common_name,
        "issuer": info.issuer,
        "thumbprint": info.thumbprint,
        "not_before": time_text(info.not_before.as_ref()),
        "not_after": time_text(info.not_after.as_ref()),
        "has_private_key": info.has_private_key,
        "subscription_id": info.subscription_id,
        "distribution_point_ids": info.distribution_point_ids,
    })
}

fn print_certificates(certificates: &[pb::CertificateInfo], output: OutputFormat) {
    match output {
        OutputFormat::Json => print_json(&json!(
            certificates.iter().map(cert_json).collect::<Vec<_>>()
        )),
        OutputFormat::Table => {
            let mut rows = table(&["ID", "KIND", "SUBJECT", "THUMBPRINT", "NOT AFTER", "DPS"]);
            for info in certificates {
                rows.add_row(vec![
                    info.id.clone(),
                    kind_label(info.kind).to_owned(),
                    info.subject.clone(),
                    info.thumbprint.clone(),
                    time_text(info.not_after.as_ref()),
                    info.distribution_point_ids.len().to_string(),
                ]);
            }
            out!("{rows}");
        }
    }
}

/// Runs a `cert` command.
pub async fn run(
    command: CertCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let mut client = CertificateServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| -> CliError { endpoints.failure(service, &status) };
    match command {
        CertCommand::ImportManagement { file, dp, password } => {
            let info = client
                .import_management_certificate(pb::ImportManagementCertificateRequest {
                    source: Some(source_from_file(&file, &password, None)?),
                    distribution_point_id: dp.unwrap_or_default(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_imported(&info, output);
        }
        CertCommand::ImportService {
            file,
            dp,
            key,
            password,
        } => {
            let info = client
                .import_service_certificate(pb::ImportServiceCertificateRequest {
                    distribution_point_id: dp,
                    source: Some(source_from_file(&file, &password, key.as_deref())?),
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_imported(&info, output);
        }
        CertCommand::Show { id: Some(id), .. } => {
            let info = client
                .get_certificate(pb::GetCertificateRequest { id })
                .await
                .map_err(fail)?
                .into_inner();
            print_certificates(std::slice::from_ref(&info), output);
        }
        CertCommand::Show { id: None, dp } => {
            let list = client
                .list_certificates(pb::ListCertificatesRequest {
                    distribution_point_id: dp.unwrap_or_default(),
                    kind: 0,
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_certificates(&list.certificates, output);
        }
        CertCommand::Export { id, out } => {
            let exported = client
                .export_certificate(pb::ExportCertificateRequest { id })
                .await
                .map_err(fail)?
                .into_inner();
            let path = out.unwrap_or_else(|| PathBuf::from(&exported.file_name));
            std::fs::write(&path, &exported.certificate_der).map_err(|error| {
                CliError::Local(format!("cannot write {}: {error}", path.display()))
            })?;
            match output {
                OutputFormat::Json => {
                    print_json(&json!({ "file": path, "bytes": exported.certificate_der.len() }))
                }
                OutputFormat::Table => out!(
                    "wrote {} ({} bytes, DER)",
                    path.display(),
                    exported.certificate_der.len()
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_imported(info: &pb::CertificateInfo, output: OutputFormat) {
    match output {
        OutputFormat::Json => print_json(&cert_json(info)),
        OutputFormat::Table => out!(
            "imported {} certificate {} ({}, thumbprint {}, valid until {})",
            kind_label(info.kind),
            info.id,
            info.subject,
            info.thumbprint,
            time_text(info.not_after.as_ref())
        ),
    }
}
