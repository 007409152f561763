//! `clouddp-agent get`: locate a deployment's content, download its sealed chunks from the first location that
//! serves them (parallel ranges, resumable from a state file in the cache dir), open and verify every chunk
//! against the manifest, verify the whole content, and write its files atomically.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clouddp_core::content::sha256;
use clouddp_core::seal::{ChunkCipher, ContentBinding, DataKey, SealedLayout};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient;
use serde::{Deserialize, Serialize};

use crate::config::{AgentConfig, Network};
use crate::tree;
use blake3::hazmat::ChainingValue;

/// Chunks fetched per range request.
const CHUNKS_PER_REQUEST: u64 = 4;
/// How often the resume state is saved while downloading.
const SAVE_EVERY: Duration = Duration::from_millis(500);
/// The header naming the client to the content endpoint.
const CLIENT_HEADER: &str = "x-clouddp-client";

/// What `get` needs besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// The deployment.
    pub deployment: String,
    /// Where the files go.
    pub to: PathBuf,
    /// Host name overrides: (host, address).
    pub resolve: Vec<(String, SocketAddr)>,
    /// Extra trusted CA certificates (PEM) for the content endpoints.
    pub ca_certificates: Vec<PathBuf>,
    /// Attempts per location on transient failures.
    pub retries: u32,
    /// Show a progress bar.
    pub progress: bool,
    /// Bandwidth limit in bytes per second; 0 for none.
    pub max_rate: u64,
    /// The trace the download's calls belong to.
    pub trace: TraceContext,
}

/// The W3C trace context of one download: continued from `TRACEPARENT` when the agent is started inside a trace
/// (the environment-variable carrier of OpenTelemetry), a new trace otherwise. Every call the download makes
/// carries it as `traceparent`, so the distribution manager's spans for the location and for each range join
/// one trace, whose id the agent reports.
#[derive(Debug, Clone)]
pub struct TraceContext {
    trace_id: String,
    header: String,
}

impl TraceContext {
    /// From `TRACEPARENT` when it holds a valid context, else a new trace; a new span id either way.
    pub fn from_env() -> Self {
        let (trace_id, flags) = std::env::var("TRACEPARENT")
            .ok()
            .and_then(|value| parse_traceparent(&value))
            .unwrap_or_else(|| (hex::encode(random::<16>()), "01".to_owned()));
        let header = format!("00-{trace_id}-{}-{flags}", hex::encode(random::<8>()));
        Self { trace_id, header }
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The `traceparent` value the calls carry.
    pub fn header(&self) -> &str {
        &self.header
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        Self::from_env()
    }
}

/// The trace id and flags of a version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zeros).
fn parse_traceparent(value: &str) -> Option<(String, String)> {
    let hex = |text: &str, len: usize| {
        text.len() == len
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
            && text.bytes().any(|byte| byte != b'0')
    };
    let mut parts = value.trim().split('-');
    let (Some("00"), Some(trace), Some(parent), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let flags_ok = flags.len() == 2 && flags.bytes().all(|byte| byte.is_ascii_hexdigit());
    (hex(trace, 32) && hex(parent, 16) && flags_ok).then(|| (trace.to_owned(), flags.to_owned()))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    // The system's generator does not fail on Linux; an all-zero id would only be an invalid context.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes
}

/// A location that did not serve, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The DP's name.
    pub distribution_point: String,
    /// Its tier.
    pub tier: String,
    /// What went wrong.
    pub error: String,
}

/// The outcome of a successful `get`.
#[derive(Debug, Clone, Serialize)]
pub struct GetReport {
    /// The content version.
    pub content: String,
    /// Files written.
    pub files: Vec<String>,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Bytes already in the cache from an earlier, interrupted run.
    pub resumed_bytes: u64,
    /// The DP that served the rest.
    pub served_by: String,
    /// Its tier.
    pub tier: String,
    /// Why it was offered.
    pub reasons: Vec<String>,
    /// Locations that failed before it.
    pub failed: Vec<Attempt>,
    /// Seconds taken.
    pub seconds: f64,
    /// The trace of the download's calls (see [`TraceContext`]).
    pub trace_id: String,
}

/// Why `get` failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Bad input or a local problem (exit 1).
    #[error("{0}")]
    Local(String),
    /// The distribution manager could not be reached (exit 3).
    #[error("cannot reach the distribution manager at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// The site refused the request or allows no location (exit 4).
    #[error("{0}")]
    Refused(String),
    /// Every location failed (exit 5); what is downloaded stays cached for the next run.
    #[error("no location could serve the content; the verified part is kept for the next run:\n{}", attempts.iter().map(|attempt| format!("  {} ({}): {}", attempt.distribution_point, attempt.tier, attempt.error)).collect::<Vec<_>>().join("\n"))]
    AllLocationsFailed { attempts: Vec<Attempt> },
    /// The downloaded content does not match its manifest (exit 6).
    #[error("{0}")]
    Verification(String),
}

