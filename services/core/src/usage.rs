//! Usage thresholds: the level a measurement is at, the alert transition a new level makes, the rolling 30-day
//! transfer window over hourly samples, and a forecast of when the next level will be crossed.
//!
//! A crossing fires exactly once: the transition depends only on the previous and the new level, so repeated
//! evaluations at one level say nothing, falling back below a level re-arms it, and late data that lifts a
//! window over a level fires when it is evaluated, once.

use crate::dp::Thresholds;

/// Bytes in a GB as thresholds count them (10^9).
pub const GB: u64 = 1_000_000_000;
/// The transfer window: 30 days.
pub const WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;
/// An hour.
pub const HOUR_MS: i64 = 3600 * 1000;
/// The furthest an alert can be postponed: a year from now. Further than that is a typo, not a plan, and the
/// alert would never come back in the life of the DP.
pub const MAX_POSTPONE_MS: i64 = crate::limits::MAX_POSTPONE_DAYS * 24 * HOUR_MS;

/// One usage record: a line of a usage log object that a content endpoint appends to a DP's store and the
/// monitoring service reads back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageRecord {
    /// Format version (1).
    pub v: u32,
    /// When the counts were flushed, ms since the epoch.
    pub time_ms: i64,
    /// The DP id.
    pub dp: String,
    /// The content version id.
    pub content: String,
    /// The client (device id).
    pub client: String,
    /// Bytes sent.
    pub bytes: u64,
    /// Requests started.
    pub requests: u64,
}

/// The folder of the usage log objects written in the hour containing `ms`: `usage/YYYY/MM/DD/HH/`. Writers put
/// their objects in it; readers list the folders of the hours they still look at.
pub fn hour_folder(ms: i64) -> String {
    // `2026-11-25T20:08:08Z` → `usage/2026/11/25/20/`; a time RFC 3339 cannot write is clamped into its range.
    let seconds = ms
        .div_euclid(1000)
        .clamp(0, crate::time::LAST_RFC3339_SECOND);
    let text = crate::time::rfc3339_seconds(seconds);
    format!(
        "usage/{}/{}/{}/{}/",
        &text[0..4],
        &text[5..7],
        &text[8..10],
        &text[11..13]
    )
}

/// Where a measurement stands against its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Below the warning level.
    Normal,
    /// At or above warning, below critical.
    Warning,
    /// At or above critical.
    Critical,
}

impl Level {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// One threshold: bytes and its warning and critical percentages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The threshold in bytes.
    pub threshold_bytes: u64,
    /// Warning at this percent of the threshold.
    pub warning_percent: u32,
    /// Critical at this percent.
    pub critical_percent: u32,
}

impl Limit {
    /// The storage limit of `thresholds`.
    pub fn storage(thresholds: &Thresholds) -> Self {
        Self {
            threshold_bytes: thresholds.storage_alert_gb.saturating_mul(GB),
            warning_percent: thresholds.storage_warning_percent,
            critical_percent: thresholds.storage_critical_percent,
        }
    }

    /// The 30-day transfer limit of `thresholds`.
    pub fn transfer(thresholds: &Thresholds) -> Self {
        Self {
            threshold_bytes: thresholds.transfer_alert_gb.saturating_mul(GB),
            warning_percent: thresholds.transfer_warning_percent,
            critical_percent: thresholds.transfer_critical_percent,
        }
    }

    /// Bytes at which `level` starts.
    pub fn level_bytes(&self, level: Level) -> u64 {
        let percent = match level {
            Level::Normal => return 0,
            Level::Warning => self.warning_percent,
            Level::Critical => self.critical_percent,
        };
        (u128::from(self.threshold_bytes) * u128::from(percent) / 100)
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// The level of `measured`.
    pub fn level(&self, measured: u64) -> Level {
        if measured >= self.level_bytes(Level::Critical) {
            Level::Critical
        } else if measured >= self.level_bytes(Level::Warning) {
            Level::Warning
        } else {
            Level::Normal
        }
    }
}

/// What a new level does to the alert of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changes.
    None,
    /// A new alert at this level.
    Raised(Level),
    /// The alert goes up to critical.
    Escalated,
    /// The alert goes down to warning.
    Deescalated,
    /// The condition cleared.
    Resolved,
}

/// The transition from `previous` to `current`.
pub fn transition(previous: Level, current: Level) -> Transition {
    match (previous, current) {
        (a, b) if a == b => Transition::None,
        (Level::Normal, level) => Transition::Raised(level),
        (_, Level::Normal) => Transition::Resolved,
        (Level::Warning, Level::Critical) => Transition::Escalated,
        _ => Transition::Deescalated,
    }
}

/// Bytes transferred in the `WINDOW_MS` ending at `now_ms`, from hourly samples `(hour start ms, bytes)`.
pub fn window_total(samples: &[(i64, u64)], now_ms: i64) -> u64 {
    let start = now_ms - WINDOW_MS;
    samples
        .iter()
        .filter(|(hour, _)| *hour + HOUR_MS > start && *hour <= now_ms)
        .map(|(_, bytes)| *bytes)
        .fold(0_u64, u64::saturating_add)
}

/// When `measured` reaches `target` at `rate_per_day` bytes per day, from `now_ms`; `None` when it never will
/// at that rate, not within [`crate::time::HUNDRED_YEARS_MS`], or is there already.
pub fn forecast(measured: u64, target: u64, rate_per_day: f64, now_ms: i64) -> Option<i64> {
    if measured >= target || rate_per_day <= 0.0 || !rate_per_day.is_finite() {
        return None;
    }
    let days = (target - measured) as f64 / rate_per_day;
    let ms = days * 86_400_000.0;
    (ms <= crate::time::HUNDRED_YEARS_MS as f64).then(|| now_ms.saturating_add(ms as i64))
}

