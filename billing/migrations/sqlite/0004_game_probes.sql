-- Route intelligence (issue 15), catalog side: a game may name its servers' query protocol
-- (`a2s`, `q3`, `echo`) and up to 8 representative server addresses (JSON array of
-- "ip:port") that nodes probe to measure the exit→game leg, with where they come from.
ALTER TABLE games ADD COLUMN query_kind TEXT;
ALTER TABLE games ADD COLUMN probes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE games ADD COLUMN probes_source TEXT;
