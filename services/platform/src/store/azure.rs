//! The Azure Blob adapter: data through object_store (block blobs: put block, put block list, ranged reads,
//! listing, deletes), and the container itself created and deleted by one small signed REST call, which
//! object_store does not offer.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt as _, RetryConfig};

use super::{BlobStore, ObjectInfo, StoreError, StoreResult, check_path};

/// The REST API version of the container calls.
const API_VERSION: &str = "2021-08-06";
/// Azurite's well-known development account and key.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How to authenticate to the storage account.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureCredential {
    /// The account's shared key (base64).
    AccountKey(String),
    /// A SAS token (the query string, with or without a leading `?`).
    Sas(String),
    /// The host's managed identity (the container must exist already).
    ManagedIdentity,
    /// The emulator's development account key.
    Emulator,
}

impl std::fmt::Debug for AzureCredential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Self::AccountKey(_) => "AccountKey(..)",
            Self::Sas(_) => "Sas(..)",
            Self::ManagedIdentity => "ManagedIdentity",
            Self::Emulator => "Emulator",
        })
    }
}

/// Where the container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureStoreConfig {
    /// Storage account name.
    pub account: String,
    /// Container name.
    pub container: String,
    /// Blob service endpoint including the account for path-style URLs (the emulator:
    /// `http://127.0.0.1:10000/devstoreaccount1`); empty for `https://<account>.blob.core.windows.net`.
    pub endpoint: String,
    /// Authentication.
    pub credential: AzureCredential,
}

/// How long connecting to the store may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may wait for the store's next bytes: a stall longer than this is an error.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one request may take in all (an 8 MiB block on a slow link).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A container in Azure Blob Storage (or Azurite).
#[derive(Debug, Clone)]
pub struct AzureStore {
    config: AzureStoreConfig,
    account_url: String,
    store: Arc<MicrosoftAzure>,
    http: reqwest::Client,
}

/// Classifies an `object_store` error by its kind and HTTP status, never by words found in its text (a content
/// id or an Azure request id may contain `403`).
fn map_error(context: &str, error: object_store::Error) -> StoreError {
    let message = format!("{context}: {}", root_cause(&error));
    match &error {
        object_store::Error::NotFound { .. } => StoreError::NotFound(message),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StoreError::Denied(message),
        object_store::Error::InvalidPath { .. } | object_store::Error::NotSupported { .. } => {
            StoreError::Invalid(message)
        }
        _ => match http_failure(&error) {
            Some(HttpFailure {
                status: 401 | 403, ..
            }) => StoreError::Denied(message),
            Some(HttpFailure { status: 404, .. }) => StoreError::NotFound(message),
            Some(HttpFailure { status: 400, code }) if code == "InvalidBlockList" => {
                StoreError::PartsLost(message)
            }
            _ => StoreError::Unavailable(message),
        },
    }
}

/// What a person needs of an `object_store` error: its innermost cause ("Connection refused", "dns error: …",
/// the store's answer), not the wrapper's retry bookkeeping.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let cause = innermost.to_string();
    let outer = error.to_string();
    if std::ptr::addr_eq(innermost, error) || outer.contains(&cause) {
        outer
    } else {
        format!("{cause} ({outer})")
    }
}

/// The status and Azure error code of a failed HTTP response found in an error's source chain.
#[derive(Debug, PartialEq, Eq)]
struct HttpFailure {
    status: u16,
    code: String,
}

/// `object_store` keeps the response's status in a type of its own that is not public; what it exposes is the
/// error's text, which for a failed response starts with this fixed prefix, then the status and the body.
const STATUS_PREFIX: &str = "Server returned non-2xx status code: ";

fn http_failure(error: &(dyn std::error::Error + 'static)) -> Option<HttpFailure> {
    let mut current = Some(error);
    while let Some(error) = current {
        if error
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return None;
        }
        if let Some(rest) = error.to_string().strip_prefix(STATUS_PREFIX) {
            return parse_failure(rest);
        }
        current = error.source();
    }
    None
}

