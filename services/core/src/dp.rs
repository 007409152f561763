//! Distribution point kinds, states and thresholds, with the defaults of the reference's install guide.

use serde::{Deserialize, Serialize};

use crate::validate::{ValidationError, ValidationResult};

/// Where a distribution point runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpKind {
    /// In Azure, content in Azure Blob Storage.
    Cloud,
    /// On the intranet, content in a local folder.
    OnPremises,
    /// On-premises and reachable from the internet.
    InternetFacing,
}

impl DpKind {
    /// The stable name stored in databases and shown by the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cloud => "cloud",
            Self::OnPremises => "on_premises",
            Self::InternetFacing => "internet_facing",
        }
    }

    /// Parses [`DpKind::as_str`] output (also accepting `-` for `_`).
    pub fn parse(value: &str) -> Option<Self> {
        match value.replace('-', "_").as_str() {
            "cloud" => Some(Self::Cloud),
            "on_premises" => Some(Self::OnPremises),
            "internet_facing" => Some(Self::InternetFacing),
            _ => None,
        }
    }
}

/// The lifecycle state of a distribution point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpState {
    /// Install under way.
    Provisioning,
    /// Serving.
    Ready,
    /// Service stopped by the admin.
    Stopped,
    /// Failed; see the reason.
    Error,
    /// Restored; certificates must be imported again.
    CertificatesRequired,
    /// Delete under way.
    Deleting,
}

impl DpState {
    /// The stable name stored in databases.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Ready => "ready",
            Self::Stopped => "stopped",
            Self::Error => "error",
            Self::CertificatesRequired => "certificates_required",
            Self::Deleting => "deleting",
        }
    }

    /// Parses [`DpState::as_str`] output.
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Provisioning,
            Self::Ready,
            Self::Stopped,
            Self::Error,
            Self::CertificatesRequired,
            Self::Deleting,
        ]
        .into_iter()
        .find(|state| state.as_str() == value)
    }
}

/// Storage and transfer alert thresholds of a DP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Storage alert threshold, GB (10^9 bytes).
    pub storage_alert_gb: u64,
    /// Storage warning level, percent of the threshold.
    pub storage_warning_percent: u32,
    /// Storage critical level, percent of the threshold.
    pub storage_critical_percent: u32,
    /// Transfer alert threshold over 30 days, GB.
    pub transfer_alert_gb: u64,
    /// Transfer warning level, percent.
    pub transfer_warning_percent: u32,
    /// Transfer critical level, percent.
    pub transfer_critical_percent: u32,
    /// Raise storage alerts.
    pub storage_alerts_enabled: bool,
    /// Raise transfer alerts.
    pub transfer_alerts_enabled: bool,
    /// Stop the service when transfer critical is crossed (opt-in).
    pub stop_service_on_transfer_critical: bool,
}

impl Default for Thresholds {
    /// The install guide's defaults: 2,000 GB storage, 10,000 GB transfer over 30 days, warning 50 %,
    /// critical 90 %, alerts on, no enforcement.
    fn default() -> Self {
        Self {
            storage_alert_gb: 2_000,
            storage_warning_percent: 50,
            storage_critical_percent: 90,
            transfer_alert_gb: 10_000,
            transfer_warning_percent: 50,
            transfer_critical_percent: 90,
            storage_alerts_enabled: true,
            transfer_alerts_enabled: true,
            stop_service_on_transfer_critical: false,
        }
    }
}

impl Thresholds {
    /// Checks the ranges: thresholds 1 to 1,000,000 GB, levels 1 to 100 % with warning below critical.
    pub fn validate(&self) -> ValidationResult<()> {
        for (field, value) in [
            ("thresholds.storage_alert_gb", self.storage_alert_gb),
            ("thresholds.transfer_alert_gb", self.transfer_alert_gb),
        ] {
            if !(1..=1_000_000).contains(&value) {
                return Err(ValidationError::new(
                    field,
                    format!("{value} GB is out of range; use 1 to 1000000 GB"),
                ));
            }
        }
        for (prefix, warning, critical) in [
            (
                "thresholds.storage",
                self.storage_warning_percent,
                self.storage_critical_percent,
            ),
            (
                "thresholds.transfer",
                self.transfer_warning_percent,
                self.transfer_critical_percent,
            ),
        ] {
            if !(1..=100).contains(&warning) || !(1..=100).contains(&critical) {
                return Err(ValidationError::new(
                    if prefix.ends_with("storage") {
                        "thresholds.storage_warning_percent"
                    } else {
                        "thresholds.transfer_warning_percent"
                    },
                    format!("warning {warning} % and critical {critical} % must each be 1 to 100"),
                ));
            }
            if warning >= critical {
                return Err(ValidationError::new(
                    if prefix.ends_with("storage") {
                        "thresholds.storage_critical_percent"
                    } else {
                        "thresholds.transfer_critical_percent"
                    },
                    format!("critical {critical} % must be above warning {warning} %"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_install_guide() {
        let defaults = Thresholds::default();
        assert_eq!(defaults.storage_alert_gb, 2_000);
        assert_eq!(defaults.transfer_alert_gb, 10_000);
        assert_eq!(
            (
                defaults.storage_warning_percent,
                defaults.storage_critical_percent
            ),
            (50, 90)
        );
        assert!(!defaults.stop_service_on_transfer_critical);
        defaults.validate().unwrap();
    }

    #[test]
    fn out_of_range_thresholds_are_refused() {
        let zero = Thresholds {
            storage_alert_gb: 0,
            ..Thresholds::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().field,
            "thresholds.storage_alert_gb"
        );
        let inverted = Thresholds {
            transfer_warning_percent: 95,
            ..Thresholds::default()
        };
        assert_eq!(
            inverted.validate().unwrap_err().field,
            "thresholds.transfer_critical_percent"
        );
        let over = Thresholds {
            storage_critical_percent: 101,
            ..Thresholds::default()
        };
        assert!(over.validate().is_err());
    }

    #[test]
    fn kinds_and_states_round_trip() {
        for kind in [DpKind::Cloud, DpKind::OnPremises, DpKind::InternetFacing] {
            assert_eq!(DpKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(DpKind::parse("on-premises"), Some(DpKind::OnPremises));
        assert_eq!(DpState::parse("ready"), Some(DpState::Ready));
        assert_eq!(DpState::parse("nope"), None);
    }
}
