-- Usage pulled from the DPs' stores, and alerts with their event log.

-- Usage log objects already counted (kept 25 hours past their hour: late objects are still picked up once).
CREATE TABLE usage_objects (
    dp_id   TEXT NOT NULL,
    path    TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    PRIMARY KEY (dp_id, path)
);

-- Hourly samples (kept 35 days).
CREATE TABLE usage_hours (
    dp_id             TEXT NOT NULL,
    hour_start_ms     INTEGER NOT NULL,
    transferred_bytes INTEGER NOT NULL DEFAULT 0,
    stored_bytes      INTEGER,
    PRIMARY KEY (dp_id, hour_start_ms)
);

CREATE TABLE alerts (
    id                 TEXT PRIMARY KEY NOT NULL,  -- alert-<uuid>
    dp_id              TEXT NOT NULL,
    dp_name            TEXT NOT NULL,
    kind               TEXT NOT NULL,
    severity           TEXT NOT NULL,
    state              TEXT NOT NULL,              -- active | postponed | acknowledged | resolved
    message            TEXT NOT NULL,
    threshold_bytes    INTEGER NOT NULL DEFAULT 0,
    level_percent      INTEGER NOT NULL DEFAULT 0,
    measured_bytes     INTEGER NOT NULL DEFAULT 0,
    window_seconds     INTEGER NOT NULL DEFAULT 0,
    crossing_ms        INTEGER,
    forecast_ms        INTEGER,
    raise_ms           INTEGER NOT NULL,
    update_ms          INTEGER NOT NULL,
    postponed_until_ms INTEGER,
    ack_comment        TEXT NOT NULL DEFAULT ''
);
-- One open alert per (DP, condition).
CREATE UNIQUE INDEX alerts_open ON alerts (dp_id, kind) WHERE state <> 'resolved';

-- Every change of an alert, in order; persisted before it is streamed.
CREATE TABLE alert_events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    type     TEXT NOT NULL,
    alert    TEXT NOT NULL,                        -- JSON of the alert after the change
    time_ms  INTEGER NOT NULL
);
