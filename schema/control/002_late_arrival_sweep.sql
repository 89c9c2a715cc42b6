-- The late-arrival sweep: rows committed later than the safety buffer allows are never inside a window; a sweep over
-- source keys finds versions newer than the registry's, republishes them and records them as a step of their own.
ALTER TABLE {{schema}}.run_batches DROP CONSTRAINT run_batches_step_check;
ALTER TABLE {{schema}}.run_batches ADD CONSTRAINT run_batches_step_check
  CHECK (step IN ('roots', 'missing-parents', 'children', 'deletes', 'late-arrivals', 'backfill'));

-- One cursor per table and sweep ('deletes' walks registered keys, 'late-arrivals' walks source keys).
ALTER TABLE {{schema}}.sweep_cursors ADD COLUMN sweep text NOT NULL DEFAULT 'deletes';
ALTER TABLE {{schema}}.sweep_cursors DROP CONSTRAINT sweep_cursors_pkey;
ALTER TABLE {{schema}}.sweep_cursors ADD PRIMARY KEY (table_name, sweep);
