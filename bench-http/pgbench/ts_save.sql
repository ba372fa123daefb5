\set k random(1, 32)
INSERT INTO ts (id, data, expiry_date) VALUES ('k' || :k, convert_to(repeat('z', 60),'UTF8'), now() + interval '1 day') ON CONFLICT(id) DO UPDATE SET data = excluded.data, expiry_date = excluded.expiry_date;
