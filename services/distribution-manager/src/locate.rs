//! LocateContent: gathers what the rules of [`clouddp_core::location`] need (the client's boundary groups, its
//! client settings, the deployment, which DPs hold the version), applies them, and signs one access token per
//! location.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clouddp_core::dp::DpKind;
use clouddp_core::location::{self, Candidate, Network, Selection, Tier};
use clouddp_core::seal::DataKey;
use clouddp_core::token::Claims;
use clouddp_core::{ValidationError, token};
use clouddp_platform::clock::now_ms;

use crate::content::{self, ContentRecord};
use crate::dp::{DistributionManager, DpRecord};
use crate::error::{DmError, DmResult};
use crate::policy::{
    BoundaryGroup, ClientSettings, CloudSelection, Deployment, Policy, TaskSequenceMode,
};
use crate::tokens::TokenKeys;

/// A client's request.
#[derive(Debug, Clone, Default)]
pub struct LocateRequest {
    /// Device id (required).
    pub device_id: String,
    /// User id, when a user is signed in.
    pub user_id: String,
    /// IP address.
    pub ip_address: String,
    /// Internet client.
    pub internet: bool,
    /// Deployment id.
    pub deployment_id: String,
    /// Client region.
    pub region_hint: String,
    /// Latency by DP id.
    pub latency_hints_ms: HashMap<String, u32>,
    /// The client certificate the device called with: its tokens are bound to it (RFC 8705). `None` only on a
    /// site run without authentication (tests).
    pub certificate: Option<token::Confirmation>,
}

/// One place to download from.
#[derive(Debug, Clone)]
pub struct Location {
    /// The DP.
    pub dp: Arc<DpRecord>,
    /// Its tier.
    pub tier: Tier,
    /// The sealed object's URL.
    pub url: String,
    /// The bearer token.
    pub token: String,
    /// Token expiry, ms.
    pub token_expire_ms: i64,
    /// SNI / certificate name.
    pub server_name: String,
}

/// The decision about one DP.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The DP.
    pub dp_id: String,
    /// Its name.
    pub dp_name: String,
    /// Offered.
    pub included: bool,
    /// Why.
    pub reasons: Vec<String>,
}

/// The answer.
#[derive(Debug)]
pub struct LocateAnswer {
    /// Ordered locations.
    pub locations: Vec<Location>,
    /// The content version and its data key.
    pub content: Arc<CachedContent>,
    /// Every DP's decision.
    pub decisions: Vec<Decision>,
}

/// Locates content for clients.
#[derive(Debug, Clone)]
pub struct Locator {
    manager: Arc<DistributionManager>,
    policy: Policy,
    keys: TokenKeys,
    token_lifetime: Duration,
    public_port: u16,
    /// Read by every call (a plain lock held for a pointer copy); `rebuild` lets one caller rebuild it at a time.
    snapshot: Arc<std::sync::RwLock<Option<Arc<Snapshot>>>>,
    rebuild: Arc<tokio::sync::Mutex<()>>,
    contents: Arc<std::sync::RwLock<HashMap<String, Arc<CachedContent>>>>,
}

/// What content location reads, kept in memory and rebuilt when the manager's generation moves on (any
/// committed change of DPs, distributions or client policy).
#[derive(Debug)]
struct Snapshot {
    generation: u64,
    deployments: HashMap<String, Deployment>,
    groups: Vec<BoundaryGroup>,
    /// Settings by priority, the default last.
    settings: Vec<ClientSettings>,
    /// (is user, lowercase principal) → index of the winning settings.
    assigned: HashMap<(bool, String), usize>,
    dps: Vec<Arc<DpRecord>>,
    /// Content version → DPs holding it.
    holdings: HashMap<String, HashSet<String>>,
}

/// A content version and its data key: immutable once registered.
#[derive(Debug)]
pub struct CachedContent {
    /// The content version.
    pub record: ContentRecord,
    /// Its data key.
    pub data_key: DataKey,
}

/// The most content versions kept in memory.
const CONTENT_CACHE: usize = 4096;

/// The host of an `https://host[:port]/…` URL.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

impl Locator {
    /// A locator signing tokens valid for `token_lifetime`, with cloud DP URLs on `public_port`.
    pub fn new(
        manager: Arc<DistributionManager>,
        policy: Policy,
        keys: TokenKeys,
        token_lifetime: Duration,
        public_port: u16,
    ) -> Self {
        Self {
            manager,
            policy,
            keys,
            token_lifetime,
            public_port,
            snapshot: Arc::default(),
            rebuild: Arc::default(),
            contents: Arc::default(),
        }
    }

