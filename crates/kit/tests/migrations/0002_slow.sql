-- Slow enough that concurrent starters really overlap.
SELECT pg_sleep(0.3);
INSERT INTO probe (note) VALUES ('second');
