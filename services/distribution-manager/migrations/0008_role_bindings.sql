-- Roles granted to the site's administrators (devices and services have built-in roles).
CREATE TABLE role_bindings (
    admin_name    TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    grant_time_ms INTEGER NOT NULL,
    granted_by    TEXT    NOT NULL,
    PRIMARY KEY (admin_name, role)
);
