/**
 * The source contract (test/contract/source.ts) on PostgreSQL: every test owns a database, dropped only when it
 * passed, holding the demo's source tables.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import * as q from '../../connectors/postgres/queries.js';
import { PostgresSource } from '../../connectors/postgres/source.js';
import { BLOB_TABLE, BU_TABLE, DEMO_SCHEMA, META_TABLE, SOURCE_DDL } from '../../src/dev/demo/sample.js';
import type { SourceTableSpec } from '../../src/poll/source/connector.js';
import { isoFromTicks } from '../../src/time/ticks.js';
import { sourceContract, type SourceUnderTest } from '../contract/source.js';
import { createTestDatabase, dropWhenPassed } from '../support/pg.js';

const spec: SourceTableSpec = {
  blob: { schema: DEMO_SCHEMA, table: BLOB_TABLE },
  metadata: { schema: DEMO_SCHEMA, table: META_TABLE, joinColumn: 'cw_referralattachmentid' },
  keyColumn: 'stream_id',
  modifiedOnColumn: 'ModifiedOn',
  columns: {
    name: 'name',
    content: 'file_stream',
    isDirectory: 'is_directory',
    pathLocator: 'path_locator',
    parentPathLocator: 'parent_path_locator',
    creationTime: 'creation_time',
    lastWriteTime: 'last_write_time',
  },
  businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: DEMO_SCHEMA, table: BU_TABLE, idColumn: 'BusinessUnitId' } },
  inlineContentMaxBytes: 64 * 1024,
  maxdop: null,
};

sourceContract({
  engine: 'PostgreSQL',
  skip: null,
  async fresh(label): Promise<SourceUnderTest> {
    const db = await createTestDatabase(`source pg ${label}`);
    dropWhenPassed(db);
    const sql = db.pool();
    await sql.query(SOURCE_DDL);
    const listedBu = randomUUID();
    await sql.query(`INSERT INTO demo."LA_BU" ("BusinessUnitId", name) VALUES ($1, 'listed')`, [listedBu]);
    return {
      source: new PostgresSource(sql, spec),
      listedBu,
      async seed(row) {
        const key = randomUUID();
        await sql.query(
          `INSERT INTO demo."ReferralAttachment" (stream_id, file_stream, name, path_locator, parent_path_locator) VALUES ($1, $2, $3, $3, $4)`,
          [key, Buffer.from(row.path), row.path, row.parent ?? null],
        );
        await sql.query(`INSERT INTO demo."cw_referralattachmentBase" VALUES ($1, $2::timestamptz, $3)`, [
          key,
          isoFromTicks(row.modifiedOn),
          row.bu ?? listedBu,
        ]);
        return key;
      },
    };
  },
});

/**
 * Lookups by key go through the blob table's primary key: with sequential scans priced out, a plan that still scans
 * the blob table means the key comparison cannot use the index (as `key::text = ANY(…)` could not). No timing.
 */
describe('PostgreSQL source lookups by key', () => {
  it('use the primary key of the blob table (by keys, membership, contents, hashes, slices)', async () => {
    const db = await createTestDatabase('source pg key lookups');
    dropWhenPassed(db);
    const sql = db.pool();
    await sql.query(SOURCE_DDL);
    await sql.query(`INSERT INTO demo."ReferralAttachment" (stream_id, file_stream, name, path_locator)
      SELECT gen_random_uuid(), '\\x00'::bytea, 'f' || i, '/' || i || '/' FROM generate_series(1, 2000) AS i`);
    await sql.query(
      `INSERT INTO demo."cw_referralattachmentBase" SELECT stream_id, now(), gen_random_uuid() FROM demo."ReferralAttachment"`,
    );
    await sql.query('ANALYZE');
    const keys = (await sql.query<{ k: string }>('SELECT stream_id::text AS k FROM demo."ReferralAttachment" LIMIT 3')).rows.map(
      (r) => r.k,
    );
    const statements = {
      byKeys: q.byKeysQuery(spec, keys),
      members: q.memberKeysQuery(spec, { keys, businessUnit: null, excludedKeys: [] }),
      contents: q.contentsQuery(spec, keys),
      hashes: q.contentHashesQuery(spec, keys),
      slice: q.contentSliceQuery(spec, keys[0]!, 0, 10),
    };
    const client = await sql.connect();
    try {
      await client.query('SET enable_seqscan = off');
      for (const [name, stmt] of Object.entries(statements)) {
        const { rows } = await client.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${stmt.text}`, stmt.values as unknown[]);
        const nodes = planNodes(rows[0]!['QUERY PLAN']);
        const onBlob = nodes.filter((n) => n['Relation Name'] === 'ReferralAttachment');
        // The blob table is read through an index condition on its key, never scanned whole.
        expect(
          onBlob.map((n) => n['Node Type']),
          name,
        ).not.toContain('Seq Scan');
        for (const n of onBlob.filter((n) => String(n['Node Type']).startsWith('Index'))) expect(n['Index Cond'], name).toBeDefined();
        const byKey = nodes.filter((n) => n['Index Name'] === 'ReferralAttachment_pkey' && /\bstream_id = /.test(String(n['Index Cond'])));
        expect(byKey.length, name).toBeGreaterThan(0);
      }
    } finally {
      client.release();
    }
  });
});

/** Every node of an EXPLAIN (FORMAT JSON) plan, flattened. */
function planNodes(plan: unknown): Record<string, unknown>[] {
  if (Array.isArray(plan)) return plan.flatMap(planNodes);
  if (typeof plan !== 'object' || plan === null) return [];
  const node = plan as Record<string, unknown>;
  return [...('Node Type' in node ? [node] : []), ...planNodes(node.Plan), ...planNodes(node.Plans)];
}
