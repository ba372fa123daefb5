\set k random(1, 32)
SELECT data FROM ts WHERE id = 'k' || :k AND expiry_date > now();
