/**
 * Regression (found by the fault matrix, R5): when the apply loop met an error it cannot retry, kafkajs stopped the
 * consumer for good while `highwater consume` lived on, consuming nothing: lag grew and no one was told. The
 * running consumers now report it (`failed`), and `consume` exits 1 so a supervisor restarts it.
 */
import { describe, expect, it } from 'vitest';
import { pipeline } from '../support/pipeline.js';

describe('a consumer stopped for good', () => {
  it('is reported when the apply fails with an error that cannot be retried', async () => {
    const p = await pipeline('consumer failure');
    await p.insert([{ path: '/1/' }]);
    await p.poll();
    const running = await p.consume();
    await p.drain();
    // The target table gone: every apply fails with 42P01 (undefined table), a query error, never retried.
    await p.tgt.query(`DROP TABLE ${p.targetTable}`);
    await p.insert([{ path: '/2/' }]);
    await p.poll();
    const failure = await Promise.race([running.failed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 90_000))]);
    expect(failure?.message).toMatch(/does not exist/);
  });
});
