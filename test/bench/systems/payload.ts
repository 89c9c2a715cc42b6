import { createHash } from 'node:crypto';
import type { BlobChange } from '../../../src/contract.js';
import { encodeSingleObject } from '../../../src/events/codec.js';
import { changeToAvro } from '../../../src/events/mapping.js';
import type { BenchRow } from '../rows.js';
import { BUSINESS_UNITS } from '../env/source.js';

/**
 * The Kafka payload of a row for the baselines that talk to Kafka themselves (B2, B3): highwater's own BlobChange
 * event, Avro single-object encoded, content inline whatever its size. So B2 moves the same bytes highwater does.
 */
export function changeOf(row: BenchRow, index: number, baseUs: number, table: string): BlobChange {
  const ticks = BigInt(baseUs + row.modifiedOffsetUs) * 10n;
  return {
    table, tenant: '', key: row.key, name: row.name, pathLocator: row.path, parentPathLocator: row.parent,
    isDirectory: row.isDirectory, size: row.content?.length ?? null, attributes: {}, modifiedOn: ticks, observed: ticks,
    businessUnit: BUSINESS_UNITS[index % BUSINESS_UNITS.length]!,
    content: row.content === null ? { kind: 'none' } : { kind: 'inline', bytes: row.content },
    contentSha256: row.content === null ? null : createHash('sha256').update(row.content).digest(),
    runId: 'bench', window: { start: 0n, end: ticks },
  };
}

export function encodeRow(row: BenchRow, index: number, baseUs: number, table: string): Buffer {
  return encodeSingleObject('BlobChange', changeToAvro(changeOf(row, index, baseUs, table)));
}
