-- Events Kafka refuses for good (a record larger than the producer or the broker accepts):
-- the relay moves them here, with the reason, so that the rows after them are published
-- (it used to fail its session on the same row forever). For an operator to look into.
CREATE TABLE IF NOT EXISTS outbox_dead (
    id         bigint PRIMARY KEY,
    topic      text NOT NULL,
    key        text NOT NULL,
    event_id   uuid NOT NULL,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL,
    error      text NOT NULL,
    dead_at    timestamptz NOT NULL DEFAULT now()
);
