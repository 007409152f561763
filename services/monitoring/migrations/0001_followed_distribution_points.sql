-- The distribution points the monitoring service follows, as last seen on the distribution manager's watch stream.
CREATE TABLE followed_distribution_points (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    state             TEXT NOT NULL,
    service_name      TEXT NOT NULL DEFAULT '',
    thresholds        TEXT NOT NULL,
    revision          INTEGER NOT NULL,
    follow_time_ms    INTEGER NOT NULL,
    last_pull_time_ms INTEGER
);
