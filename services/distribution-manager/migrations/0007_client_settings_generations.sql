-- Client settings assignments are written in chunks under a new generation, then switched to in one short
-- transaction, so a save of 100,000 device ids holds the write lock for a chunk at a time, and readers see the
-- old assignments or the new ones, never a mix. Rows of other generations are removed afterwards.
ALTER TABLE client_settings ADD COLUMN assignments_generation TEXT NOT NULL DEFAULT '';

CREATE TABLE client_settings_assignments_v2 (
    settings_id    TEXT NOT NULL REFERENCES client_settings (id) ON DELETE CASCADE,
    generation     TEXT NOT NULL DEFAULT '',
    principal_kind TEXT NOT NULL,                   -- device | user
    principal      TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (settings_id, generation, principal_kind, principal)
);
INSERT INTO client_settings_assignments_v2 (settings_id, generation, principal_kind, principal)
    SELECT settings_id, '', principal_kind, principal FROM client_settings_assignments;
DROP TABLE client_settings_assignments;
ALTER TABLE client_settings_assignments_v2 RENAME TO client_settings_assignments;
CREATE INDEX client_settings_assignments_principal ON client_settings_assignments (principal_kind, principal);
