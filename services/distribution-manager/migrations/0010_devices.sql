-- Devices enroll with bulk registration tokens (only a hash of each secret is kept) and get certificates of the
-- site CA; an administrator can block a device.
CREATE TABLE enrollment_tokens (
    id             TEXT    PRIMARY KEY,
    secret_sha256  BLOB    NOT NULL,
    uses_left      INTEGER NOT NULL,
    expire_ms      INTEGER NOT NULL,
    description    TEXT    NOT NULL,
    create_time_ms INTEGER NOT NULL,
    created_by     TEXT    NOT NULL
);
CREATE TABLE devices (
    id                    TEXT    PRIMARY KEY,
    enroll_time_ms        INTEGER NOT NULL,
    certificate_expire_ms INTEGER NOT NULL,
    blocked               INTEGER NOT NULL DEFAULT 0,
    block_reason          TEXT    NOT NULL DEFAULT '',
    update_time_ms        INTEGER NOT NULL
);
