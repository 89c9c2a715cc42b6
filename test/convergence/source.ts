/**
 * The convergence test's PostgreSQL source: a FileTable-like blob table, a metadata table with a nullable
 * ModifiedOn (as in the users' CRM tables) and a BU map, and the code that applies a history's operations to it.
 * ModifiedOn always comes from the source database's clock (`now()`, the transaction's start, so rows inserted in
 * one transaction share one ModifiedOn), never from this process.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { ReplicatedTable } from './invariants.js';
import { contentBytes } from './prng.js';
import type { Bu, Content, NewRow, Op, Stamp } from './history.js';
import { SOURCE_DDL } from '../support/source-ddl.js';

export { SOURCE_DDL };

export const BU_IDS: Readonly<Record<Bu, string>> = {
  A: '00000000-0000-4000-8000-00000000000a',
  B: '00000000-0000-4000-8000-00000000000b',
  C: '00000000-0000-4000-8000-00000000000c',
  D: '00000000-0000-4000-8000-00000000000d',
};

/** The replicated set of this source, as the invariants read it. */
export function replicatedTable(excludedKeys: readonly string[], target: { schema: string; table: string }): ReplicatedTable {
  return {
    source: {
      blob: { schema: 'src', table: 'blobs' },
      metadata: { schema: 'src', table: 'meta', joinColumn: 'id' },
      businessUnit: { column: 'bu', mapTable: { schema: 'src', table: 'bu_map', idColumn: 'id' } },
      excludedKeys,
    },
    target,
  };
}

export async function createSource(pool: pg.Pool): Promise<void> {
  await pool.query(SOURCE_DDL);
  for (const bu of ['A', 'B', 'C'] as const) await pool.query('INSERT INTO src.bu_map (id) VALUES ($1)', [BU_IDS[bu]]);
}

/** What the processes under test must do when the history says so (kill, restart). */
export interface Crasher {
  killLater(who: 'poller' | 'consumer', afterMs: number, restartAfterMs: number): void;
}

interface MetaSnapshot { modifiedOn: string | null; bu: string | null }
interface BlobSnapshot { content: Buffer | null; name: string; path: string; parent: string | null; directory: boolean }

/** Applies operations in order; keeps what deleted rows looked like, so undeletes restore them exactly. */
export class SourceWriter {
  private readonly metas = new Map<string, MetaSnapshot>();
  private readonly blobs = new Map<string, BlobSnapshot>();
  private readonly long = new Map<number, { client: pg.Client; openedAt: number }>();

  constructor(private readonly pool: pg.Pool, private readonly url: string, private readonly bufferMs: number, private readonly crasher: Crasher) {}

  async apply(op: Op): Promise<void> {
    switch (op.kind) {
      case 'insert': return this.tx((c) => this.insertRows(c, op.rows, op.stamp));
      case 'update': return this.update(op.keys, op.content, op.stamp);
      case 'same-microsecond': return this.sameMicrosecond(op.key, op.first, op.second, op.apartMicros, op.gapMs);
      case 'delete-row': return this.deleteRow(op.key);
      case 'delete-meta': return this.deleteMeta(op.key);
      case 'restore-meta': return this.restoreMeta(op.key, op.original);
      case 'undelete': return this.undelete(op.key);
      case 'reparent': return this.tx(async (c) => {
        await c.query('UPDATE src.blobs SET path_locator = $2, parent_path_locator = $3 WHERE stream_id = $1', [op.key, op.path, op.parent]);
        await this.stampRows(c, [op.key], op.stamp);
      });
      case 'set-bu': return this.tx(async (c) => {
        await c.query('UPDATE src.meta SET bu = $2 WHERE id = $1', [op.key, BU_IDS[op.bu]]);
        await this.stampRows(c, [op.key], op.stamp);
      });
      case 'unmap-bu': return void (await this.pool.query('DELETE FROM src.bu_map WHERE id = $1', [BU_IDS[op.bu]]));
      case 'map-bu': return void (await this.pool.query('INSERT INTO src.bu_map (id) VALUES ($1) ON CONFLICT DO NOTHING', [BU_IDS[op.bu]]));
      case 'long-open': return this.openLong(op.id);
      case 'long-commit': return this.commitLong(op.id, op.rows);
      case 'kill': return this.crasher.killLater(op.who, op.afterMs, op.restartAfterMs);
      case 'pause': return void (await sleep(op.ms));
    }
  }

  /** Commits what a history left open (a long transaction whose commit the history never reached). */
  async close(): Promise<void> {
    for (const [, { client }] of this.long) await client.end().catch(() => undefined);
    this.long.clear();
  }

  private async insertRows(c: pg.ClientBase, rows: readonly NewRow[], stamp: Stamp): Promise<void> {
    for (const r of rows) {
      await c.query('INSERT INTO src.blobs (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory) VALUES ($1, $2, $3, $4, $5, $6)',
        [r.key, r.content ? contentBytes(r.content.size, r.content.fill) : null, `n${r.path.replaceAll('/', '_')}`, r.path, r.parent, r.content === null]);
      const { sql, values } = stampSql(stamp.kind === 'keep' ? { kind: 'now' } : stamp, 3);
      await c.query(`INSERT INTO src.meta (id, bu, "ModifiedOn") VALUES ($1, $2, ${sql})`, [r.key, BU_IDS[r.bu], ...values]);
    }
  }

