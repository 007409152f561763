//! Content location: which DPs a client may download a deployment's content from, in which order, and why.
//!
//! The reference's rules: an intranet client tries its preferred DPs (its boundary groups) first, then remote
//! on-premises DPs when the deployment allows fallback, then cloud DPs as the last fallback. An internet client
//! uses internet-facing DPs when any has the content, and then never a cloud DP; otherwise cloud DPs. Cloud DPs
//! are offered only when the client setting for the requesting principal allows them, and never to a task
//! sequence deployed "download content locally when needed". Only DPs that hold the version (distribution
//! succeeded) and are serving appear. Every DP gets a decision with its reasons.

use crate::dp::{DpKind, DpState};

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// On the organisation's network.
    Intranet,
    /// On the internet.
    Internet,
}

/// How cloud DPs are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Shuffled (the reference's behaviour).
    Random,
    /// By latency hint, then the client's region, then name.
    Nearest,
}

/// Why a location is where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// In one of the client's boundary groups.
    Preferred,
    /// An internet-facing DP for an internet client.
    Internet,
    /// Outside the client's boundary groups.
    Remote,
    /// A cloud DP.
    Cloud,
}

/// A DP as content location sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: DpKind,
    /// State.
    pub state: DpState,
    /// In one of the client's boundary groups.
    pub preferred: bool,
    /// The version's distribution to it succeeded.
    pub has_content: bool,
    /// Azure region (cloud DPs).
    pub region: String,
    /// Measured round trip from the client, when it sent one.
    pub latency_ms: Option<u32>,
}

/// The client and the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Intranet or internet.
    pub network: Network,
    /// `Ok` when the client setting allows cloud DPs for the requesting principal, else the reason.
    pub cloud_allowed: Result<(), String>,
    /// The deployment allows fallback to remote DPs.
    pub allow_remote_fallback: bool,
    /// A task sequence deployed "download content locally when needed".
    pub task_sequence_when_needed: bool,
    /// Cloud DP ordering.
    pub selection: Selection,
    /// The client's region, for `Nearest`.
    pub region_hint: String,
}

/// The decision about one DP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into the candidates.
    pub index: usize,
    /// The tier when included.
    pub tier: Option<Tier>,
    /// Why.
    pub reasons: Vec<String>,
}

