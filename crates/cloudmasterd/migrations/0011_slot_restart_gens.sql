-- Issue 11, rung 1 of the ladder: the `restart_gen` the engine last gave
-- each service of a slot in its rendered cm-guest config (a new value
-- restarts that service in the guest). JSON {"httpd": 2}.
ALTER TABLE deployable_slots ADD COLUMN restart_gens TEXT NOT NULL DEFAULT '{}';
