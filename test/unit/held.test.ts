import { describe, expect, it } from 'vitest';
import { passedBarrier, stepWait } from '../../src/apply/held.js';
import { holdMissingParents, promoteHeld, dropResolvedHeld, insertFromStage, targetTable } from '../../consumers/postgres/dialect.js';

const policy = { maxAttempts: 4, backfillAfterAttempts: 2, initialDelayMs: 1000, maxDelayMs: 3000 };
const noJitter = () => 0.5;

describe('stepWait (the attempts of one missing parent)', () => {
  it('starts a wait without acting, then asks for a back-fill at backfillAfterAttempts and dead-letters at maxAttempts', () => {
    let { wait, action } = stepWait(undefined, 0, policy, noJitter);
    expect(action).toBe('none');
    expect(wait).toEqual({ attempt: 0, dueAt: 1000, exhausted: false });
    expect(stepWait(wait, 999, policy, noJitter)).toEqual({ wait, action: 'none' });
    const actions: string[] = [];
    let now = 0;
    for (let i = 0; i < 4; i++) {
      now = wait.dueAt;
      ({ wait, action } = stepWait(wait, now, policy, noJitter));
      actions.push(action);
    }
    expect(actions).toEqual(['none', 'backfill', 'none', 'dead-letter']);
    expect(wait.exhausted).toBe(true);
    expect(stepWait(wait, now + 1e9, policy, noJitter).action).toBe('none');
  });

  it('doubles the delay between attempts up to maxDelayMs', () => {
    let { wait } = stepWait(undefined, 0, policy, noJitter);
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      const before = wait.dueAt;
      ({ wait } = stepWait(wait, before, policy, noJitter));
      delays.push(wait.dueAt - before);
    }
    expect(delays).toEqual([2000, 3000, 3000]);
  });
});

describe('passedBarrier (acting only once the consumer caught up)', () => {
  const lag = (partition: number, next: bigint) => ({ topic: 't', partition, next, high: next, lag: 0n });
  it('passes once every partition applied up to the ends seen at the previous step', () => {
    const barrier = new Map([['t\u00000', 10n], ['t\u00001', 5n]]);
    expect(passedBarrier(barrier, [lag(0, 10n), lag(1, 5n)])).toBe(true);
    expect(passedBarrier(barrier, [lag(0, 9n), lag(1, 50n)])).toBe(false);
    expect(passedBarrier(barrier, [lag(0, 10n), lag(1, 5n), lag(2, 0n)])).toBe(true);
  });
});

describe('held children (PostgreSQL statements)', () => {
  const t = targetTable('tgt', 'Referral.Attachment');
  it('holds the newest staged version per key and replaces a held one only with a newer one', () => {
    const { text, values } = holdMissingParents(t);
    expect(text).toContain(`INSERT INTO "tgt"."hw_held" AS h`);
    expect(text).toContain(`WHERE s.status = 'missing-parent'`);
    expect(text).toMatch(/ON CONFLICT \(table_name, tenant, key\) DO UPDATE SET .*\sWHERE \(coalesce\(h\.modified_on_ticks/s);
    expect(values).toEqual(['Referral.Attachment']);
  });

  it('promotes recursively with the guarded upsert, never past a tombstone, and takes promoted rows out of holding', () => {
    for (const scope of ['batch', 'all'] as const) {
      const { text } = promoteHeld(t, scope);
      expect(text).toContain('WITH RECURSIVE ready');
      expect(text).toContain('DELETE FROM "tgt"."hw_held" h');
      expect(text).toMatch(/ON CONFLICT \(tenant, key\) DO UPDATE SET .*\n  WHERE \(coalesce\(t\.modified_on_ticks.* < \(coalesce\(excluded\.modified_on_ticks/s);
      expect(text.match(/hw_tombstones/g)?.length).toBe(2);
      expect(text.includes('pg_temp.hw_stage')).toBe(scope === 'batch');
    }
  });

  it('drops held rows the target holds at their version or newer, or that a delete covers', () => {
    const { text, values } = dropResolvedHeld(t, [{ tenant: 'a', key: 'k' }]);
    expect(text).toContain('>= (coalesce(h.modified_on_ticks');
    expect(text).toContain('hw_tombstones');
    expect(values).toEqual(['Referral.Attachment', ['a'], ['k']]);
  });

  it('inserts without conflict handling on the fast path, still refusing tombstoned rows', () => {
    const { text } = insertFromStage(t);
    expect(text).not.toContain('ON CONFLICT');
    expect(text).toContain('NOT EXISTS (SELECT 1 FROM "tgt"."hw_tombstones" d');
  });
});
