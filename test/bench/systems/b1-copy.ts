import type pg from 'pg';
import type { CopyValue } from '../../../consumers/postgres/copy-binary.js';
import { copyBinary } from '../env/pgdb.js';
import { TARGET_COLUMNS } from './target-table.js';

/**
 * B1, the target's physical limit: the same rows, already in target form, streamed with one binary COPY (~1 MiB
 * chunks) over one connection into a table of highwater's target shape, in one transaction. Timed from BEGIN to
 * COMMIT; preparing the values (hashing) is done before the clock starts.
 */
export async function copyIntoTarget(pool: pg.Pool, table: string, values: readonly (readonly CopyValue[])[]): Promise<number> {
  const client = await pool.connect();
  try {
    const started = performance.now();
    await client.query('BEGIN');
    await copyBinary(client, table, TARGET_COLUMNS, values);
    await client.query('COMMIT');
    return performance.now() - started;
  } finally {
    client.release();
  }
}
