-- Certificates (keys sealed by the site key), the DPs' links to them, and the client policy: client settings
-- with their device/user assignments, boundary groups and deployments.
CREATE TABLE certificates (
    id              TEXT PRIMARY KEY NOT NULL,      -- cert-<uuid>
    kind            TEXT NOT NULL,                  -- management | service
    subject         TEXT NOT NULL,
    common_name     TEXT NOT NULL,
    issuer          TEXT NOT NULL,
    thumbprint      TEXT NOT NULL,                  -- SHA-1, uppercase hex
    not_before_ms   INTEGER NOT NULL,
    not_after_ms    INTEGER NOT NULL,
    chain           TEXT NOT NULL,                  -- JSON: base64 DER, leaf first
    sealed_key      BLOB NOT NULL,                  -- private key sealed by the site key (context: id)
    subscription_id TEXT NOT NULL DEFAULT '',
    create_time_ms  INTEGER NOT NULL,
    UNIQUE (thumbprint, kind)
);

ALTER TABLE distribution_points ADD COLUMN management_certificate_id TEXT REFERENCES certificates (id);
ALTER TABLE distribution_points ADD COLUMN service_certificate_id TEXT REFERENCES certificates (id);

CREATE TABLE client_settings (
    id                  TEXT PRIMARY KEY NOT NULL,  -- cs-<uuid>, or 'default'
    name                TEXT NOT NULL UNIQUE COLLATE NOCASE,
    priority            INTEGER NOT NULL,
    allow_cloud_devices INTEGER NOT NULL DEFAULT 0,
    allow_cloud_users   INTEGER NOT NULL DEFAULT 0,
    update_time_ms      INTEGER NOT NULL
);
INSERT INTO client_settings (id, name, priority, update_time_ms) VALUES ('default', 'Default Client Settings', 10001, 0);

CREATE TABLE client_settings_assignments (
    settings_id    TEXT NOT NULL REFERENCES client_settings (id) ON DELETE CASCADE,
    principal_kind TEXT NOT NULL,                   -- device | user
    principal      TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (settings_id, principal_kind, principal)
);
CREATE INDEX client_settings_assignments_principal ON client_settings_assignments (principal_kind, principal);

CREATE TABLE boundary_groups (
    id        TEXT PRIMARY KEY NOT NULL,            -- bg-<uuid>
    name      TEXT NOT NULL UNIQUE COLLATE NOCASE,
    subnets   TEXT NOT NULL DEFAULT '[]',           -- JSON: CIDR strings
    dp_ids    TEXT NOT NULL DEFAULT '[]'            -- JSON: DP ids
);

CREATE TABLE deployments (
    id                    TEXT PRIMARY KEY NOT NULL, -- dep-<uuid>
    content_version_id    TEXT NOT NULL REFERENCES content_versions (id),
    name                  TEXT NOT NULL,
    allow_remote_fallback INTEGER NOT NULL DEFAULT 0,
    task_sequence_mode    TEXT NOT NULL DEFAULT '',  -- '' | all_before_start | when_needed
    cloud_selection       TEXT NOT NULL DEFAULT 'random',
    create_time_ms        INTEGER NOT NULL
);
