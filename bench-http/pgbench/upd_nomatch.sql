\set k random(1, 32)
UPDATE typed_sessions SET expires_ms = GREATEST(expires_ms, LEAST(1000, deadline_ms)) WHERE key = 'k' || :k AND moved_to IS NULL AND LEAST(expires_ms, deadline_ms) > 100 AND (LEAST(1000, deadline_ms) - expires_ms >= 1000 OR (true AND flash IS NOT NULL)) RETURNING revision;
