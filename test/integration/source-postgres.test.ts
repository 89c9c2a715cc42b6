/**
 * The source contract (test/contract/source.ts) on PostgreSQL: every test owns a database, dropped only when it
 * passed, holding the demo's source tables.
 */
import { randomUUID } from 'node:crypto';
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
