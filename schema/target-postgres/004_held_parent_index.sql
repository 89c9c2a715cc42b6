-- The parent lookup's index led with (table_name, tenant), which is also the primary key's prefix. Without
-- statistics (a schema filled from empty: a first load or a rebuild, before autovacuum has analyzed it, or with
-- autovacuum off) the planner used it for promotion's delete by key, as a range over the tenant filtered by key:
-- every held row read once per promoted child, quadratic (a 100k-row tree rebuild spent minutes per batch there).
-- Led by the parent locator, the index can serve only lookups by parent; lookups by key go to the primary key.
DROP INDEX IF EXISTS {{schema}}.hw_held_parent_idx;
CREATE INDEX IF NOT EXISTS hw_held_by_parent_idx ON {{schema}}.hw_held (parent_path_locator, tenant, table_name);
-- The back-fill's question (selectHeldParents: the tops of the waiting chains) asks, per held child, whether its
-- parent is held itself: a lookup by path. Without this index it was a scan of hw_held per held child once the
-- planner had statistics (minutes at 33k held rows).
CREATE INDEX IF NOT EXISTS hw_held_by_path_idx ON {{schema}}.hw_held (path_locator, tenant, table_name);
