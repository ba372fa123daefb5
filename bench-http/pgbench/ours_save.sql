\set k random(1, 32)
UPDATE typed_sessions SET revision = revision + 1, expires_ms = GREATEST(expires_ms, 3999999999000), deadline_ms = 4000000000000, record = convert_to(repeat('y', 250),'UTF8'), flash = COALESCE(NULL, flash) WHERE key = 'k' || :k AND moved_to IS NULL AND LEAST(expires_ms, deadline_ms) > 100 AND (NULL IS NULL OR revision = 5);
