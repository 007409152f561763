-- The audit trail: every change and every refused call (rate-limited), pruned after the retention.
CREATE TABLE audit_events (
    sequence  INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms   INTEGER NOT NULL,
    principal TEXT    NOT NULL,
    roles     TEXT    NOT NULL,
    rpc       TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    code      TEXT    NOT NULL,
    trace_id  TEXT    NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE INDEX audit_events_principal ON audit_events (principal, sequence);
