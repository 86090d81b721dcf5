-- Persistent roots (issue 12 point 5, docs/storage.md "Persistent roots"):
-- a volume's origin image (a persistent root, or a clone of one: what makes
-- it bootable with --root-volume; an image is not deleted while a volume has
-- it as origin) and the instance that boots from it. A root volume is not in
-- its instance's data volumes (instance_id stays NULL).
ALTER TABLE volumes ADD COLUMN image_id TEXT REFERENCES images(id);
-- root_of is cleared in the instance's delete transaction; no foreign key,
-- so that a host removed with --force (its instances, then its volumes,
-- deleted in one transaction) is not refused by its own root volumes.
ALTER TABLE volumes ADD COLUMN root_of TEXT;
CREATE UNIQUE INDEX volumes_root_of ON volumes(root_of) WHERE root_of IS NOT NULL;
CREATE INDEX volumes_image ON volumes(image_id) WHERE image_id IS NOT NULL;
