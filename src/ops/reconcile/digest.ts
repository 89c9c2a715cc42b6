import type pg from 'pg';
import { pgTicksText as ticksExpr } from '../../sql/fragments.js';
import { quotePg } from '../../sql/ident.js';
import type { SourceTableSpec } from '../../poll/source/connector.js';

/**
 * Count and content checksum of a table, computed inside PostgreSQL (no blob leaves the database): SHA-256 over
 * the ordered list of `key:ModifiedOn ticks:sha256(content)`. Equal digests on both sides mean equal rows,
 * versions and contents.
 */

export interface Digest {
  readonly rows: number;
  readonly checksum: string;
}

const AGG = (key: string, ticks: string, content: string) =>
  `SELECT count(*)::int AS rows,
          coalesce(encode(sha256(convert_to(string_agg(${key} || ':' || ${ticks} || ':' || coalesce(encode(sha256(${content}), 'hex'), '-'), ',' ORDER BY ${key} COLLATE "C"), 'UTF8')), 'hex'), '') AS checksum`;

export async function sourceDigest(pool: pg.Pool, spec: SourceTableSpec): Promise<Digest> {
  const key = `b.${quotePg(spec.keyColumn)}::text`;
  const text = `${AGG(key, ticksExpr(`m.${quotePg(spec.modifiedOnColumn)}`), `b.${quotePg(spec.columns.content)}`)}
     FROM ${quotePg(spec.blob.schema)}.${quotePg(spec.blob.table)} b
     JOIN ${quotePg(spec.metadata.schema)}.${quotePg(spec.metadata.table)} m ON m.${quotePg(spec.metadata.joinColumn)} = b.${quotePg(spec.keyColumn)}`;
  const { rows } = await pool.query<{ rows: number; checksum: string }>(text);
  return rows[0]!;
}

export async function targetDigest(pool: pg.Pool, schema: string, table: string, tenant: string): Promise<Digest> {
  const text = `${AGG('key', 'modified_on_ticks::text', 'content')} FROM ${quotePg(schema)}.${quotePg(table)} WHERE tenant = $1`;
  const { rows } = await pool.query<{ rows: number; checksum: string }>(text, [tenant]);
  return rows[0]!;
}