/// The ordered locations (candidate index and tier) and a decision for every candidate. `shuffle` puts cloud
/// DPs in random order for `Selection::Random`.
pub fn locate(
    request: &Request,
    candidates: &[Candidate],
    shuffle: impl FnOnce(&mut [usize]),
) -> (Vec<(usize, Tier)>, Vec<Decision>) {
    let mut decisions: Vec<Decision> = candidates
        .iter()
        .enumerate()
        .map(|(index, candidate)| {
            let mut reasons = Vec::new();
            let tier = first_pass(request, candidate, &mut reasons);
            Decision {
                index,
                tier,
                reasons,
            }
        })
        .collect();

    // An internet client offered an internet-facing DP never falls back to a cloud DP.
    let internet_offered = request.network == Network::Internet
        && decisions
            .iter()
            .any(|decision| decision.tier == Some(Tier::Internet));
    if internet_offered {
        for decision in &mut decisions {
            if decision.tier == Some(Tier::Cloud) {
                decision.tier = None;
                // Its first-pass reason assumed no internet-facing DP had the content: it no longer holds.
                decision
                    .reasons
                    .retain(|reason| !reason.starts_with("cloud: "));
                decision.reasons.push(
                    "left out: an internet-facing DP has the content, and internet clients offered one never fall back to a cloud DP"
                        .to_owned(),
                );
            }
        }
    }

    let mut ordered: Vec<(usize, Tier)> = decisions
        .iter()
        .filter_map(|decision| decision.tier.map(|tier| (decision.index, tier)))
        .collect();
    ordered.sort_by(|left, right| {
        left.1
            .cmp(&right.1)
            .then_with(|| candidates[left.0].name.cmp(&candidates[right.0].name))
    });
    let cloud_start = ordered
        .iter()
        .position(|(_, tier)| *tier == Tier::Cloud)
        .unwrap_or(ordered.len());
    let mut cloud: Vec<usize> = ordered[cloud_start..]
        .iter()
        .map(|(index, _)| *index)
        .collect();
    match request.selection {
        Selection::Random => {
            shuffle(&mut cloud);
            if cloud.len() > 1 {
                for index in &cloud {
                    decisions[*index].reasons.push(
                        "cloud DPs are offered in random order (deployment: random)".to_owned(),
                    );
                }
            }
        }
        Selection::Nearest => {
            cloud.sort_by_key(|index| {
                let candidate = &candidates[*index];
                (
                    candidate.latency_ms.unwrap_or(u32::MAX),
                    request.region_hint.is_empty()
                        || !candidate.region.eq_ignore_ascii_case(&request.region_hint),
                    candidate.name.clone(),
                )
            });
            for (rank, index) in cloud.iter().enumerate() {
                let candidate = &candidates[*index];
                let basis = match candidate.latency_ms {
                    Some(latency) => format!("measured latency {latency} ms"),
                    None if !request.region_hint.is_empty()
                        && candidate.region.eq_ignore_ascii_case(&request.region_hint) =>
                    {
                        format!("in the client's region {}", candidate.region)
                    }
                    None => format!("region {} (no latency measured)", candidate.region),
                };
                decisions[*index].reasons.push(format!(
                    "nearest first (deployment: nearest): #{} by {basis}",
                    rank + 1
                ));
            }
        }
    }
    for (slot, index) in ordered[cloud_start..].iter_mut().zip(cloud) {
        *slot = (index, Tier::Cloud);
    }
    (ordered, decisions)
}

/// Why no location is offered, in words fit for the device's user: no DP names, no site details (the per-DP
/// explanation is for administrators). Meant for when [`locate`] ordered nothing.
pub fn device_reason(request: &Request, candidates: &[Candidate]) -> &'static str {
    let with_content: Vec<&Candidate> = candidates.iter().filter(|dp| dp.has_content).collect();
    if with_content.is_empty() {
        return "the content is not on any distribution point yet";
    }
    let not_serving = "the distribution points that have the content are not serving now";
    let clouds: Vec<&&Candidate> = with_content
        .iter()
        .filter(|dp| dp.kind == DpKind::Cloud)
        .collect();
    if !clouds.is_empty() {
        if request.task_sequence_when_needed {
            return "this task sequence downloads content when needed, which never uses a cloud distribution point";
        }
        if request.cloud_allowed.is_err() {
            return "cloud access is not allowed for this device";
        }
        if clouds.iter().all(|dp| dp.state != DpState::Ready) {
            return not_serving;
        }
    }
    if with_content.iter().all(|dp| dp.state != DpState::Ready) {
        return not_serving;
    }
    match request.network {
        Network::Intranet => "no distribution point in your boundary group has the content",
        Network::Internet => "no distribution point reachable from the internet has the content",
    }
}

