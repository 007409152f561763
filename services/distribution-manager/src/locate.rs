//! LocateContent: gathers what the rules of [`clouddp_core::location`] need (the client's boundary groups, its
//! client settings, the deployment, which DPs hold the version), applies them, and signs one access token per
//! location.

use std::collections::HashSet;
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
use crate::policy::{CloudSelection, Policy, TaskSequenceMode};
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
    pub latency_hints_ms: std::collections::HashMap<String, u32>,
}

/// One place to download from.
#[derive(Debug, Clone)]
pub struct Location {
    /// The DP.
    pub dp: DpRecord,
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
    /// The content version.
    pub content: ContentRecord,
    /// Its data key.
    pub data_key: DataKey,
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
}

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
        }
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
        let deployment = self.policy.get_deployment(&request.deployment_id).await?;
        let content = content::get(self.manager.pool(), &deployment.content_version_id).await?;

        // The client's boundary groups, by its address.
        let groups: Vec<_> = match ip {
            Some(ip) => self
                .policy
                .list_boundary_groups()
                .await?
                .into_iter()
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

        // Who asks decides whether cloud DPs are allowed.
        let user = request.user_id.trim();
        let cloud_allowed = if user.is_empty() {
            let settings = self.policy.settings_for("device", device).await?;
            if settings.allow_cloud_devices {
                Ok(())
            } else {
                Err(format!(
                    "the client setting \"Allow access to cloud distribution points\" for device {device} is No (client settings {:?})",
                    settings.name
                ))
            }
        } else {
            let settings = self.policy.settings_for("user", user).await?;
            if settings.allow_cloud_users {
                Ok(())
            } else {
                Err(format!(
                    "the client setting \"Allow access to cloud distribution points\" for user {user} is No (client settings {:?})",
                    settings.name
                ))
            }
        };

        let holding: HashSet<String> = sqlx::query_scalar(
            "SELECT dp_id FROM distributions WHERE content_version_id = ?1 AND state = 'success'",
        )
        .bind(&content.id)
        .fetch_all(self.manager.pool())
        .await?
        .into_iter()
        .collect();
        let dps = self.manager.list(None).await?;
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
                token: self.keys.sign(claims)?,
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
            let summary: Vec<String> = decisions
                .iter()
                .map(|decision| format!("{}: {}", decision.dp_name, decision.reasons.join("; ")))
                .collect();
            return Err(DmError::Precondition(format!(
                "no distribution point may serve {} to device {device}: {}",
                content.id,
                if summary.is_empty() {
                    "there are no distribution points".to_owned()
                } else {
                    summary.join(" | ")
                }
            )));
        }
        let data_key = content.data_key(self.manager.site_key())?;
        tracing::debug!(device, deployment = %deployment.id, locations = locations.len(), "content located");
        Ok(LocateAnswer {
            locations,
            content,
            data_key,
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
