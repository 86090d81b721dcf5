-- Retention (issue 9): events are removed by age through this index; the
-- highest removed seq is kept in settings ('events_pruned_through').
CREATE INDEX IF NOT EXISTS events_time ON events(time);