/// `403 Forbidden: <?xml …><Error><Code>AuthorizationFailure</Code>…` → 403, `AuthorizationFailure`.
fn parse_failure(text: &str) -> Option<HttpFailure> {
    let status = text.get(..3)?.parse().ok()?;
    let code = text
        .split_once("<Code>")
        .and_then(|(_, after)| after.split_once("</Code>"))
        .map(|(code, _)| code.trim().to_owned())
        .unwrap_or_default();
    Some(HttpFailure { status, code })
}

fn object_path(path: &str) -> StoreResult<ObjectPath> {
    check_path(path)?;
    ObjectPath::parse(path).map_err(|error| StoreError::Invalid(format!("{path:?}: {error}")))
}

/// A service SAS for one container, signed with the account key (base64): `permissions` such as `rl` (read,
/// list) or `racwdl`, valid until `expiry`. Returned as a query string, values percent-encoded, for
/// [`AzureCredential::Sas`]; the account key itself never leaves its holder.
pub fn container_sas(
    account: &str,
    container: &str,
    key: &str,
    permissions: &str,
    expiry: std::time::SystemTime,
) -> StoreResult<String> {
    let key_bytes = BASE64
        .decode(key)
        .map_err(|_| StoreError::Denied("the account key is not valid base64".to_owned()))?;
    let expiry = humantime::format_rfc3339_seconds(expiry).to_string();
    let canonical_resource = format!("/blob/{account}/{container}");
    // Fields: permissions, start, expiry, resource, identifier, IP, protocol, version, resource type, snapshot
    // time, encryption scope, then the five response-header overrides.
    let string_to_sign = format!(
        "{permissions}\n\n{expiry}\n{canonical_resource}\n\n\n\n{API_VERSION}\nc\n\n\n\n\n\n\n"
    );
    let signing_key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let signature = BASE64.encode(hmac::sign(&signing_key, string_to_sign.as_bytes()).as_ref());
    let encode = |value: &str| {
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    Ok(format!(
        "sv={API_VERSION}&sr=c&sp={permissions}&se={}&sig={}",
        encode(&expiry),
        encode(&signature)
    ))
}

/// The development key of the storage emulator's account.
pub fn emulator_key() -> &'static str {
    EMULATOR_KEY
}

