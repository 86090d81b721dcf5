-- An instance is looked up by id or by name (`cm instance show NAME`), the
-- deleted ones included: the partial index instances_live_name covers only
-- the live ones, so the lookup scanned the whole table (104 req/s with 20,000
-- instances in the store). With this index SQLite's OR optimisation searches
-- both the primary key and the name.
CREATE INDEX instances_name ON instances(name);
