-- A migration whose effect shows whether it ran more than once.
CREATE TABLE probe (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL);
INSERT INTO probe (note) VALUES ('migrated');