impl AzureStore {
    /// A store for `config`; nothing is contacted until the first call.
    pub fn new(config: AzureStoreConfig) -> StoreResult<Self> {
        let account = if config.credential == AzureCredential::Emulator && config.account.is_empty()
        {
            EMULATOR_ACCOUNT.to_owned()
        } else {
            config.account.clone()
        };
        let account_url = if config.endpoint.is_empty() {
            format!("https://{account}.blob.core.windows.net")
        } else {
            config.endpoint.trim_end_matches('/').to_owned()
        };
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account(&account)
            .with_container_name(&config.container)
            .with_endpoint(account_url.clone())
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            // A store that stops answering is an error within READ_TIMEOUT, which the job shows and retries; a
            // slow one is not, as long as bytes move.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(account_url.starts_with("http://"))
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_read_timeout(READ_TIMEOUT)
                    .with_timeout(REQUEST_TIMEOUT),
            );
        builder = match &config.credential {
            AzureCredential::AccountKey(key) => builder.with_access_key(key),
            AzureCredential::Emulator => builder.with_access_key(EMULATOR_KEY),
            // A SAS token is written percent-encoded; the client encodes the pairs it is given again.
            AzureCredential::Sas(token) => builder.with_sas_authorization(
                token
                    .trim_start_matches('?')
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(name, value)| {
                        let value = percent_encoding::percent_decode_str(value)
                            .decode_utf8_lossy()
                            .into_owned();
                        (name.to_owned(), value)
                    })
                    .collect::<Vec<_>>(),
            ),
            AzureCredential::ManagedIdentity => builder,
        };
        let store = builder.build().map_err(|error| {
            StoreError::Invalid(format!(
                "azure store for {account}/{}: {error}",
                config.container
            ))
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| StoreError::Invalid(format!("http client: {error}")))?;
        Ok(Self {
            config: AzureStoreConfig { account, ..config },
            account_url,
            store: Arc::new(store),
            http,
        })
    }

    /// Signs and sends a container-level request (`restype=container`).
    async fn container_request(&self, method: reqwest::Method) -> StoreResult<reqwest::StatusCode> {
        let container_url = format!("{}/{}", self.account_url, self.config.container);
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut request = self
            .http
            .request(method.clone(), format!("{container_url}?restype=container"))
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header("Content-Length", "0");
        match &self.config.credential {
            AzureCredential::AccountKey(key) => {
                request = request.header(
                    "Authorization",
                    self.shared_key(method.as_str(), &date, key)?,
                );
            }
            AzureCredential::Emulator => {
                request = request.header(
                    "Authorization",
                    self.shared_key(method.as_str(), &date, EMULATOR_KEY)?,
                );
            }
            AzureCredential::Sas(token) => {
                request = self
                    .http
                    .request(
                        method,
                        format!(
                            "{container_url}?restype=container&{}",
                            token.trim_start_matches('?')
                        ),
                    )
                    .header("x-ms-date", &date)
                    .header("x-ms-version", API_VERSION)
                    .header("Content-Length", "0");
            }
            AzureCredential::ManagedIdentity => {
                return Err(StoreError::Invalid(
                    "container calls need an account key or SAS; with a managed identity create the container beforehand"
                        .to_owned(),
                ));
            }
        }
        let response = request.send().await.map_err(|error| {
            StoreError::Unavailable(format!("container request to {container_url}: {error}"))
        })?;
        Ok(response.status())
    }

    /// `SharedKey account:signature` for a container request without body.
    fn shared_key(&self, verb: &str, date: &str, key: &str) -> StoreResult<String> {
        let key_bytes = BASE64
            .decode(key)
            .map_err(|_| StoreError::Denied("the account key is not valid base64".to_owned()))?;
        let path = reqwest::Url::parse(&format!("{}/{}", self.account_url, self.config.container))
            .map_err(|error| StoreError::Invalid(format!("container url: {error}")))?
            .path()
            .to_owned();
        let canonical_headers = format!("x-ms-date:{date}\nx-ms-version:{API_VERSION}\n");
        let canonical_resource = format!("/{}{path}\nrestype:container", self.config.account);
        let string_to_sign =
            format!("{verb}\n\n\n\n\n\n\n\n\n\n\n\n{canonical_headers}{canonical_resource}");
        let signing_key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
        let signature = BASE64.encode(hmac::sign(&signing_key, string_to_sign.as_bytes()).as_ref());
        Ok(format!("SharedKey {}:{signature}", self.config.account))
    }
}

#[async_trait::async_trait]
impl BlobStore for AzureStore {
    fn describe(&self) -> String {
        format!("azure:{}/{}", self.config.account, self.config.container)
    }

    async fn ensure_container(&self) -> StoreResult<()> {
        if self.config.credential == AzureCredential::ManagedIdentity {
            // Proves the container exists and the identity may read it.
            self.list("").await?;
            return Ok(());
        }
        let status = self.container_request(reqwest::Method::PUT).await?;
        match status.as_u16() {
            201 | 409 => Ok(()),
            // A container SAS cannot create its container: it must exist, and the SAS must list it.
            401 | 403 if matches!(self.config.credential, AzureCredential::Sas(_)) => {
                self.list("").await.map_err(|error| {
                    StoreError::Denied(format!(
                        "container {} cannot be created with a container SAS and cannot be listed with it ({error}): \
                         create the container first and give a SAS with read, add, create, write, delete and list \
                         (sp=racwdl)",
                        self.config.container
                    ))
                })?;
                Ok(())
            }
            401 | 403 => Err(StoreError::Denied(format!(
                "creating container {} was refused ({status}): check the account name and key",
                self.config.container
            ))),
            400 => Err(StoreError::Invalid(format!(
                "container name {:?} was refused ({status}): use 3 to 63 lowercase letters, digits and '-'",
                self.config.container
            ))),
            _ => Err(StoreError::Unavailable(format!(
                "creating container {}: {status}",
                self.config.container
            ))),
        }
    }

