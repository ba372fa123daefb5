-- Tables for the pgbench scripts beside it: PostgresStore's schema and tower-sessions-sqlx-store's,
-- 32 sessions each. Run once, then for each script:
--   pgbench -n -M prepared -c 8 -j 2 -T 4 -f <script>.sql <database>
CREATE TABLE IF NOT EXISTS typed_sessions (
    key            TEXT COLLATE "C" PRIMARY KEY,
    revision       BIGINT NOT NULL,
    expires_ms     BIGINT NOT NULL,
    deadline_ms    BIGINT NOT NULL,
    record         BYTEA,
    flash          BYTEA,
    flash_taken    BYTEA,
    moved_to       TEXT,
    grace_until_ms BIGINT
) WITH (fillfactor = 80);
CREATE TABLE IF NOT EXISTS ts (id TEXT PRIMARY KEY NOT NULL, data BYTEA NOT NULL, expiry_date TIMESTAMPTZ NOT NULL);
INSERT INTO typed_sessions SELECT 'k' || i, 0, 4000000000000, 4000000000000, convert_to(repeat('x', 250), 'UTF8')
FROM generate_series(1, 32) i ON CONFLICT DO NOTHING;
INSERT INTO ts SELECT 'k' || i, convert_to(repeat('x', 60), 'UTF8'), now() + interval '1 day'
FROM generate_series(1, 32) i ON CONFLICT DO NOTHING;
