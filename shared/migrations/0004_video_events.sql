-- Every status change of a video, recorded by triggers at the source so that no writer can
-- forget it and no change is too quick to be seen; GET /v1/videos/{id}/events replays these
-- rows (the id is the SSE event id) and waits on the notification for more.
CREATE TABLE IF NOT EXISTS video_events (
    id           bigserial PRIMARY KEY,
    video_id     uuid NOT NULL,
    status       text NOT NULL,
    review_state text,
    job_state    text NOT NULL,
    progress     integer NOT NULL,
    attempts     integer NOT NULL,
    error        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS video_events_video ON video_events (video_id, id);

CREATE OR REPLACE FUNCTION record_video_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vid uuid;
BEGIN
    -- IF, not CASE: PL/pgSQL resolves every field a CASE names, on either table's row.
    IF TG_TABLE_NAME = 'jobs' THEN
        vid := NEW.video_id;
    ELSE
        vid := NEW.id;
    END IF;
    INSERT INTO video_events (video_id, status, review_state, job_state, progress, attempts, error)
    SELECT v.id, v.status, v.review_state, j.state, j.progress, j.attempts, j.error
      FROM videos v JOIN jobs j ON j.video_id = v.id
     WHERE v.id = vid;
    PERFORM pg_notify('influgen_video_events', vid::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_created_event ON jobs;
CREATE TRIGGER jobs_created_event AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION record_video_event();
DROP TRIGGER IF EXISTS jobs_changed_event ON jobs;
CREATE TRIGGER jobs_changed_event AFTER UPDATE OF state, progress, attempts ON jobs
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.progress IS DISTINCT FROM NEW.progress
          OR OLD.attempts IS DISTINCT FROM NEW.attempts)
    EXECUTE FUNCTION record_video_event();
DROP TRIGGER IF EXISTS videos_changed_event ON videos;
CREATE TRIGGER videos_changed_event AFTER UPDATE OF status, review_state ON videos
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.review_state IS DISTINCT FROM NEW.review_state)
    EXECUTE FUNCTION record_video_event();