/// Decides one DP on its own: its tier, or `None` with the reason.
fn first_pass(request: &Request, candidate: &Candidate, reasons: &mut Vec<String>) -> Option<Tier> {
    if !candidate.has_content {
        reasons.push(
            "left out: this content version has not been distributed successfully to it".to_owned(),
        );
        return None;
    }
    match candidate.state {
        DpState::Ready => {}
        DpState::Stopped => {
            reasons.push("left out: its service is stopped".to_owned());
            return None;
        }
        other => {
            reasons.push(format!(
                "left out: it is {} and serves nothing",
                other.as_str().replace('_', " ")
            ));
            return None;
        }
    }
    match (request.network, candidate.kind) {
        (Network::Intranet, DpKind::OnPremises) => {
            if candidate.preferred {
                reasons.push(
                    "preferred: it is a site system of one of the client's boundary groups"
                        .to_owned(),
                );
                Some(Tier::Preferred)
            } else if request.allow_remote_fallback {
                reasons.push(
                    "remote: outside the client's boundary groups, and the deployment allows fallback to remote DPs".to_owned(),
                );
                Some(Tier::Remote)
            } else {
                reasons.push(
                    "left out: outside the client's boundary groups, and the deployment does not allow fallback to remote DPs"
                        .to_owned(),
                );
                None
            }
        }
        (Network::Intranet, DpKind::InternetFacing) => {
            reasons.push("left out: an internet-facing DP serves internet clients; this client is on the intranet".to_owned());
            None
        }
        (Network::Internet, DpKind::OnPremises) => {
            reasons
                .push("left out: an on-premises DP is not reachable from the internet".to_owned());
            None
        }
        (Network::Internet, DpKind::InternetFacing) => {
            reasons.push(
                "internet: an internet-facing DP with the content, for an internet client"
                    .to_owned(),
            );
            Some(Tier::Internet)
        }
        (_, DpKind::Cloud) => {
            if request.task_sequence_when_needed {
                reasons.push(
                    "left out: a task sequence deployed \"download content locally when needed\" never uses a cloud DP".to_owned(),
                );
                return None;
            }
            if let Err(why) = &request.cloud_allowed {
                reasons.push(format!("left out: cloud DPs not allowed: {why}"));
                return None;
            }
            reasons.push(match request.network {
                Network::Intranet => "cloud: the fallback after on-premises DPs; the client setting allows cloud DPs".to_owned(),
                Network::Internet => "cloud: no internet-facing DP has the content; the client setting allows cloud DPs".to_owned(),
            });
            Some(Tier::Cloud)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dp(name: &str, kind: DpKind, preferred: bool) -> Candidate {
        Candidate {
            id: format!("dp-{name}"),
            name: name.to_owned(),
            kind,
            state: DpState::Ready,
            preferred,
            has_content: true,
            region: String::new(),
            latency_ms: None,
        }
    }

    fn request(network: Network) -> Request {
        Request {
            network,
            cloud_allowed: Ok(()),
            allow_remote_fallback: true,
            task_sequence_when_needed: false,
            selection: Selection::Random,
            region_hint: String::new(),
        }
    }

    fn names(candidates: &[Candidate], ordered: &[(usize, Tier)]) -> Vec<String> {
        ordered
            .iter()
            .map(|(index, _)| candidates[*index].name.clone())
            .collect()
    }

    fn site() -> Vec<Candidate> {
        vec![
            dp("cloud-a", DpKind::Cloud, false),
            dp("branch", DpKind::OnPremises, false),
            dp("hq", DpKind::OnPremises, true),
            dp("edge", DpKind::InternetFacing, false),
            dp("cloud-b", DpKind::Cloud, false),
        ]
    }

    #[test]
    fn intranet_order_is_preferred_remote_then_cloud() {
        let candidates = site();
        let (ordered, decisions) = locate(&request(Network::Intranet), &candidates, |cloud| {
            cloud.sort()
        });
        assert_eq!(
            names(&candidates, &ordered),
            ["hq", "branch", "cloud-a", "cloud-b"]
        );
        assert!(decisions[3].reasons[0].contains("serves internet clients"));
        let mut no_fallback = request(Network::Intranet);
        no_fallback.allow_remote_fallback = false;
        let (ordered, decisions) = locate(&no_fallback, &candidates, |cloud| cloud.sort());
        assert_eq!(names(&candidates, &ordered), ["hq", "cloud-a", "cloud-b"]);
        assert!(decisions[1].reasons[0].contains("does not allow fallback"));
    }

    #[test]
    fn cloud_needs_the_setting_and_never_serves_when_needed_task_sequences() {
        let candidates = site();
        let mut denied = request(Network::Intranet);
        denied.cloud_allowed = Err("client setting for the device is No".to_owned());
        let (ordered, decisions) = locate(&denied, &candidates, |_| {});
        assert_eq!(names(&candidates, &ordered), ["hq", "branch"]);
        assert!(decisions[0].reasons[0].contains("client setting for the device is No"));
        let mut when_needed = request(Network::Intranet);
        when_needed.task_sequence_when_needed = true;
        let (ordered, decisions) = locate(&when_needed, &candidates, |_| {});
        assert_eq!(names(&candidates, &ordered), ["hq", "branch"]);
        assert!(decisions[4].reasons[0].contains("when needed"));
    }

    #[test]
    fn the_device_hears_a_short_reason_without_dp_names() {
        let candidates = site();
        let mut denied = request(Network::Intranet);
        denied.cloud_allowed = Err("the client setting for the device is No".to_owned());
        let mut only_cloud = candidates.clone();
        for dp in &mut only_cloud {
            dp.has_content = dp.kind == DpKind::Cloud;
        }
        assert_eq!(
            device_reason(&denied, &only_cloud),
            "cloud access is not allowed for this device"
        );
        let mut nowhere = candidates.clone();
        for dp in &mut nowhere {
            dp.has_content = false;
        }
        assert_eq!(
            device_reason(&denied, &nowhere),
            "the content is not on any distribution point yet"
        );
        let mut remote_only = candidates;
        for dp in &mut remote_only {
            dp.has_content = dp.kind == DpKind::OnPremises && !dp.preferred;
        }
        let mut no_fallback = request(Network::Intranet);
        no_fallback.allow_remote_fallback = false;
        assert_eq!(
            device_reason(&no_fallback, &remote_only),
            "no distribution point in your boundary group has the content"
        );
    }

    #[test]
    fn internet_clients_use_internet_dps_and_then_never_cloud() {
        let candidates = site();
        let (ordered, decisions) = locate(&request(Network::Internet), &candidates, |_| {});
        assert_eq!(names(&candidates, &ordered), ["edge"]);
        assert!(
            decisions[0]
                .reasons
                .iter()
                .any(|reason| reason.contains("never fall back to a cloud DP"))
                && !decisions[2]
                    .reasons
                    .iter()
                    .any(|reason| reason.contains("no internet-facing DP has the content"))
        );
        assert!(decisions[1].reasons[0].contains("not reachable from the internet"));
        let mut without_edge = site();
        without_edge[3].has_content = false;
        let (ordered, _) = locate(&request(Network::Internet), &without_edge, |cloud| {
            cloud.sort()
        });
        assert_eq!(names(&without_edge, &ordered), ["cloud-a", "cloud-b"]);
    }

    #[test]
    fn stopped_and_contentless_dps_never_appear() {
        let mut candidates = site();
        candidates[2].state = DpState::Stopped;
        candidates[0].has_content = false;
        let (ordered, decisions) = locate(&request(Network::Intranet), &candidates, |_| {});
        assert_eq!(names(&candidates, &ordered), ["branch", "cloud-b"]);
        assert!(decisions[2].reasons[0].contains("stopped"));
        assert!(decisions[0].reasons[0].contains("not been distributed"));
    }

    #[test]
    fn nearest_orders_clouds_by_latency_then_region() {
        let mut candidates = site();
        candidates[0].region = "westeurope".to_owned();
        candidates[4].region = "northeurope".to_owned();
        let mut nearest = request(Network::Intranet);
        nearest.selection = Selection::Nearest;
        nearest.region_hint = "northeurope".to_owned();
        let (ordered, _) = locate(&nearest, &candidates, |_| panic!("no shuffle for nearest"));
        assert_eq!(names(&candidates, &ordered)[2..], ["cloud-b", "cloud-a"]);
        candidates[0].latency_ms = Some(12);
        candidates[4].latency_ms = Some(40);
        let (ordered, decisions) = locate(&nearest, &candidates, |_| {});
        assert_eq!(names(&candidates, &ordered)[2..], ["cloud-a", "cloud-b"]);
        assert!(
            decisions[0]
                .reasons
                .iter()
                .any(|reason| reason.contains("#1 by measured latency 12 ms"))
        );
    }
}
