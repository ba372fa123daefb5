\set k random(1, 32)
WITH touched AS (
UPDATE typed_sessions SET expires_ms = GREATEST(expires_ms, LEAST(1000, deadline_ms)), flash_taken = CASE WHEN true THEN flash END, flash = CASE WHEN true THEN NULL ELSE flash END
WHERE key = 'k' || :k AND moved_to IS NULL AND LEAST(expires_ms, deadline_ms) > 100 AND (LEAST(1000, deadline_ms) - expires_ms >= 1000 OR (true AND flash IS NOT NULL))
RETURNING revision, expires_ms, deadline_ms, record, COALESCE(flash_taken, flash), moved_to, grace_until_ms)
SELECT * FROM touched UNION ALL SELECT revision, expires_ms, deadline_ms, record, CASE WHEN true THEN NULL ELSE flash END, moved_to, grace_until_ms FROM typed_sessions WHERE key = 'k' || :k AND NOT EXISTS (SELECT 1 FROM touched);
