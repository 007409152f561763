-- Distribution points and the site-wide revision counter of their changes.
CREATE TABLE site_counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO site_counters (name, value) VALUES ('dp_revision', 0);

CREATE TABLE distribution_points (
    id                      TEXT PRIMARY KEY NOT NULL,
    name                    TEXT NOT NULL UNIQUE COLLATE NOCASE,
    kind                    TEXT NOT NULL,
    state                   TEXT NOT NULL,
    state_reason            TEXT NOT NULL DEFAULT '',
    site_code               TEXT NOT NULL,
    address                 TEXT NOT NULL DEFAULT '',
    folder_path             TEXT,
    azure_account           TEXT,
    azure_container         TEXT,
    azure_endpoint          TEXT,
    subscription_id         TEXT,
    service_name            TEXT UNIQUE,
    region                  TEXT,
    service_fqdn            TEXT,
    instances               INTEGER,
    thresholds              TEXT NOT NULL,
    boundary_groups         TEXT NOT NULL DEFAULT '[]',
    pull_distribution_point INTEGER NOT NULL DEFAULT 0,
    create_time_ms          INTEGER NOT NULL,
    update_time_ms          INTEGER NOT NULL,
    revision                INTEGER NOT NULL
);
