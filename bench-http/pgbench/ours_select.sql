\set k random(1, 32)
SELECT revision, expires_ms, deadline_ms, record, flash, moved_to, grace_until_ms FROM typed_sessions WHERE key = 'k' || :k;
