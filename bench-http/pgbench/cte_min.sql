\set k random(1, 32)
WITH touched AS (
UPDATE typed_sessions SET expires_ms = expires_ms WHERE key = 'k' || :k AND false RETURNING revision)
SELECT revision FROM typed_sessions WHERE key = 'k' || :k;
