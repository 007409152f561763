-- Ed25519 keys that sign clients' access tokens; the private half sealed by the site key.
CREATE TABLE signing_keys (
    id              TEXT PRIMARY KEY NOT NULL,      -- the token's kid
    public_key      BLOB NOT NULL,                  -- 32 bytes
    sealed_private  BLOB NOT NULL,                  -- PKCS#8 sealed by the site key (context: id)
    create_time_ms  INTEGER NOT NULL,
    current         INTEGER NOT NULL DEFAULT 0
);
