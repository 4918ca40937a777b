-- At most one notification per event: the event id is the key, so a redelivered event
-- finds its row and changes nothing once it is SENT or DEAD.
CREATE TABLE notifications (
    event_id    UUID        PRIMARY KEY,
    event_type  TEXT        NOT NULL,
    -- The event's aggregate id (the order id).
    key         TEXT        NOT NULL,
    subject     TEXT        NOT NULL,
    body        TEXT        NOT NULL,
    -- Whom it is for, when the event says (a user id).
    user_hint   TEXT,
    -- The emitter's trace context, carried on to the dead letter.
    traceparent TEXT,
    status      TEXT        NOT NULL DEFAULT 'PENDING'
                            CHECK (status IN ('PENDING', 'SENT', 'DEAD')),
    attempts    INT         NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- GET /notifications?status=DEAD, newest first; the startup sweep of PENDING rows.
CREATE INDEX notifications_by_status ON notifications (status, created_at DESC);