impl GetError {
    /// The exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Local(_) => 1,
            Self::Unreachable { .. } => 3,
            Self::Refused(_) => 4,
            Self::AllLocationsFailed { .. } => 5,
            Self::Verification(_) => 6,
        }
    }
}

/// The resume state of one content version in the cache.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ResumeState {
    content: String,
    target_dir: String,
    plaintext_sha256: String,
    chunk_count: u64,
    done: Vec<bool>,
}

impl ResumeState {
    /// Whether chunk `index` is written and verified.
    fn is_done(&self, index: u64) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|slot| self.done.get(slot))
            .copied()
            .unwrap_or(false)
    }

    /// Marks chunk `index` as written and verified, or as missing.
    fn mark(&mut self, index: u64, done: bool) {
        if let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|slot| self.done.get_mut(slot))
        {
            *slot = done;
        }
    }
}

/// Why one location stopped serving.
enum LocationFailure {
    /// Try again after a pause (connection refused or reset, 5xx other than 503).
    Transient(String),
    /// Go to the next location.
    Final(String),
}

/// One file of the content, written through a hidden partial file beside its final path.
struct Target {
    start: u64,
    size: u64,
    path: PathBuf,
    partial: PathBuf,
    file: std::fs::File,
}

/// The content's files, addressed by offset in the plaintext (the files back to back, in manifest order).
struct Targets(Vec<Target>);

impl Targets {
    fn open(to: &Path, files: &[pb::ContentFile]) -> std::io::Result<Self> {
        let mut targets = Vec::with_capacity(files.len());
        let mut start = 0;
        for file in files {
            let path = to.join(&file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let partial = path.with_file_name(format!(
                ".{}.clouddp-partial",
                path.file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("file")
            ));
            let handle = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&partial)?;
            handle.set_len(file.size)?;
            targets.push(Target {
                start,
                size: file.size,
                path,
                partial,
                file: handle,
            });
            start += file.size;
        }
        Ok(Self(targets))
    }

