//! Conversions between the wire types and the domain types of `clouddp-core`: strict `TryFrom` into the
//! domain (an unset or unknown value is an error naming the field), infallible `From` back.

use clouddp_core::content::{ContentFlags, ContentType};
use clouddp_core::dp::{DpKind, DpState, Thresholds};
use clouddp_core::validate::{ValidationError, ValidationResult};

use crate::v1 as pb;

impl From<DpKind> for pb::DistributionPointKind {
    fn from(kind: DpKind) -> Self {
        match kind {
            DpKind::Cloud => Self::Cloud,
            DpKind::OnPremises => Self::OnPremises,
            DpKind::InternetFacing => Self::InternetFacing,
        }
    }
}

/// The domain kind of a wire value; `None` for UNSPECIFIED or an unknown number.
pub fn dp_kind(value: i32) -> Option<DpKind> {
    match pb::DistributionPointKind::try_from(value).ok()? {
        pb::DistributionPointKind::Cloud => Some(DpKind::Cloud),
        pb::DistributionPointKind::OnPremises => Some(DpKind::OnPremises),
        pb::DistributionPointKind::InternetFacing => Some(DpKind::InternetFacing),
        pb::DistributionPointKind::Unspecified => None,
    }
}

impl From<DpState> for pb::DistributionPointState {
    fn from(state: DpState) -> Self {
        match state {
            DpState::Provisioning => Self::Provisioning,
            DpState::Ready => Self::Ready,
            DpState::Stopped => Self::Stopped,
            DpState::Error => Self::Error,
            DpState::CertificatesRequired => Self::CertificatesRequired,
            DpState::Deleting => Self::Deleting,
        }
    }
}

/// The domain state of a wire value; `None` for UNSPECIFIED or an unknown number.
pub fn dp_state(value: i32) -> Option<DpState> {
    match pb::DistributionPointState::try_from(value).ok()? {
        pb::DistributionPointState::Provisioning => Some(DpState::Provisioning),
        pb::DistributionPointState::Ready => Some(DpState::Ready),
        pb::DistributionPointState::Stopped => Some(DpState::Stopped),
        pb::DistributionPointState::Error => Some(DpState::Error),
        pb::DistributionPointState::CertificatesRequired => Some(DpState::CertificatesRequired),
        pb::DistributionPointState::Deleting => Some(DpState::Deleting),
        pb::DistributionPointState::Unspecified => None,
    }
}

impl From<&Thresholds> for pb::Thresholds {
    fn from(thresholds: &Thresholds) -> Self {
        Self {
            storage_alert_gb: thresholds.storage_alert_gb,
            storage_warning_percent: thresholds.storage_warning_percent,
            storage_critical_percent: thresholds.storage_critical_percent,
            transfer_alert_gb: thresholds.transfer_alert_gb,
            transfer_warning_percent: thresholds.transfer_warning_percent,
            transfer_critical_percent: thresholds.transfer_critical_percent,
            storage_alerts_enabled: thresholds.storage_alerts_enabled,
            transfer_alerts_enabled: thresholds.transfer_alerts_enabled,
            stop_service_on_transfer_critical: thresholds.stop_service_on_transfer_critical,
        }
    }
}

impl TryFrom<&pb::Thresholds> for Thresholds {
    type Error = ValidationError;

    /// Validated thresholds; the ranges of [`Thresholds::validate`] apply.
    fn try_from(wire: &pb::Thresholds) -> ValidationResult<Self> {
        let thresholds = Self {
            storage_alert_gb: wire.storage_alert_gb,
            storage_warning_percent: wire.storage_warning_percent,
            storage_critical_percent: wire.storage_critical_percent,
            transfer_alert_gb: wire.transfer_alert_gb,
            transfer_warning_percent: wire.transfer_warning_percent,
            transfer_critical_percent: wire.transfer_critical_percent,
            storage_alerts_enabled: wire.storage_alerts_enabled,
            transfer_alerts_enabled: wire.transfer_alerts_enabled,
            stop_service_on_transfer_critical: wire.stop_service_on_transfer_critical,
        };
        thresholds.validate()?;
        Ok(thresholds)
    }
}