  private update(keys: readonly string[], content: Content | null, stamp: Stamp): Promise<void> {
    return this.tx(async (c) => {
      await c.query('UPDATE src.blobs SET file_stream = $2 WHERE stream_id = ANY($1::uuid[])', [keys, content ? contentBytes(content.size, content.fill) : null]);
      await this.stampRows(c, keys, stamp);
    });
  }

  private async stampRows(c: pg.ClientBase, keys: readonly string[], stamp: Stamp): Promise<void> {
    if (stamp.kind === 'keep') return;
    const { sql, values } = stampSql(stamp, 2);
    await c.query(`UPDATE src.meta SET "ModifiedOn" = ${sql} WHERE id = ANY($1::uuid[])`, [keys, ...values]);
  }

  /** Two commits of one key whose ModifiedOn is the same microsecond (or the next one), with different contents. */
  private async sameMicrosecond(key: string, first: Content, second: Content, apartMicros: 0 | 1, gapMs: number): Promise<void> {
    const { rows } = await this.pool.query<{ t: string }>('SELECT clock_timestamp()::text AS t');
    const t = rows[0]!.t;
    const versions = [[first, 0], [second, apartMicros]] as const;
    for (const [i, [content, micros]] of versions.entries()) {
      if (i > 0) await sleep(gapMs);
      await this.tx(async (c) => {
        await c.query('UPDATE src.blobs SET file_stream = $2 WHERE stream_id = $1', [key, contentBytes(content.size, content.fill)]);
        await c.query(`UPDATE src.meta SET "ModifiedOn" = $2::timestamptz + $3 * interval '1 microsecond' WHERE id = $1`, [key, t, micros]);
      });
    }
  }

  private deleteRow(key: string): Promise<void> {
    return this.tx(async (c) => {
      await this.snapshotMeta(c, key);
      const { rows } = await c.query<{ content: Buffer | null; name: string; path: string; parent: string | null; directory: boolean }>(
        'SELECT file_stream AS content, name, path_locator AS path, parent_path_locator AS parent, is_directory AS directory FROM src.blobs WHERE stream_id = $1', [key]);
      if (rows[0]) this.blobs.set(key, rows[0]);
      await c.query('DELETE FROM src.meta WHERE id = $1', [key]);
      await c.query('DELETE FROM src.blobs WHERE stream_id = $1', [key]);
    });
  }

  private deleteMeta(key: string): Promise<void> {
    return this.tx(async (c) => {
      await this.snapshotMeta(c, key);
      await c.query('DELETE FROM src.meta WHERE id = $1', [key]);
    });
  }

  private async snapshotMeta(c: pg.ClientBase, key: string): Promise<void> {
    const { rows } = await c.query<MetaSnapshot>('SELECT "ModifiedOn"::text AS "modifiedOn", bu::text AS bu FROM src.meta WHERE id = $1', [key]);
    if (rows[0]) this.metas.set(key, rows[0]);
  }

  private restoreMeta(key: string, original: boolean): Promise<void> {
    const meta = this.metas.get(key);
    if (!meta) throw new Error(`no metadata snapshot of ${key} to restore`);
    return this.tx(async (c) => {
      if (original) await c.query('INSERT INTO src.meta (id, "ModifiedOn", bu) VALUES ($1, $2::timestamptz, $3)', [key, meta.modifiedOn, meta.bu]);
      else await c.query('INSERT INTO src.meta (id, "ModifiedOn", bu) VALUES ($1, now(), $2)', [key, meta.bu]);
    });
  }

  private undelete(key: string): Promise<void> {
    const meta = this.metas.get(key);
    const blob = this.blobs.get(key);
    if (!meta || !blob) throw new Error(`no snapshot of ${key} to undelete`);
    return this.tx(async (c) => {
      await c.query('INSERT INTO src.blobs (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory) VALUES ($1, $2, $3, $4, $5, $6)',
        [key, blob.content, blob.name, blob.path, blob.parent, blob.directory]);
      await c.query('INSERT INTO src.meta (id, "ModifiedOn", bu) VALUES ($1, $2::timestamptz, $3)', [key, meta.modifiedOn, meta.bu]);
    });
  }

  private async openLong(id: number): Promise<void> {
    const client = new pg.Client({ connectionString: this.url });
    client.on('error', () => undefined);
    await client.connect();
    await client.query('BEGIN');
    // Only a read so far: PostgreSQL assigns no xid until the first write (defect 8).
    await client.query('SELECT count(*) FROM src.meta');
    this.long.set(id, { client, openedAt: Date.now() });
  }

  /** Waits until the transaction has been open for longer than the safety buffer, then writes (now() = its start). */
  private async commitLong(id: number, rows: readonly NewRow[]): Promise<void> {
    const open = this.long.get(id);
    if (!open) throw new Error(`long transaction ${id} was never opened`);
    const wait = open.openedAt + this.bufferMs + 700 - Date.now();
    if (wait > 0) await sleep(wait);
    try {
      await this.insertRows(open.client, rows, { kind: 'now' });
      await open.client.query('COMMIT');
    } finally {
      this.long.delete(id);
      await open.client.end();
    }
  }

  private async tx(body: (c: pg.PoolClient) => Promise<void>): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      await body(c);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }
}

/** SQL for a stamp, with its parameters numbered from `first`. */
function stampSql(stamp: Exclude<Stamp, { kind: 'keep' }>, first: number): { sql: string; values: unknown[] } {
  switch (stamp.kind) {
    case 'now': return { sql: 'now()', values: [] };
    case 'null': return { sql: 'NULL', values: [] };
    case 'ago': return { sql: `now() - $${first}::int * interval '1 millisecond'`, values: [stamp.ms] };
  }
}
