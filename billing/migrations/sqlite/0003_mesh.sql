-- Mesh state reported by each node on announce: where it gossips, how it is doing, and which
-- peers it currently sees dead. Billing is not a mesh member; this is its window on the mesh.
ALTER TABLE nodes ADD COLUMN gossip_addr TEXT;
ALTER TABLE nodes ADD COLUMN health TEXT;
ALTER TABLE nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN sessions BIGINT NOT NULL DEFAULT 0;
-- Space-separated ids of peers this node's failure detector holds dead.
ALTER TABLE nodes ADD COLUMN dead_peers TEXT NOT NULL DEFAULT '';