    /// The current snapshot, rebuilt when stale.
    async fn snapshot(&self) -> DmResult<Arc<Snapshot>> {
        let generation = self
            .manager
            .generation()
            .load(std::sync::atomic::Ordering::Acquire);
        let current = |generation: u64| {
            self.snapshot
                .read()
                .ok()
                .and_then(|slot| slot.clone())
                .filter(|snapshot| snapshot.generation == generation)
        };
        if let Some(snapshot) = current(generation) {
            return Ok(snapshot);
        }
        let _rebuilding = self.rebuild.lock().await;
        let generation = self
            .manager
            .generation()
            .load(std::sync::atomic::Ordering::Acquire);
        if let Some(snapshot) = current(generation) {
            return Ok(snapshot);
        }
        let deployments = self
            .policy
            .list_deployments(None)
            .await?
            .into_iter()
            .map(|deployment| (deployment.id.clone(), deployment))
            .collect();
        let settings = self.policy.list_settings().await?;
        let mut assigned = HashMap::new();
        for (index, item) in settings.iter().enumerate() {
            for (is_user, principals) in [(false, &item.device_ids), (true, &item.user_ids)] {
                for principal in principals {
                    assigned
                        .entry((is_user, principal.to_lowercase()))
                        .or_insert(index);
                }
            }
        }
        let mut holdings: HashMap<String, HashSet<String>> = HashMap::new();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT content_version_id, dp_id FROM distributions WHERE state = 'success'",
        )
        .fetch_all(self.manager.pool())
        .await?;
        for (content, dp) in rows {
            holdings.entry(content).or_default().insert(dp);
        }
        let snapshot = Arc::new(Snapshot {
            generation,
            deployments,
            groups: self.policy.list_boundary_groups().await?,
            settings,
            assigned,
            dps: self
                .manager
                .list(None)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect(),
            holdings,
        });
        tracing::debug!(generation, "content location snapshot rebuilt");
        if let Ok(mut slot) = self.snapshot.write() {
            *slot = Some(snapshot.clone());
        }
        Ok(snapshot)
    }

    /// A content version with its data key, from memory after the first request.
    async fn content(&self, id: &str) -> DmResult<Arc<CachedContent>> {
        if let Some(cached) = self
            .contents
            .read()
            .ok()
            .and_then(|contents| contents.get(id).cloned())
        {
            return Ok(cached);
        }
        let record = content::get(self.manager.pool(), id).await?;
        let data_key = record.data_key(self.manager.site_key())?;
        let cached = Arc::new(CachedContent { record, data_key });
        if let Ok(mut contents) = self.contents.write() {
            if contents.len() >= CONTENT_CACHE {
                contents.clear();
            }
            contents.insert(id.to_owned(), cached.clone());
        }
        Ok(cached)
    }

    /// The token keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Applies the rules for one client and deployment.
    pub async fn locate(&self, request: LocateRequest) -> DmResult<LocateAnswer> {
        let device = request.device_id.trim();
        if device.is_empty() || device.len() > 255 || device.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "device_id",
                "give the device's id (1 to 255 printable characters)",
            )
            .into());
        }
        let ip: Option<IpAddr> = match request.ip_address.trim() {
            "" => None,
            text => Some(text.parse().map_err(|_| {
                ValidationError::new(
                    "ip_address",
                    format!("{text:?} is not an IPv4 or IPv6 address"),
                )
            })?),
        };
        if request.deployment_id.trim().is_empty() {
            return Err(ValidationError::new(
                "deployment_id",
                "give the deployment whose content is wanted",
            )
            .into());
        }
        let snapshot = self.snapshot().await?;
        let deployment = snapshot
            .deployments
            .get(request.deployment_id.trim())
            .ok_or_else(|| {
                DmError::NotFound(format!(
                    "no deployment has the id {:?}",
                    request.deployment_id
                ))
            })?;
        let cached = self.content(&deployment.content_version_id).await?;
        let content = &cached.record;

        // The client's boundary groups, by its address.
        let groups: Vec<&BoundaryGroup> = match ip {
            Some(ip) => snapshot
                .groups
                .iter()
                .filter(|group| group.subnets.iter().any(|subnet| subnet.contains(&ip)))
                .collect(),
            None => Vec::new(),
        };
        let group_names: HashSet<String> = groups
            .iter()
            .map(|group| group.name.to_ascii_lowercase())
            .collect();
        let group_dps: HashSet<&str> = groups
            .iter()
            .flat_map(|group| group.dp_ids.iter().map(String::as_str))
            .collect();

        // Who asks decides whether cloud DPs are allowed: the user's settings when a user is signed in.
        let user = request.user_id.trim();
        let (is_user, principal) = if user.is_empty() {
            (false, device)
        } else {
            (true, user)
        };
        let settings = snapshot
            .assigned
            .get(&(is_user, principal.to_lowercase()))
            .and_then(|index| snapshot.settings.get(*index))
            .or_else(|| {
                snapshot
                    .settings
                    .iter()
                    .find(|settings| settings.is_default())
            })
            .ok_or_else(|| {
                DmError::Internal("the default client settings are missing".to_owned())
            })?;
        let allowed = if is_user {
            settings.allow_cloud_users
        } else {
            settings.allow_cloud_devices
        };
        let cloud_allowed = if allowed {
            Ok(())
        } else {
            Err(format!(
                "the client setting \"Allow access to cloud distribution points\" for {} {principal} is No (client settings {:?})",
                if is_user { "user" } else { "device" },
                settings.name
            ))
        };

        let empty = HashSet::new();
        let holding = snapshot.holdings.get(&content.id).unwrap_or(&empty);
        let dps = &snapshot.dps;
        let candidates: Vec<Candidate> = dps
            .iter()
            .map(|dp| Candidate {
                id: dp.id.clone(),
                name: dp.name.clone(),
                kind: dp.kind,
                state: dp.state,
                preferred: group_dps.contains(dp.id.as_str())
                    || dp
                        .boundary_groups
                        .iter()
                        .any(|name| group_names.contains(&name.to_ascii_lowercase())),
                has_content: holding.contains(&dp.id),
                region: dp
                    .cloud
                    .as_ref()
                    .map(|cloud| cloud.region.clone())
                    .unwrap_or_default(),
                latency_ms: request.latency_hints_ms.get(&dp.id).copied(),
            })
            .collect();
        let rules = location::Request {
            network: if request.internet {
                Network::Internet
            } else {
                Network::Intranet
            },
            cloud_allowed,
            allow_remote_fallback: deployment.allow_remote_fallback,
            task_sequence_when_needed: deployment.task_sequence_mode
                == TaskSequenceMode::WhenNeeded,
            selection: match deployment.cloud_selection {
                CloudSelection::Random => Selection::Random,
                CloudSelection::Nearest => Selection::Nearest,
            },
            region_hint: request.region_hint.trim().to_owned(),
        };
        let (ordered, decisions) = location::locate(&rules, &candidates, shuffle);

        let issued = now_ms();
        let lifetime =
            i64::try_from(self.token_lifetime.as_millis()).unwrap_or(token::MAX_LIFETIME_MS);
        let mut locations = Vec::with_capacity(ordered.len());
        for (index, tier) in ordered {
            let dp = &dps[index];
            let claims = Claims {
                kid: String::new(),
                dp: dp.id.clone(),
                cv: content.id.clone(),
                sub: device.to_owned(),
                iat: issued,
                exp: issued + lifetime,
                cnf: request.certificate.clone(),
            };
            let (base, server_name) = match (&dp.cloud, dp.kind) {
                (Some(cloud), DpKind::Cloud) => {
                    let port = if self.public_port == 443 {
                        String::new()
                    } else {
                        format!(":{}", self.public_port)
                    };
                    (
                        format!("https://{}{port}", cloud.service_fqdn),
                        cloud.service_fqdn.clone(),
                    )
                }
                _ => (
                    dp.address.trim_end_matches('/').to_owned(),
                    url_host(&dp.address).unwrap_or_default(),
                ),
            };
            locations.push(Location {
                url: format!("{base}/{}", content.store_path()),
                token: self.keys.sign_batched(claims).await?,
                token_expire_ms: issued + lifetime,
                server_name,
                tier,
                dp: dp.clone(),
            });
        }
        let decisions: Vec<Decision> = decisions
            .into_iter()
            .map(|decision| Decision {
                dp_id: dps[decision.index].id.clone(),
                dp_name: dps[decision.index].name.clone(),
                included: decision.tier.is_some(),
                reasons: decision.reasons,
            })
            .collect();
        if locations.is_empty() {
            // The device hears a short reason; the per-DP explanation is for administrators (and the log).
            let summary: Vec<String> = decisions
                .iter()
                .map(|decision| format!("{}: {}", decision.dp_name, decision.reasons.join("; ")))
                .collect();
            tracing::info!(device, content = %content.id, decisions = %summary.join(" | "), "no location for a device");
            return Err(DmError::Precondition(format!(
                "no distribution point may serve this content to this device: {}",
                location::device_reason(&rules, &candidates)
            )));
        }
        tracing::debug!(device, deployment = %deployment.id, locations = locations.len(), "content located");
        Ok(LocateAnswer {
            locations,
            content: cached.clone(),
            decisions,
        })
    }
}

/// Fisher–Yates with the system's random generator.
fn shuffle(items: &mut [usize]) {
    for index in (1..items.len()).rev() {
        let mut bytes = [0_u8; 8];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            return;
        }
        let pick = usize::try_from(u64::from_le_bytes(bytes) % (index as u64 + 1)).unwrap_or(0);
        items.swap(index, pick);
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            url_host("https://DP1.contoso.test:7443/x").as_deref(),
            Some("dp1.contoso.test")
        );
        assert_eq!(
            url_host("https://dp1.contoso.test").as_deref(),
            Some("dp1.contoso.test")
        );
        assert_eq!(url_host("https://[::1]:7443").as_deref(), Some("::1"));
        assert_eq!(url_host("ftp://x"), None);
    }
}
