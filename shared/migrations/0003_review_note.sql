-- A reviewer's note on approve / reject.
ALTER TABLE videos ADD COLUMN IF NOT EXISTS review_note text;
ALTER TABLE videos ADD COLUMN IF NOT EXISTS reviewed_at timestamptz;
