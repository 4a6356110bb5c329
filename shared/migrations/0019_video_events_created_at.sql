-- video_events (the live-status history, four rows a video) grew for ever: the api's hourly
-- housekeeping deletes the rows of finished videos older than
-- INFLUGEN_VIDEO_EVENTS_RETENTION_DAYS, found by this index (rows arrive in time order: a
-- BRIN index costs the hot path's inserts next to nothing, as inbox_received_at does).
CREATE INDEX IF NOT EXISTS video_events_created_at ON video_events USING brin (created_at);
