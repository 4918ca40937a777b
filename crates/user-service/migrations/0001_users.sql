CREATE TABLE users (
    id            UUID PRIMARY KEY,
    -- Stored normalised (trimmed, lower-cased); uniqueness is the database's job, so two
    -- concurrent registrations cannot both win.
    email         TEXT        NOT NULL UNIQUE,
    name          TEXT        NOT NULL,
    password_hash TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
