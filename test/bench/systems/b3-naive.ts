import type { Kafka } from 'kafkajs';
import type pg from 'pg';
import { decodeSingleObject } from '../../../src/events/codec.js';
import { changeFromAvro, type AvroBlobChange } from '../../../src/events/mapping.js';
import type { BlobChange } from '../../../src/contract.js';
import { qualified, type SourceTable } from '../env/source.js';
import type { BenchRow } from '../rows.js';
import { encodeRow } from './payload.js';

/**
 * B3, the floor: a naive replicator. It reads the source in pages, sends each row as its own message and awaits
 * the acknowledgement (acks=all) before the next; a consumer upserts each message with its own autocommit
 * statement (newer ModifiedOn wins). No batching, no staging, no pipelining.
 */

const PAGE = 1000;

/** Reads the source in keyset pages and awaits one send per row; resolves with the number of rows sent. */
export async function naiveProduce(source: pg.Pool, t: SourceTable, baseUs: number, kafka: Kafka, topic: string): Promise<number> {
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  let sent = 0;
  try {
    let after: { us: string; key: string } | null = null;
    for (;;) {
      const page = await readPage(source, t, after);
      for (const row of page) {
        await producer.send({ topic, acks: -1, messages: [{ key: row.key, value: encodeRow(toBenchRow(row, baseUs), sent, baseUs, t.blob) }] });
        sent++;
      }
      if (page.length < PAGE) return sent;
      const last = page[page.length - 1]!;
      after = { us: last.us, key: last.key };
    }
  } finally {
    await producer.disconnect();
  }
}

interface SourceRecord {
  key: string; name: string; path: string; parent: string | null; dir: boolean; content: Buffer | null; us: string;
}

async function readPage(source: pg.Pool, t: SourceTable, after: { us: string; key: string } | null): Promise<SourceRecord[]> {
  const { rows } = await source.query<SourceRecord>(
    `SELECT b.stream_id::text AS key, b.name, b.path_locator AS path, b.parent_path_locator AS parent, b.is_directory AS dir,
            b.file_stream AS content, (extract(epoch FROM m."ModifiedOn") * 1e6)::bigint::text AS us
       FROM ${qualified(t.schema, t.blob)} b JOIN ${qualified(t.schema, t.meta)} m ON m.id = b.stream_id
      WHERE ($1::bigint IS NULL OR ((extract(epoch FROM m."ModifiedOn") * 1e6)::bigint, b.stream_id::text) > ($1::bigint, $2::text))
      ORDER BY 7, 1 LIMIT ${PAGE}`, [after?.us ?? null, after?.key ?? null]);
  return rows;
}

function toBenchRow(r: SourceRecord, baseUs: number): BenchRow {
  return { key: r.key, name: r.name, path: r.path, parent: r.parent, isDirectory: r.dir, content: r.content, modifiedOffsetUs: Number(r.us) - baseUs };
}

/** Consumes the topic and upserts each message with one autocommit statement, until stopped. */
export async function naiveApply(kafka: Kafka, topic: string, groupId: string, target: pg.Pool, table: string): Promise<{ stop(): Promise<void> }> {
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      const change = changeFromAvro(decodeSingleObject(message.value!).record as AvroBlobChange);
      await upsert(target, table, change);
    },
  });
  return { stop: () => consumer.disconnect() };
}

async function upsert(target: pg.Pool, table: string, c: BlobChange): Promise<void> {
  const content = c.content.kind === 'inline' ? c.content.bytes : null;
  await target.query(
    `INSERT INTO ${table} AS t (tenant, key, name, path_locator, parent_path_locator, is_directory, size, content, content_sha256, modified_on_ticks, business_unit)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (tenant, key) DO UPDATE SET name = excluded.name, path_locator = excluded.path_locator,
       parent_path_locator = excluded.parent_path_locator, is_directory = excluded.is_directory, size = excluded.size,
       content = excluded.content, content_sha256 = excluded.content_sha256, modified_on_ticks = excluded.modified_on_ticks,
       business_unit = excluded.business_unit, applied_at = clock_timestamp()
     WHERE t.modified_on_ticks < excluded.modified_on_ticks`,
    [c.tenant, c.key, c.name, c.pathLocator, c.parentPathLocator, c.isDirectory, c.size, content, c.contentSha256, c.modifiedOn?.toString() ?? null, c.businessUnit]);
}
