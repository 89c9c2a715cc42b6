import { randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';

/**
 * Sample data for the demo: a FileTable-like blob table and its metadata table, as the users have them, in a
 * PostgreSQL source. Folders form trees (roots, sub-folders, files), contents range from a few hundred bytes to a
 * few MiB (the largest travel as chunks), and a block of rows shares one ModifiedOn to exercise the keyset.
 */

export const DEMO_SCHEMA = 'demo';
export const BLOB_TABLE = 'ReferralAttachment';
export const META_TABLE = 'cw_referralattachmentBase';
export const BU_TABLE = 'LA_BU';

export const SOURCE_DDL = `
CREATE SCHEMA IF NOT EXISTS demo;
CREATE TABLE demo."LA_BU" ("BusinessUnitId" uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE demo."ReferralAttachment" (
  stream_id uuid PRIMARY KEY,
  file_stream bytea,
  name text NOT NULL,
  path_locator text NOT NULL UNIQUE,
  parent_path_locator text,
  is_directory boolean NOT NULL DEFAULT false,
  creation_time timestamptz NOT NULL DEFAULT clock_timestamp(),
  last_write_time timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE demo."ReferralAttachment" ALTER COLUMN file_stream SET STORAGE EXTERNAL;
CREATE TABLE demo."cw_referralattachmentBase" (
  cw_referralattachmentid uuid PRIMARY KEY,
  "ModifiedOn" timestamptz NOT NULL,
  "OwningBusinessUnit" uuid NOT NULL
);
CREATE INDEX ON demo."cw_referralattachmentBase" ("ModifiedOn", cw_referralattachmentid);
CREATE INDEX ON demo."ReferralAttachment" (parent_path_locator);
`;

interface SampleRow {
  id: string;
  name: string;
  path: string;
  parent: string | null;
  isDirectory: boolean;
  content: Buffer | null;
  modifiedOnSql: string;
  bu: string;
}

export interface SampleShape {
  readonly roots: number;
  readonly foldersPerRoot: number;
  readonly files: number;
  readonly largeFiles: number;
}

export const DEFAULT_SHAPE: SampleShape = { roots: 30, foldersPerRoot: 5, files: 2800, largeFiles: 6 };

function contentSize(i: number, largeEvery: number): number {
  if (largeEvery > 0 && i % largeEvery === largeEvery - 1) return 1_500_000 + ((i * 7919) % 1_500_000);
  if (i % 10 === 0) return 16_384 + ((i * 104729) % 180_000);
  return 200 + ((i * 7919) % 3_800);
}

export function buildSample(shape: SampleShape, bus: readonly string[]): SampleRow[] {
  const rows: SampleRow[] = [];
  const folders: string[] = [];
  const at = (minutesAgo: number) => `clock_timestamp() - interval '${minutesAgo} minutes'`;
  for (let r = 1; r <= shape.roots; r++) {
    const path = `/${r}/`;
    rows.push({ id: randomUUID(), name: `folder-${r}`, path, parent: null, isDirectory: true, content: null, modifiedOnSql: at(4000 - r), bu: bus[r % bus.length]! });
    for (let f = 1; f <= shape.foldersPerRoot; f++) {
      const sub = `${path}${f}/`;
      folders.push(sub);
      rows.push({ id: randomUUID(), name: `folder-${r}-${f}`, path: sub, parent: path, isDirectory: true, content: null, modifiedOnSql: at(3000 - r * 10 - f), bu: bus[r % bus.length]! });
    }
  }
  const largeEvery = shape.largeFiles > 0 ? Math.floor(shape.files / shape.largeFiles) : 0;
  for (let i = 0; i < shape.files; i++) {
    const parent = folders[i % folders.length]!;
    // A block of 300 files shares one ModifiedOn: more than a batch, so equal timestamps span page boundaries.
    const modifiedOnSql = i >= 1000 && i < 1300 ? `timestamptz '2026-01-01 12:00:00.123456+00'` : at(2000 - (i % 1900));
    rows.push({ id: randomUUID(), name: `file-${i}.bin`, path: `${parent}${i + 1}/`, parent, isDirectory: false, content: randomBytes(contentSize(i, largeEvery)), modifiedOnSql, bu: bus[i % bus.length]! });
  }
  return rows;
}

/** Inserts rows in chunks of multi-row INSERTs; values are parameters, ModifiedOn expressions are our own SQL. */
export async function insertRows(pool: pg.Pool, rows: readonly SampleRow[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 200) {
    const chunk = rows.slice(i, i + 200);
    const blobValues: unknown[] = [];
    const blobTuples = chunk.map((r, j) => {
      blobValues.push(r.id, r.content, r.name, r.path, r.parent, r.isDirectory);
      const b = j * 6;
      return `($${b + 1}::uuid, $${b + 2}::bytea, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6})`;
    });
    const metaValues: unknown[] = [];
    const metaTuples = chunk.map((r, j) => {
      metaValues.push(r.id, r.bu);
      return `($${j * 2 + 1}::uuid, ${r.modifiedOnSql}, $${j * 2 + 2}::uuid)`;
    });
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(`INSERT INTO demo."ReferralAttachment" (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory) VALUES ${blobTuples.join(',')}`, blobValues);
      await client.query(`INSERT INTO demo."cw_referralattachmentBase" (cw_referralattachmentid, "ModifiedOn", "OwningBusinessUnit") VALUES ${metaTuples.join(',')}`, metaValues);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    } finally {
      client.release();
    }
  }
}

