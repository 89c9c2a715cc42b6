import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { runDemo } from '../../src/dev/demo/demo.js';
import { createLogger } from '../../src/logger.js';

// The demo is the main job end to end: sample data → poller → Kafka → consumer → target, then a delta.
describe('highwater demo', () => {
  it('replicates the sample data and a delta, and reconciles equal', async () => {
    const lines: string[] = [];
    const suffix = randomBytes(3).toString('hex');
    const code = await runDemo({
      env: {
        HIGHWATER_KAFKA_BROKERS: inject('kafkaBrokers').join(','),
        HIGHWATER_DEMO_PG_URL: inject('pgUrl'),
        HIGHWATER_DEMO_DB_PREFIX: `hw_t_demo_${suffix}`,
        HIGHWATER_DEMO_TOPIC_PREFIX: `hw-t-demo-${suffix}`,
      },
      logger: createLogger({ level: 'error' }),
      out: (line) => lines.push(line),
      timeoutMs: 120_000,
    });
    expect(lines.filter((l) => l.startsWith('reconcile'))).toEqual([
      expect.stringMatching(/^reconcile initial load: source 2980 rows (\w+) \| target 2980 rows \1 -> EQUAL$/),
      expect.stringMatching(/^reconcile delta: source 3011 rows (\w+) \| target 3011 rows \1 -> EQUAL$/),
    ]);
    // Issue 10, item 9: the demo ends with a verdict and the next command to try.
    expect(lines.at(-2)).toBe('verdict: all tables equal — ReferralAttachment: 3011 rows, the same content checksum in source and target');
    expect(lines.at(-1)).toMatch(/^next: .*highwater check/);
    expect(code).toBe(0);
    const admin = new pg.Client({ connectionString: inject('pgUrl') });
    await admin.connect();
    for (const side of ['source', 'target']) await admin.query(`DROP DATABASE IF EXISTS hw_t_demo_${suffix}_${side} WITH (FORCE)`);
    await admin.end();
  });
});
