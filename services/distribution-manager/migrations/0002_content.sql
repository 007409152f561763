-- Content versions, their distribution jobs and staged parts, DP groups, and secrets wrapped by the site key.
CREATE TABLE content_versions (
    id              TEXT PRIMARY KEY NOT NULL,      -- <content_id>@<version>
    content_id      TEXT NOT NULL,
    version         INTEGER NOT NULL,
    name            TEXT NOT NULL COLLATE NOCASE,
    description     TEXT NOT NULL DEFAULT '',
    content_type    TEXT NOT NULL,
    flags           TEXT NOT NULL,                  -- JSON ContentFlags
    source_path     TEXT NOT NULL,
    file_count      INTEGER NOT NULL,
    size_bytes      INTEGER NOT NULL,
    chunk_size      INTEGER NOT NULL,
    chunk_count     INTEGER NOT NULL,
    sha256          BLOB NOT NULL,
    manifest        TEXT NOT NULL,                  -- JSON: files and chunk hashes
    wrapped_key     BLOB NOT NULL,                  -- data key sealed by the site key
    create_time_ms  INTEGER NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE distributions (
    content_version_id TEXT NOT NULL REFERENCES content_versions (id),
    dp_id              TEXT NOT NULL REFERENCES distribution_points (id),
    state              TEXT NOT NULL,
    bytes_done         INTEGER NOT NULL DEFAULT 0,
    bytes_total        INTEGER NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    error              TEXT NOT NULL DEFAULT '',
    next_attempt_ms    INTEGER NOT NULL DEFAULT 0,
    update_time_ms     INTEGER NOT NULL,
    PRIMARY KEY (content_version_id, dp_id)
);

CREATE TABLE distribution_parts (
    content_version_id TEXT NOT NULL,
    dp_id              TEXT NOT NULL,
    part_index         INTEGER NOT NULL,
    token              TEXT NOT NULL,
    PRIMARY KEY (content_version_id, dp_id, part_index)
);

CREATE TABLE dp_groups (
    id             TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    description    TEXT NOT NULL DEFAULT '',
    create_time_ms INTEGER NOT NULL
);

CREATE TABLE dp_group_members (
    group_id TEXT NOT NULL REFERENCES dp_groups (id) ON DELETE CASCADE,
    dp_id    TEXT NOT NULL REFERENCES distribution_points (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, dp_id)
);

CREATE TABLE dp_group_contents (
    group_id           TEXT NOT NULL REFERENCES dp_groups (id) ON DELETE CASCADE,
    content_version_id TEXT NOT NULL REFERENCES content_versions (id),
    PRIMARY KEY (group_id, content_version_id)
);

-- Secrets of a DP (storage credentials), sealed by the site key.
CREATE TABLE dp_secrets (
    dp_id   TEXT PRIMARY KEY NOT NULL REFERENCES distribution_points (id) ON DELETE CASCADE,
    sealed  BLOB NOT NULL
);
