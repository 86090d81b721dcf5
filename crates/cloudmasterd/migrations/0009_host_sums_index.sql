-- A host's promised memory and instance count (`GET /v1/hosts`, the
-- scheduler's capacities) are sums over its instances: with this covering
-- index they are read from the index alone, not from every instance row.
-- It starts with host_id, so it serves every lookup instances_host served.
CREATE INDEX instances_host_sums ON instances(host_id, deleted, memory_mib);
DROP INDEX instances_host;
