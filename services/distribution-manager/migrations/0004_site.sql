-- When the site's database was created, for GetSite.
INSERT INTO site_counters (name, value) VALUES ('site_create_time_ms', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
