import { describe, expect, it } from 'vitest';
import { HighwaterError } from '../../src/errors.js';
import { isRebuildOf, type Topics } from '../../src/ops/rebuild.js';
import type { TargetWriter } from '../../src/apply/sink/writer.js';

// Only the decision is under test here (which answer of the stored-offsets read means what); reading the offsets
// from a real target is covered by test/integration/rebuild.test.ts ("--into an earlier rebuild continues it").
const topics: Topics = { tables: ['files'], table: ['hw.files'], retry: ['hw.files.retry'] };
const answering = (storedOffsets: TargetWriter['storedOffsets']) => ({ storedOffsets }) as unknown as TargetWriter;

describe('isRebuildOf (may --into continue an existing schema?)', () => {
  it('is a rebuild when the schema holds offsets of the rebuild group', async () => {
    const writer = answering(async () => [{ topic: 'hw.files', partition: 0, nextOffset: 7n }]);
    await expect(isRebuildOf(writer, 'g', topics)).resolves.toBe(true);
  });

  it('is not one when the schema holds no offsets of that group', async () => {
    await expect(isRebuildOf(answering(async () => []), 'g', topics)).resolves.toBe(false);
  });

  it('is not one when the schema has no bookkeeping tables (the read fails as a query error)', async () => {
    const writer = answering(async () => {
      throw new HighwaterError('DB_QUERY', 'read stored offsets: relation "x.hw_offsets" does not exist');
    });
    await expect(isRebuildOf(writer, 'g', topics)).resolves.toBe(false);
  });

  it('lets an outage surface as itself, not as "not a rebuild" (which would tell the operator to drop the schema)', async () => {
    const writer = answering(async () => {
      throw new HighwaterError('DB_UNAVAILABLE', 'read stored offsets: Connection terminated unexpectedly');
    });
    await expect(isRebuildOf(writer, 'g', topics)).rejects.toMatchObject({ code: 'DB_UNAVAILABLE' });
  });
});