    /// Calls `io` with each file's slice of `[offset, offset + len)`: (file, offset in the file, range in the buffer).
    fn each(
        &self,
        offset: u64,
        len: usize,
        mut io: impl FnMut(&std::fs::File, u64, std::ops::Range<usize>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let end = offset + len as u64;
        for target in &self.0 {
            let (from, to) = (
                offset.max(target.start),
                end.min(target.start + target.size),
            );
            if from < to {
                let buffer = usize::try_from(from - offset).unwrap_or(0)
                    ..usize::try_from(to - offset).unwrap_or(0);
                io(&target.file, from - target.start, buffer)?;
            }
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
        self.each(offset, data.len(), |file, at, range| {
            file.write_all_at(&data[range], at)
        })
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
        let len = buffer.len();
        self.each(offset, len, |file, at, range| {
            file.read_exact_at(&mut buffer[range], at)
        })
    }

    /// Syncs each file and renames it into place.
    fn publish(&self) -> Result<Vec<String>, String> {
        let mut paths = Vec::with_capacity(self.0.len());
        for target in &self.0 {
            target
                .file
                .sync_all()
                .and_then(|()| std::fs::rename(&target.partial, &target.path))
                .map_err(|error| format!("cannot write {}: {error}", target.path.display()))?;
            paths.push(target.path.display().to_string());
        }
        Ok(paths)
    }

    fn discard(&self) {
        for target in &self.0 {
            let _ = std::fs::remove_file(&target.partial);
        }
    }
}

/// The whole content's digest as the manifest gives it: BLAKE3 when present (several times faster than SHA-256
/// on one core), SHA-256 for versions registered before BLAKE3 was recorded.
enum WholeDigest {
    Blake3(Box<blake3::Hasher>),
    Sha256(aws_lc_rs::digest::Context),
}

impl WholeDigest {
    fn for_manifest(manifest: &pb::ContentManifest) -> Self {
        if manifest.plaintext_blake3.is_empty() {
            Self::Sha256(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
        } else {
            Self::Blake3(Box::default())
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Blake3(hasher) => {
                hasher.update(bytes);
            }
            Self::Sha256(context) => context.update(bytes),
        }
    }

    /// Whether the bytes fed match the manifest's digest.
    fn matches(self, manifest: &pb::ContentManifest) -> bool {
        match self {
            Self::Blake3(hasher) => {
                hasher.finalize().as_bytes().as_slice() == manifest.plaintext_blake3.as_slice()
            }
            Self::Sha256(context) => {
                context.finish().as_ref() == manifest.plaintext_sha256.as_slice()
            }
        }
    }
}

/// How the whole content is checked against the manifest.
enum WholeCheck {
    /// BLAKE3 chunk by chunk ([`crate::tree`]): each chunk's chaining value is computed as soon as it is opened
    /// and written, on the thread that opened it, while it is still in the CPU's cache; the root is joined and
    /// compared at the end.
    Tree(Mutex<Vec<Option<ChainingValue>>>),
    /// The files read back in order at the end: SHA-256 for versions registered before BLAKE3 was recorded,
    /// BLAKE3 for a content of one chunk.
    ReadBack,
}

/// One content version being downloaded: shared by the lanes, each of which opens, writes and hashes the chunks
/// it receives.
struct Download {
    cipher: ChunkCipher,
    layout: SealedLayout,
    chunk_hashes: Vec<Vec<u8>>,
    targets: Targets,
    check: WholeCheck,
    state: Mutex<ResumeState>,
    state_path: PathBuf,
    /// When the resume state was last saved; held while it is written.
    last_save: Mutex<Instant>,
    progress: indicatif::ProgressBar,
    /// Bandwidth limit: bytes per second (0 for none), and the bytes reserved since `started`.
    max_rate: u64,
    reserved: Mutex<(Instant, u64)>,
}

impl Download {
    /// Waits until sending `bytes` more keeps the download under its bandwidth limit.
    async fn throttle(&self, bytes: u64) {
        if self.max_rate == 0 {
            return;
        }
        let due = match self.reserved.lock() {
            Ok(mut reserved) => {
                reserved.1 += bytes;
                reserved.0 + Duration::from_secs_f64(reserved.1 as f64 / self.max_rate as f64)
            }
            Err(_) => return,
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
    }

    fn missing_groups(&self) -> Vec<std::ops::Range<u64>> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        let mut groups = Vec::new();
        let mut index = 0;
        while index < self.layout.chunk_count() {
            if state.is_done(index) {
                index += 1;
                continue;
            }
            let start = index;
            while index < self.layout.chunk_count()
                && index - start < CHUNKS_PER_REQUEST
                && !state.is_done(index)
            {
                index += 1;
            }
            groups.push(start..index);
        }
        groups
    }

    /// Opens chunk `index` from its `sealed` bytes (authenticating it by its AES-GCM tag), writes it and hashes
    /// it; from then on it is kept across a restart. Returns its plaintext length.
    fn accept(&self, index: u64, sealed: &mut [u8]) -> Result<u64, String> {
        let plain = self
            .cipher
            .open_chunk_in_place(index, sealed)
            .map_err(|_| {
                format!("chunk {index} failed its integrity check: this DP's copy is damaged")
            })?;
        self.targets
            .write_at(plain, self.position(index))
            .map_err(|error| format!("cannot write the files: {error}"))?;
        self.hashed(index, plain);
        if let Ok(mut state) = self.state.lock() {
            state.mark(index, true);
        }
        self.progress.inc(plain.len() as u64);
        Ok(plain.len() as u64)
    }

    /// Chunks written and verified so far.
    fn done_count(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |state| state.done.iter().filter(|done| **done).count())
    }

    /// Where chunk `index` starts in the plaintext.
    fn position(&self, index: u64) -> u64 {
        index * u64::from(self.layout.chunk_size())
    }

    /// Records chunk `index`'s share of the whole content's digest, when it is taken chunk by chunk.
    fn hashed(&self, index: u64, plain: &[u8]) {
        if let WholeCheck::Tree(values) = &self.check {
            let value = tree::chunk_value(index, u64::from(self.layout.chunk_size()), plain);
            if let Ok(mut values) = values.lock()
                && let Some(slot) = usize::try_from(index)
                    .ok()
                    .and_then(|slot| values.get_mut(slot))
            {
                *slot = Some(value);
            }
        }
    }

    /// Reads chunk `index`'s plaintext back from the files into `buffer`.
    fn read_back(&self, index: u64, buffer: &mut Vec<u8>) -> Result<(), String> {
        let len = self
            .layout
            .chunk_plain_len(index)
            .map_err(|error| error.to_string())?;
        buffer.resize(len, 0);
        self.targets
            .read_at(buffer, self.position(index))
            .map_err(|error| format!("cannot read back chunk {index}: {error}"))
    }

    /// Reads the chunks kept from an earlier run back from the files and checks each against its hash in the
    /// manifest: an intact one counts (and is hashed), a damaged one is marked missing and fetched again. Returns
    /// the bytes kept.
    fn verify_kept(&self) -> Result<u64, String> {
        let kept: Vec<u64> = {
            let state = self
                .state
                .lock()
                .map_err(|_| "state lock poisoned".to_owned())?;
            (0..self.layout.chunk_count())
                .filter(|index| state.is_done(*index))
                .collect()
        };
        let mut buffer = Vec::new();
        let mut bytes = 0_u64;
        for index in kept {
            self.read_back(index, &mut buffer)?;
            let intact = usize::try_from(index)
                .ok()
                .and_then(|slot| self.chunk_hashes.get(slot))
                .is_some_and(|hash| hash.as_slice() == sha256(&buffer).as_slice());
            if intact {
                self.hashed(index, &buffer);
                bytes += buffer.len() as u64;
            } else if let Ok(mut state) = self.state.lock() {
                state.mark(index, false);
            }
        }
        Ok(bytes)
    }

    /// Whether the written content matches the manifest's digest (every chunk is written and verified).
    fn whole_matches(&self, manifest: &pb::ContentManifest) -> Result<bool, String> {
        match &self.check {
            WholeCheck::Tree(values) => {
                let values = values
                    .lock()
                    .map_err(|_| "hash lock poisoned".to_owned())?
                    .iter()
                    .copied()
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| "a chunk of the content was never hashed".to_owned())?;
                Ok(tree::root(
                    &values,
                    u64::from(self.layout.chunk_size()),
                    manifest.plaintext_length,
                )
                .is_some_and(|root| root.as_bytes().as_slice() == manifest.plaintext_blake3))
            }
            WholeCheck::ReadBack => {
                let mut digest = WholeDigest::for_manifest(manifest);
                let mut buffer = Vec::new();
                for index in 0..self.layout.chunk_count() {
                    self.read_back(index, &mut buffer)?;
                    digest.update(&buffer);
                }
                Ok(digest.matches(manifest))
            }
        }
    }

    /// Saves the resume state, at most every [`SAVE_EVERY`] unless `force`.
    fn save(&self, force: bool) -> Result<(), String> {
        // Held until the file is renamed into place: one writer of the partial file at a time.
        let mut last = self
            .last_save
            .lock()
            .map_err(|_| "state lock poisoned".to_owned())?;
        if !force && last.elapsed() < SAVE_EVERY {
            return Ok(());
        }
        *last = Instant::now();
        let state = self
            .state
            .lock()
            .map_err(|_| "state lock poisoned".to_owned())?
            .clone();
        // No sync first: chunks kept from an earlier run are read back and checked against the manifest before
        // they count, so a state file ahead of the data costs a refetch, never a wrong file.
        let partial = self.state_path.with_extension("partial");
        std::fs::write(
            &partial,
            serde_json::to_vec(&state).map_err(|error| error.to_string())?,
        )
        .and_then(|()| std::fs::rename(&partial, &self.state_path))
        .map_err(|error| format!("cannot save the resume state: {error}"))
    }
}

fn tier_label(tier: i32) -> &'static str {
    match pb::LocationTier::try_from(tier).unwrap_or_default() {
        pb::LocationTier::Preferred => "preferred",
        pb::LocationTier::Remote => "remote",
        pb::LocationTier::Cloud => "cloud",
        pb::LocationTier::Internet => "internet",
        pb::LocationTier::Unspecified => "unknown",
    }
}