impl From<ContentType> for pb::ContentType {
    fn from(content_type: ContentType) -> Self {
        match content_type {
            ContentType::Application => Self::Application,
            ContentType::Package => Self::Package,
            ContentType::SoftwareUpdatePackage => Self::SoftwareUpdatePackage,
            ContentType::BootImage => Self::BootImage,
            ContentType::OsImage => Self::OsImage,
            ContentType::TaskSequence => Self::TaskSequence,
        }
    }
}

/// The domain content type of a wire value; `None` for UNSPECIFIED or an unknown number.
pub fn content_type(value: i32) -> Option<ContentType> {
    match pb::ContentType::try_from(value).ok()? {
        pb::ContentType::Application => Some(ContentType::Application),
        pb::ContentType::Package => Some(ContentType::Package),
        pb::ContentType::SoftwareUpdatePackage => Some(ContentType::SoftwareUpdatePackage),
        pb::ContentType::BootImage => Some(ContentType::BootImage),
        pb::ContentType::OsImage => Some(ContentType::OsImage),
        pb::ContentType::TaskSequence => Some(ContentType::TaskSequence),
        pb::ContentType::Unspecified => None,
    }
}

impl From<&ContentFlags> for pb::ContentFlags {
    fn from(flags: &ContentFlags) -> Self {
        Self {
            pxe_enabled: flags.pxe_enabled,
            multicast_enabled: flags.multicast_enabled,
            run_from_distribution_point: flags.run_from_distribution_point,
            app_v_streaming: flags.app_v_streaming,
            prestaged: flags.prestaged,
        }
    }
}

impl From<&pb::ContentFlags> for ContentFlags {
    fn from(flags: &pb::ContentFlags) -> Self {
        Self {
            pxe_enabled: flags.pxe_enabled,
            multicast_enabled: flags.multicast_enabled,
            run_from_distribution_point: flags.run_from_distribution_point,
            app_v_streaming: flags.app_v_streaming,
            prestaged: flags.prestaged,
        }
    }
}

/// A protobuf timestamp from milliseconds since the Unix epoch.
pub fn timestamp_from_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or_default(),
    }
}

/// Milliseconds since the Unix epoch of a protobuf timestamp.
pub fn ms_from_timestamp(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos / 1_000_000))
}

/// Refuses an enum value this version does not know (INVALID_ARGUMENT naming `field` and `E`): in a filter it
/// would otherwise read as UNSPECIFIED, "any", and a client would get everything without a word.
pub fn check_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<(), tonic::Status> {
    match E::try_from(value) {
        Ok(_) => Ok(()),
        Err(_) => Err(tonic::Status::invalid_argument(format!(
            "{field}: {value} is not a {}",
            std::any::type_name::<E>()
                .rsplit("::")
                .next()
                .unwrap_or("known value")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_round_trip_and_invalid_ones_are_refused() {
        let defaults = Thresholds::default();
        let wire = pb::Thresholds::from(&defaults);
        assert_eq!(Thresholds::try_from(&wire).unwrap(), defaults);
        let zero = pb::Thresholds::default();
        assert!(Thresholds::try_from(&zero).is_err());
    }

    #[test]
    fn kinds_states_and_times_round_trip() {
        for kind in [DpKind::Cloud, DpKind::OnPremises, DpKind::InternetFacing] {
            assert_eq!(
                dp_kind(pb::DistributionPointKind::from(kind).into()),
                Some(kind)
            );
        }
        assert_eq!(dp_kind(0), None);
        assert_eq!(dp_kind(99), None);
        assert_eq!(
            dp_state(pb::DistributionPointState::from(DpState::Stopped).into()),
            Some(DpState::Stopped)
        );
        for ms in [0, 1, 999, 1_700_000_000_123, -1] {
            assert_eq!(ms_from_timestamp(&timestamp_from_ms(ms)), ms);
        }
    }
}
