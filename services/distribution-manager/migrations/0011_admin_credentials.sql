-- The administrator credentials the site issued, by certificate serial; a revoked one is refused by both services.
CREATE TABLE admin_credentials (
    serial         TEXT    PRIMARY KEY,
    admin_name     TEXT    NOT NULL,
    issue_time_ms  INTEGER NOT NULL,
    expire_ms      INTEGER NOT NULL,
    issued_by      TEXT    NOT NULL,
    revoked        INTEGER NOT NULL DEFAULT 0,
    revoke_time_ms INTEGER NOT NULL DEFAULT 0,
    revoked_by     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX admin_credentials_by_admin ON admin_credentials (admin_name, issue_time_ms);