/// The average bytes per day over the 7 days ending at `now_ms`.
pub fn seven_day_rate(samples: &[(i64, u64)], now_ms: i64) -> f64 {
    let start = now_ms - 7 * 24 * HOUR_MS;
    let total: u64 = samples
        .iter()
        .filter(|(hour, _)| *hour + HOUR_MS > start && *hour <= now_ms)
        .map(|(_, bytes)| *bytes)
        .sum();
    total as f64 / 7.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit() -> Limit {
        Limit {
            threshold_bytes: 1000,
            warning_percent: 50,
            critical_percent: 90,
        }
    }

    #[test]
    fn levels_and_transitions() {
        let limit = limit();
        assert_eq!(limit.level(499), Level::Normal);
        assert_eq!(limit.level(500), Level::Warning);
        assert_eq!(limit.level(900), Level::Critical);
        assert_eq!(
            transition(Level::Normal, Level::Warning),
            Transition::Raised(Level::Warning)
        );
        assert_eq!(
            transition(Level::Normal, Level::Critical),
            Transition::Raised(Level::Critical)
        );
        assert_eq!(
            transition(Level::Warning, Level::Critical),
            Transition::Escalated
        );
        assert_eq!(
            transition(Level::Critical, Level::Warning),
            Transition::Deescalated
        );
        assert_eq!(
            transition(Level::Critical, Level::Normal),
            Transition::Resolved
        );
        assert_eq!(transition(Level::Warning, Level::Warning), Transition::None);
        let defaults = Limit::transfer(&Thresholds::default());
        assert_eq!(defaults.level_bytes(Level::Warning), 5_000 * GB);
        assert_eq!(defaults.level_bytes(Level::Critical), 9_000 * GB);
    }

    #[test]
    fn hour_folders_are_utc_hours() {
        assert_eq!(hour_folder(0), "usage/1970/01/01/00/");
        assert_eq!(hour_folder(1_764_101_288_000), "usage/2025/11/25/20/");
        assert_eq!(
            hour_folder(1_764_101_288_000 + 59 * 60 * 1000),
            "usage/2025/11/25/21/"
        );
    }

    #[test]
    fn the_window_slides_and_forecasts_extrapolate() {
        let day = 24 * HOUR_MS;
        let samples = [(0, 100), (10 * day, 200), (29 * day, 300)];
        assert_eq!(window_total(&samples, 29 * day), 600);
        assert_eq!(
            window_total(&samples, 31 * day),
            500,
            "the first day slid out"
        );
        assert_eq!(window_total(&samples, 45 * day), 300);
        assert_eq!(forecast(500, 900, 100.0, 0), Some(4 * day));
        assert_eq!(forecast(900, 900, 100.0, 0), None);
        assert_eq!(forecast(500, 900, 0.0, 0), None);
        // The default thresholds after one small download: 8 MB a week against 10 TB is millennia away.
        assert_eq!(forecast(8_000_000, 10_000 * GB, 8_000_000.0 / 7.0, 0), None);
        assert_eq!(forecast(0, u64::MAX, f64::MIN_POSITIVE, i64::MAX), None);
        assert!((seven_day_rate(&samples, 29 * day) - 300.0 / 7.0).abs() < 1e-9);
    }

    proptest! {
        /// Each upward crossing of a level raises or escalates exactly once; falling below re-arms it.
        #[test]
        fn a_crossing_fires_exactly_once(measurements in proptest::collection::vec(0_u64..1200, 1..200)) {
            let limit = limit();
            let mut level = Level::Normal;
            let mut warnings_fired = 0;
            let mut criticals_fired = 0;
            let mut warning_crossings = 0;
            let mut critical_crossings = 0;
            for measured in measurements {
                let next = limit.level(measured);
                if level < Level::Warning && next >= Level::Warning {
                    warning_crossings += 1;
                }
                if level < Level::Critical && next == Level::Critical {
                    critical_crossings += 1;
                }
                match transition(level, next) {
                    Transition::Raised(Level::Warning) => warnings_fired += 1,
                    Transition::Raised(Level::Critical) => {
                        warnings_fired += 1;
                        criticals_fired += 1;
                    }
                    Transition::Escalated => criticals_fired += 1,
                    Transition::Raised(Level::Normal) => prop_assert!(false, "raised at normal"),
                    _ => {}
                }
                // Re-evaluating at the same level never fires.
                prop_assert_eq!(transition(next, next), Transition::None);
                level = next;
            }
            prop_assert_eq!(warnings_fired, warning_crossings);
            prop_assert_eq!(criticals_fired, critical_crossings);
        }

        /// Late data: however samples arrive, evaluating after each arrival fires a level once when the window
        /// total first reaches it.
        #[test]
        fn late_data_that_crosses_fires_once(samples in proptest::collection::vec((0_i64..720, 0_u64..100), 1..60)) {
            let limit = Limit { threshold_bytes: 2000, warning_percent: 50, critical_percent: 90 };
            let now = 720 * HOUR_MS;
            let mut seen: Vec<(i64, u64)> = Vec::new();
            let mut level = Level::Normal;
            let mut fired = 0;
            for (hour, bytes) in samples {
                seen.push((hour * HOUR_MS, bytes));
                let next = limit.level(window_total(&seen, now));
                prop_assert!(next >= level, "totals only grow as data arrives");
                if matches!(transition(level, next), Transition::Raised(_) | Transition::Escalated) {
                    fired += 1;
                }
                level = next;
            }
            let expected = match level { Level::Normal => 0, Level::Warning => 1, Level::Critical => 1 };
            prop_assert!(fired >= expected && fired <= 2);
        }
    }
}