async fn locate(
    config: &AgentConfig,
    identity: Option<&crate::enroll::Identity>,
    deployment: &str,
    trace: &TraceContext,
) -> Result<pb::LocateContentResponse, GetError> {
    let unreachable = |detail: String| GetError::Unreachable {
        endpoint: config.endpoint.clone(),
        detail,
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
        .map_err(|error| GetError::Local(format!("endpoint {:?}: {error}", config.endpoint)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if config.endpoint.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &config.ca_certificate {
            let pem = std::fs::read(ca).map_err(|error| {
                GetError::Local(format!("cannot read {}: {error}", ca.display()))
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let Some(identity) = identity {
            // The enrolled device authenticates with its certificate; the site knows it from it.
            let unreadable = |error: std::io::Error| {
                GetError::Local(format!(
                    "cannot read the identity in {}: {error}",
                    identity.dir.display()
                ))
            };
            tls = identity.client_tls(tls).map_err(unreadable)?;
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| GetError::Local(error.to_string()))?;
    }
    let mut client = ContentLocationServiceClient::new(endpoint.connect_lazy());
    let request = pb::LocateContentRequest {
        device_id: config.device_id.clone(),
        user_id: config.user_id.clone().unwrap_or_default(),
        ip_address: config.ip_address.clone().unwrap_or_default(),
        network: match config.network {
            Network::Intranet => pb::ClientNetwork::Intranet,
            Network::Internet => pb::ClientNetwork::Internet,
        }
        .into(),
        deployment_id: deployment.to_owned(),
        region_hint: config.region.clone().unwrap_or_default(),
        latency_hints_ms: HashMap::new(),
    };
    let mut request = tonic::Request::new(request);
    if let Ok(value) = trace.header().parse() {
        request.metadata_mut().insert("traceparent", value);
    }
    match client.locate_content(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status)
            if status.code() == tonic::Code::Unavailable
                && std::error::Error::source(&status).is_some() =>
        {
            Err(unreachable(status.message().to_owned()))
        }
        Err(status) => Err(GetError::Refused(format!(
            "the site refused: {:?}: {}",
            status.code(),
            status.message()
        ))),
    }
}

/// Downloads, verifies and writes the content of `options.deployment`.
pub async fn get(config: &AgentConfig, options: GetOptions) -> Result<GetReport, GetError> {
    let started = Instant::now();
    let identity = crate::enroll::Identity::load(&config.identity_dir);
    let mut config = config.clone();
    if let Some(identity) = &identity {
        config.device_id.clone_from(&identity.device_id);
    }
    let config = &config;
    if config.device_id.trim().is_empty() {
        return Err(GetError::Local(
            "the device id is not set: enroll the device (`clouddp-agent enroll --token …`), or give --device or set device_id in the config (CLOUDDP_AGENT__DEVICE_ID)".to_owned(),
        ));
    }
    if let Some(identity) = &identity {
        // A certificate close to its expiry is renewed first; a renewal that fails leaves the current one in use.
        match crate::enroll::renew(config, identity, false).await {
            Ok(true) => tracing_line("renewed the device certificate"),
            Ok(false) => {}
            Err(error) => tracing_line(&format!(
                "cannot renew the device certificate yet ({error}); using the current one"
            )),
        }
    }
    let answer = locate(
        config,
        identity.as_ref(),
        &options.deployment,
        &options.trace,
    )
    .await?;
    let manifest = answer
        .manifest
        .clone()
        .ok_or_else(|| GetError::Refused("the answer has no manifest".to_owned()))?;
    let (content_id, version) = answer
        .content_id
        .split_once('@')
        .and_then(|(id, version)| Some((id.to_owned(), version.parse::<u32>().ok()?)))
        .ok_or_else(|| {
            GetError::Refused(format!("unexpected content id {:?}", answer.content_id))
        })?;
    let layout = SealedLayout::new(manifest.plaintext_length, manifest.chunk_size)
        .map_err(|error| GetError::Refused(format!("unusable manifest: {error}")))?;
    if layout.sealed_len() != manifest.sealed_length
        || layout.chunk_count() != manifest.chunk_sha256.len() as u64
    {
        return Err(GetError::Refused(
            "the manifest does not describe a sealed object this agent can read".to_owned(),
        ));
    }
    for file in &manifest.files {
        clouddp_core::content::relative_path(&file.path).map_err(|error| {
            GetError::Refused(format!(
                "the manifest names an unsafe path {:?}: {error}",
                file.path
            ))
        })?;
    }
    let key = DataKey::from_bytes(&answer.data_key)
        .map_err(|error| GetError::Refused(format!("data key: {error}")))?;
    let cipher = ChunkCipher::new(
        &key,
        ContentBinding {
            content_id,
            version,
        },
        layout,
    )
    .map_err(|error| GetError::Refused(error.to_string()))?;

    // The files are written in place through partial files; the cache dir keeps which chunks they hold.
    let local = |what: &str, error: std::io::Error| GetError::Local(format!("{what}: {error}"));
    let cache = config.cache_dir.join(answer.content_id.replace('@', "-v"));
    std::fs::create_dir_all(&cache)
        .map_err(|error| local(&format!("cannot create {}", cache.display()), error))?;
    let state_path = cache.join("state.json");
    let plaintext_sha256 = hex::encode(&manifest.plaintext_sha256);
    let chunk_count = layout.chunk_count();
    std::fs::create_dir_all(&options.to)
        .map_err(|error| local(&format!("cannot create {}", options.to.display()), error))?;
    let target_dir = std::fs::canonicalize(&options.to)
        .map_err(|error| local(&format!("cannot resolve {}", options.to.display()), error))?
        .display()
        .to_string();
    let fresh = ResumeState {
        content: answer.content_id.clone(),
        target_dir: target_dir.clone(),
        plaintext_sha256: plaintext_sha256.clone(),
        chunk_count,
        done: vec![false; usize::try_from(chunk_count).unwrap_or(0)],
    };
    let state = std::fs::read(&state_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ResumeState>(&bytes).ok())
        .filter(|state| {
            state.content == fresh.content
                && state.target_dir == target_dir
                && state.plaintext_sha256 == plaintext_sha256
                && state.done.len() == fresh.done.len()
        })
        .unwrap_or(fresh);
    let targets = Targets::open(&options.to, &manifest.files).map_err(|error| {
        local(
            &format!("cannot create the files in {}", options.to.display()),
            error,
        )
    })?;
    let progress = if options.progress {
        let bar = indicatif::ProgressBar::new(manifest.plaintext_length);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let chunk_size = u64::from(layout.chunk_size());
    let check = if !manifest.plaintext_blake3.is_empty()
        && tree::usable(chunk_size, manifest.plaintext_length)
    {
        WholeCheck::Tree(Mutex::new(vec![
            None;
            usize::try_from(chunk_count).unwrap_or(0)
        ]))
    } else {
        WholeCheck::ReadBack
    };
    let download = Arc::new(Download {
        cipher,
        layout,
        chunk_hashes: manifest.chunk_sha256.clone(),
        targets,
        check,
        state: Mutex::new(state),
        state_path,
        last_save: Mutex::new(Instant::now()),
        progress,
        max_rate: options.max_rate,
        reserved: Mutex::new((Instant::now(), 0)),
    });
    let resumed_bytes = blocking(&download, Download::verify_kept).await?;
    download.progress.set_position(resumed_bytes);

    // `parallel_downloads` lanes, each a thread with its own HTTP client and connection (see `from_location`),
    // sharing one TLS configuration: the system's trusted roots and the extra CA certificates, loaded once.
    // HTTP/1.1: a connection per lane moves bulk data faster than multiplexing the ranges over one HTTP/2
    // connection.
    let mut roots = Vec::new();
    for path in options
        .ca_certificates
        .iter()
        .chain(config.ca_certificate.iter())
    {
        let pem = std::fs::read(path)
            .map_err(|error| local(&format!("cannot read {}", path.display()), error))?;
        for certificate in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.push(certificate.map_err(|error| local(&format!("{}", path.display()), error))?);
        }
    }
    // An enrolled device trusts its site's CA (on-premises endpoints serve certificates it issued) and presents
    // its certificate, to which the site bound its tokens.
    let mut client_auth = None;
    if let Some(identity) = &identity {
        let unreadable = |error: std::io::Error| {
            GetError::Local(format!(
                "cannot read the identity in {}: {error}",
                identity.dir.display()
            ))
        };
        for certificate in
            rustls_pemfile::certs(&mut identity.ca_pem().map_err(unreadable)?.as_slice())
        {
            roots.push(certificate.map_err(unreadable)?);
        }
        client_auth = Some(identity.rustls_credential().map_err(unreadable)?);
    }
    let tls =
        tls_config(roots, client_auth).map_err(|error| GetError::Local(format!("TLS: {error}")))?;
    let clients = (0..config.parallel_downloads.max(1))
        .map(|_| http_client(&options.resolve, tls.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| GetError::Local(format!("HTTP client: {error}")))?;

    let mut failed = Vec::new();
    let mut served = None;
    for location in &answer.locations {
        if download.missing_groups().is_empty() {
            served = Some(location);
            break;
        }
        download
            .progress
            .set_message(location.distribution_point_name.clone());
        match from_location(&clients, config, &options, &download, location).await {
            Ok(()) => {
                served = Some(location);
                break;
            }
            Err(error) => {
                tracing_line(&format!(
                    "{} ({}) failed: {error}; trying the next location",
                    location.distribution_point_name,
                    tier_label(location.tier)
                ));
                failed.push(Attempt {
                    distribution_point: location.distribution_point_name.clone(),
                    tier: tier_label(location.tier).to_owned(),
                    error,
                });
            }
        }
    }
    let _ = download.save(true);
    let Some(location) = served else {
        download.progress.abandon();
        return Err(GetError::AllLocationsFailed { attempts: failed });
    };
    download.progress.finish_and_clear();

    // The whole content verified against the manifest; only then do the files appear under their names.
    let expected = manifest.clone();
    let whole = blocking(&download, move |download| download.whole_matches(&expected)).await?;
    if !whole {
        // Nothing of it can be trusted: start over next time.
        download.targets.discard();
        let _ = std::fs::remove_dir_all(&cache);
        return Err(GetError::Verification(
            "the downloaded content does not match its digest in the manifest; the partial files were discarded"
                .to_owned(),
        ));
    }
    let files = download.targets.publish().map_err(GetError::Local)?;
    let _ = std::fs::remove_dir_all(&cache);
    let reasons = answer
        .decisions
        .iter()
        .find(|decision| decision.distribution_point_id == location.distribution_point_id)
        .map(|decision| decision.reasons.clone())
        .unwrap_or_default();
    Ok(GetReport {
        content: answer.content_id.clone(),
        files,
        bytes: manifest.plaintext_length,
        resumed_bytes,
        served_by: location.distribution_point_name.clone(),
        tier: tier_label(location.tier).to_owned(),
        reasons,
        failed,
        seconds: started.elapsed().as_secs_f64(),
        trace_id: options.trace.trace_id().to_owned(),
    })
}

/// Runs `work` on the download on a blocking thread (it reads the files back).
async fn blocking<T: Send + 'static>(
    download: &Arc<Download>,
    work: impl FnOnce(&Download) -> Result<T, String> + Send + 'static,
) -> Result<T, GetError> {
    let download = download.clone();
    tokio::task::spawn_blocking(move || work(&download))
        .await
        .map_err(|error| GetError::Local(error.to_string()))?
        .map_err(GetError::Local)
}

fn tracing_line(message: &str) {
    eprintln!("clouddp-agent: {message}");
}

/// TLS for the content endpoints: servers verified against the system's trusted roots and `extra_roots`; the
/// device's certificate presented when it has one.
fn tls_config(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    client_auth: Option<crate::enroll::RustlsCredential>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match client_auth {
        Some((chain, key)) => config.with_client_auth_cert(chain, key)?,
        None => config.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An HTTP client for one lane: its own connection pool, so a lane's connection lives on the lane's thread.
fn http_client(
    resolve: &[(String, SocketAddr)],
    tls: rustls::ClientConfig,
) -> reqwest::Result<reqwest::Client> {
    let mut http = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30));
    for (host, addr) in resolve {
        http = http.resolve(host, *addr);
    }
    http.tls_backend_preconfigured(tls).build()
}

/// Downloads every missing chunk from one location, retrying transient failures with backoff.
///
/// Each lane is a thread of its own (`parallel_downloads` of them) with its own connection: it takes
/// the next missing range from a shared list, and opens, writes and hashes each chunk on the same thread as soon
/// as its bytes are in, while they are still in that core's cache (handing received ranges to other threads was
/// measured slower: every copy and pass then touched memory last written by the other core).
async fn from_location(
    clients: &[reqwest::Client],
    config: &AgentConfig,
    options: &GetOptions,
    download: &Arc<Download>,
    location: &pb::ContentLocation,
) -> Result<(), String> {
    let mut attempt = 0_u32;
    let mut pause = Duration::from_millis(250);
    loop {
        let groups = download.missing_groups();
        if groups.is_empty() {
            return Ok(());
        }
        let before = download.done_count();
        let lane = Lane {
            download: download.clone(),
            location: Arc::new(location.clone()),
            client_id: config.device_id.clone(),
            traceparent: options.trace.header().to_owned(),
            waiting: Arc::new(Mutex::new(groups.into())),
            failure: Arc::new(Mutex::new(None)),
        };
        let lanes: Vec<_> = clients
            .iter()
            .map(|http| {
                let (this_lane, client) = (lane.clone(), http.clone());
                tokio::task::spawn_blocking(move || this_lane.run(&client))
            })
            .collect();
        for finished in futures::future::join_all(lanes).await {
            if let Err(error) = finished {
                lane.fail(LocationFailure::Final(format!(
                    "a download lane failed: {error}"
                )));
            }
        }
        let _ = download.save(false);
        if download.done_count() > before {
            attempt = 0;
            pause = Duration::from_millis(250);
        }
        let failure = lane
            .failure
            .lock()
            .ok()
            .and_then(|mut failure| failure.take());
        match failure {
            None => continue,
            Some(LocationFailure::Final(error)) => return Err(error),
            Some(LocationFailure::Transient(error)) => {
                attempt += 1;
                if attempt > options.retries {
                    return Err(format!(
                        "{error} (gave up after {} attempts)",
                        options.retries
                    ));
                }
                tracing_line(&format!(
                    "{}: {error}; retrying in {} ms ({attempt}/{})",
                    location.distribution_point_name,
                    pause.as_millis(),
                    options.retries
                ));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
        }
    }
}

/// What the lanes of one attempt at a location share.
#[derive(Clone)]
struct Lane {
    download: Arc<Download>,
    location: Arc<pb::ContentLocation>,
    client_id: String,
    traceparent: String,
    /// Ranges (of chunk indices) not yet taken.
    waiting: Arc<Mutex<std::collections::VecDeque<std::ops::Range<u64>>>>,
    /// The first failure; once set, no lane takes another range.
    failure: Arc<Mutex<Option<LocationFailure>>>,
}

impl Lane {
    fn fail(&self, failure: LocationFailure) {
        if let Ok(mut first) = self.failure.lock() {
            first.get_or_insert(failure);
        }
    }

    fn next(&self) -> Option<std::ops::Range<u64>> {
        if self
            .failure
            .lock()
            .map_or(true, |failure| failure.is_some())
        {
            return None;
        }
        self.waiting.lock().ok()?.pop_front()
    }

    /// Fetches ranges on this thread until none is left or one fails.
    fn run(&self, http: &reqwest::Client) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                return self.fail(LocationFailure::Final(format!(
                    "cannot start a download lane: {error}"
                )));
            }
        };
        runtime.block_on(async {
            // One chunk at a time, in a buffer that stays in this core's cache.
            let mut chunk = Vec::new();
            while let Some(group) = self.next() {
                if let Err(failure) = self.fetch(http, group, &mut chunk).await {
                    return self.fail(failure);
                }
                if let Err(error) = self.download.save(false) {
                    return self.fail(LocationFailure::Final(error));
                }
            }
        });
    }

    /// Fetches the chunks `group` in one range request, accepting each as soon as its bytes are in.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        group: std::ops::Range<u64>,
        chunk: &mut Vec<u8>,
    ) -> Result<(), LocationFailure> {
        let download = &self.download;
        let first = sealed_range(download, group.start)?;
        let last = sealed_range(download, group.end - 1)?;
        download.throttle(last.end - first.start).await;
        let mut response = http
            .get(&self.location.url)
            .bearer_auth(&self.location.access_token)
            .header(CLIENT_HEADER, &self.client_id)
            .header("traceparent", &self.traceparent)
            .header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", first.start, last.end - 1),
            )
            .send()
            .await
            .map_err(|error| LocationFailure::Transient(describe(&error)))?;
        let status = response.status();
        if status != reqwest::StatusCode::PARTIAL_CONTENT {
            let body = response.text().await.unwrap_or_default();
            let message = format!("HTTP {status}: {}", body.trim());
            return Err(match status.as_u16() {
                500 | 502 | 504 => LocationFailure::Transient(message),
                _ => LocationFailure::Final(message),
            });
        }
        let mut index = group.start;
        let mut want = chunk_len(download, index)?;
        chunk.clear();
        chunk.reserve(want);
        while let Some(received) = response
            .chunk()
            .await
            .map_err(|error| LocationFailure::Transient(describe(&error)))?
        {
            let mut piece = &received[..];
            while !piece.is_empty() {
                if index == group.end {
                    return Err(LocationFailure::Final(format!(
                        "the response is longer than the {} bytes asked for",
                        last.end - first.start
                    )));
                }
                let take = piece.len().min(want - chunk.len());
                chunk.extend_from_slice(&piece[..take]);
                piece = &piece[take..];
                if chunk.len() == want {
                    download
                        .accept(index, chunk)
                        .map_err(LocationFailure::Final)?;
                    chunk.clear();
                    index += 1;
                    if index < group.end {
                        want = chunk_len(download, index)?;
                    }
                }
            }
        }
        if index != group.end {
            return Err(LocationFailure::Transient(format!(
                "short response: it ended inside chunk {index}"
            )));
        }
        Ok(())
    }
}

