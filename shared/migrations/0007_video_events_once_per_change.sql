-- A claim moves the job (state, attempts) and its video (to `generating`) in one statement,
-- and both rows' triggers recorded the same change: two identical video_events rows and two
-- notifications per claimed job, a fifth of the triggers' work. The video's move to
-- `generating` is now left to the job's trigger, which always fires with it (a claim
-- always counts an attempt); a review-state change on the same row is still recorded.
DROP TRIGGER IF EXISTS videos_changed_event ON videos;
CREATE TRIGGER videos_changed_event AFTER UPDATE OF status, review_state ON videos
    FOR EACH ROW
    WHEN ((OLD.status IS DISTINCT FROM NEW.status AND NEW.status <> 'generating')
          OR OLD.review_state IS DISTINCT FROM NEW.review_state)
    EXECUTE FUNCTION record_video_event();

-- The triggering row's own columns come from NEW: one index probe per event instead of two.
CREATE OR REPLACE FUNCTION record_video_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    vid uuid;
BEGIN
    -- IF, not CASE: PL/pgSQL resolves every field a CASE names, on either table's row.
    IF TG_TABLE_NAME = 'jobs' THEN
        vid := NEW.video_id;
        INSERT INTO video_events (video_id, status, review_state, job_state, progress,
                                  attempts, error)
        SELECT v.id, v.status, v.review_state, NEW.state, NEW.progress, NEW.attempts, NEW.error
          FROM videos v WHERE v.id = vid;
    ELSE
        vid := NEW.id;
        INSERT INTO video_events (video_id, status, review_state, job_state, progress,
                                  attempts, error)
        SELECT vid, NEW.status, NEW.review_state, j.state, j.progress, j.attempts, j.error
          FROM jobs j WHERE j.video_id = vid;
    END IF;
    PERFORM pg_notify('influgen_video_events', vid::text);
    RETURN NULL;
END $$;