export async function createBusinessUnits(pool: pg.Pool, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, () => randomUUID());
  for (const [i, id] of ids.entries()) await pool.query(`INSERT INTO demo."LA_BU" ("BusinessUnitId", name) VALUES ($1, $2)`, [id, `BU ${i + 1}`]);
  return ids;
}

/** A delta: new content for some files, a new folder with files, and some deletions — all stamped now. */
export async function applyDelta(pool: pg.Pool, counts: { updates: number; inserts: number; deletes: number }, bus: readonly string[]): Promise<void> {
  await pool.query(`WITH picked AS (SELECT stream_id FROM demo."ReferralAttachment" WHERE NOT is_directory ORDER BY stream_id LIMIT $1)
     UPDATE demo."ReferralAttachment" b SET file_stream = convert_to(clock_timestamp()::text, 'UTF8') || b.file_stream, last_write_time = clock_timestamp()
     FROM picked WHERE b.stream_id = picked.stream_id`, [counts.updates]);
  await pool.query(`UPDATE demo."cw_referralattachmentBase" m SET "ModifiedOn" = clock_timestamp()
     WHERE cw_referralattachmentid IN (SELECT stream_id FROM demo."ReferralAttachment" WHERE NOT is_directory ORDER BY stream_id LIMIT $1)`, [counts.updates]);
  const folder = `/999/`;
  const rows: SampleRow[] = [{ id: randomUUID(), name: 'delta-folder', path: folder, parent: null, isDirectory: true, content: null, modifiedOnSql: 'clock_timestamp()', bu: bus[0]! }];
  for (let i = 0; i < counts.inserts; i++) rows.push({ id: randomUUID(), name: `delta-${i}.bin`, path: `${folder}${i + 1}/`, parent: folder, isDirectory: false, content: randomBytes(300 + i), modifiedOnSql: 'clock_timestamp()', bu: bus[i % bus.length]! });
  await insertRows(pool, rows);
  await pool.query(`WITH gone AS (SELECT stream_id FROM demo."ReferralAttachment" WHERE NOT is_directory AND path_locator NOT LIKE '/999/%' ORDER BY stream_id DESC LIMIT $1),
       m AS (DELETE FROM demo."cw_referralattachmentBase" WHERE cw_referralattachmentid IN (SELECT stream_id FROM gone))
     DELETE FROM demo."ReferralAttachment" WHERE stream_id IN (SELECT stream_id FROM gone)`, [counts.deletes]);
}