/// Where chunk `index` lies in the sealed object.
fn sealed_range(download: &Download, index: u64) -> Result<std::ops::Range<u64>, LocationFailure> {
    download
        .layout
        .sealed_chunk_range(index)
        .map_err(|error| LocationFailure::Final(error.to_string()))
}

/// The sealed length of chunk `index`.
fn chunk_len(download: &Download, index: u64) -> Result<usize, LocationFailure> {
    let range = sealed_range(download, index)?;
    usize::try_from(range.end - range.start)
        .map_err(|error| LocationFailure::Final(error.to_string()))
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_of(content: &[u8], with_blake3: bool) -> pb::ContentManifest {
        pb::ContentManifest {
            plaintext_sha256: sha256(content).to_vec(),
            plaintext_blake3: if with_blake3 {
                blake3::hash(content).as_bytes().to_vec()
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    fn digest_in_pieces(manifest: &pb::ContentManifest, content: &[u8]) -> bool {
        let mut digest = WholeDigest::for_manifest(manifest);
        for piece in content.chunks(7) {
            digest.update(piece);
        }
        digest.matches(manifest)
    }

    #[test]
    fn traceparent_is_continued_only_when_valid() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            parse_traceparent(&format!("00-{trace}-00f067aa0ba902b7-01")),
            Some((trace.to_owned(), "01".to_owned()))
        );
        assert_eq!(
            parse_traceparent(&format!(" 00-{trace}-00f067aa0ba902b7-00\n")),
            Some((trace.to_owned(), "00".to_owned()))
        );
        for invalid in [
            String::new(),
            format!("01-{trace}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{trace}-{}-01", "0".repeat(16)),
            format!("00-{}-00f067aa0ba902b7-01", trace.to_uppercase()),
            format!("00-{trace}-00f067aa0ba902b7"),
            format!("00-{trace}-00f067aa0ba902b7-01-extra"),
            format!("00-{}-00f067aa0ba902b7-01", &trace[1..]),
        ] {
            assert_eq!(parse_traceparent(&invalid), None, "{invalid:?}");
        }
        let fresh = TraceContext::from_env();
        assert_eq!(fresh.trace_id().len(), 32);
        assert!(
            parse_traceparent(fresh.header()).is_some(),
            "{}",
            fresh.header()
        );
    }

    #[test]
    fn the_whole_digest_is_blake3_when_the_manifest_has_it_and_sha256_otherwise() {
        let content = b"the framed plaintext of a content version".repeat(50);
        let mut damaged = content.clone();
        damaged[100] ^= 1;
        for with_blake3 in [true, false] {
            let manifest = manifest_of(&content, with_blake3);
            assert!(matches!(
                (WholeDigest::for_manifest(&manifest), with_blake3),
                (WholeDigest::Blake3(_), true) | (WholeDigest::Sha256(_), false)
            ));
            assert!(digest_in_pieces(&manifest, &content));
            assert!(!digest_in_pieces(&manifest, &damaged));
            assert!(!digest_in_pieces(&manifest, &content[1..]));
        }
        // A BLAKE3 that does not match fails even when the SHA-256 would.
        let mut wrong = manifest_of(&content, true);
        wrong.plaintext_blake3[0] ^= 1;
        assert!(!digest_in_pieces(&wrong, &content));
    }
}