    async fn delete_container(&self) -> StoreResult<()> {
        let status = self.container_request(reqwest::Method::DELETE).await?;
        match status.as_u16() {
            202 | 404 => Ok(()),
            // A container SAS cannot delete its container, which clouddp did not create: empty it of what
            // clouddp wrote instead.
            401 | 403 if matches!(self.config.credential, AzureCredential::Sas(_)) => {
                for prefix in ["content/", "usage/"] {
                    for object in self.list(prefix).await? {
                        self.delete(&object.path).await?;
                    }
                }
                Ok(())
            }
            401 | 403 => Err(StoreError::Denied(format!(
                "deleting container {}: {status}",
                self.config.container
            ))),
            _ => Err(StoreError::Unavailable(format!(
                "deleting container {}: {status}",
                self.config.container
            ))),
        }
    }

    async fn put_part(
        &self,
        path: &str,
        index: u32,
        _offset: u64,
        data: Bytes,
    ) -> StoreResult<String> {
        let location = object_path(path)?;
        let part = self
            .store
            .put_part(&location, &String::new(), index as usize, data.into())
            .await
            .map_err(|error| map_error("put block", error))?;
        Ok(part.content_id)
    }

    async fn complete(
        &self,
        path: &str,
        part_tokens: &[String],
        total_len: u64,
    ) -> StoreResult<()> {
        let location = object_path(path)?;
        let parts = part_tokens
            .iter()
            .map(|token| PartId {
                content_id: token.clone(),
            })
            .collect();
        self.store
            .complete_multipart(&location, &String::new(), parts)
            .await
            .map_err(|error| map_error("put block list", error))?;
        match self.head(path).await? {
            Some(len) if len == total_len => Ok(()),
            found => Err(StoreError::Invalid(format!(
                "committed object has {found:?} bytes, expected {total_len}"
            ))),
        }
    }

    async fn abort(&self, _path: &str) -> StoreResult<()> {
        // Azure collects uncommitted blocks itself after a week; there is no call to discard them.
        Ok(())
    }

    async fn put(&self, path: &str, data: Bytes) -> StoreResult<()> {
        let location = object_path(path)?;
        self.store
            .put(&location, data.into())
            .await
            .map(|_| ())
            .map_err(|error| map_error("put blob", error))
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let location = object_path(path)?;
        self.store
            .get_range(&location, range)
            .await
            .map_err(|error| map_error("get blob range", error))
    }

    async fn head(&self, path: &str) -> StoreResult<Option<u64>> {
        let location = object_path(path)?;
        match self.store.head(&location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(map_error("head blob", error)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        let prefix_path = if prefix.is_empty() {
            None
        } else {
            Some(
                ObjectPath::parse(prefix.trim_end_matches('/'))
                    .map_err(|error| StoreError::Invalid(error.to_string()))?,
            )
        };
        let mut found: Vec<ObjectInfo> = self
            .store
            .list(prefix_path.as_ref())
            .map_ok(|meta| ObjectInfo {
                path: meta.location.to_string(),
                size: meta.size,
            })
            .try_collect()
            .await
            .map_err(|error| map_error("list blobs", error))?;
        found.retain(|object| object.path.starts_with(prefix));
        found.sort_by(|left, right| left.path.cmp(&right.path));
        Ok(found)
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        let location = object_path(path)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(map_error("delete blob", error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_read_from_the_response_not_from_any_number_in_the_text() {
        assert_eq!(
            parse_failure(
                "403 Forbidden: <?xml version=\"1.0\"?><Error><Code>AuthorizationFailure</Code></Error>"
            ),
            Some(HttpFailure {
                status: 403,
                code: "AuthorizationFailure".to_owned()
            })
        );
        assert_eq!(
            parse_failure(
                "400 Bad Request: <Error><Code>InvalidBlockList</Code><Message>RequestId:4031-401</Message></Error>"
            ),
            Some(HttpFailure {
                status: 400,
                code: "InvalidBlockList".to_owned()
            })
        );
        assert_eq!(
            parse_failure("503 Service Unavailable: "),
            Some(HttpFailure {
                status: 503,
                code: String::new()
            })
        );
        assert_eq!(parse_failure("oops"), None);
    }

    #[test]
    fn an_error_that_merely_mentions_401_or_403_is_transient() {
        let error = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "connection refused while putting content/cv-4031-ab403/sealed (401)".into(),
        };
        assert!(map_error("put block", error).is_retryable());
    }
}
