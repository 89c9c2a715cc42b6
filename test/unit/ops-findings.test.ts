/**
 * What the poll summary, `status`, the progress bar and `resume` say (issue 10, items 6, 8 and 10): pure wording and
 * arithmetic, tested without I/O. The integration test (test/integration/cli-findings.test.ts) runs them for real.
 */
import { describe, expect, it } from 'vitest';
import { duration, findingsText, heldBackText } from '../../src/cli/findings.js';
import { heldTables, renderSourceTransactions } from '../../src/cli/open-transactions.js';
import { progressTotal, timeLeft } from '../../src/cli/progress.js';
import { countdownLine, heldLeases, waitForLeases } from '../../src/cli/lease-wait.js';
import type { TableStatusRecord } from '../../src/control/sql.js';
import { ticksFromIso } from '../../src/time/ticks.js';

describe('findings (item 6)', () => {
  it('marks each count that needs a look', () => {
    expect(findingsText({ lateArrivals: 0, rowsRefused: 0, nullModifiedOn: 0 })).toBe('late arrivals 0, refused 0, NULL ModifiedOn 0');
    expect(findingsText({ lateArrivals: 3, rowsRefused: 1, nullModifiedOn: null })).toBe('late arrivals 3!, refused 1!, NULL ModifiedOn not counted');
  });

  it('words durations and a held-back window with the transaction age', () => {
    expect(duration(4.4)).toBe('4s');
    expect(duration(75)).toBe('1m 15s');
    expect(duration(3725)).toBe('1h 02m');
    expect(heldBackText({ transactionAgeSeconds: 3960, heldBackSeconds: 60 })).toMatch(/^window end held back 1m 00s by an open transaction 1h 06m old/);
  });

  it('a transaction holds back the tables whose safety buffer it outlived', () => {
    const tables = [{ name: 'A', safetyBufferMinutes: 240 }, { name: 'B', safetyBufferMinutes: 0 }];
    expect(heldTables(tables, 30)).toEqual(['B']);
    expect(heldTables(tables, 240 * 60 + 1)).toEqual(['A', 'B']);
    const [line] = renderSourceTransactions([{ database: 'src', visible: true, oldestOpenTransaction: { start: ticksFromIso('2026-01-01T00:00:00Z'), ageSeconds: 90 }, holdsBack: ['B'] }]);
    expect(line).toBe('  src: oldest open transaction began 2026-01-01T00:00:00.0000000Z (1m 30s ago) HOLDS BACK the windows of B: their high-watermarks cannot pass its start until it ends (an idle-in-transaction session?)');
  });
});

describe('progress total (item 8)', () => {
  it('uses the counted rows of the window as the total', () => {
    expect(progressTotal(1000, 250)).toEqual({ total: 1000, text: '1000', known: true });
  });

  it('grows when more rows than counted were read (missing parents), never below what was done', () => {
    expect(progressTotal(1000, 1040)).toEqual({ total: 1040, text: '1040', known: true });
  });

  it('says the total is unknown rather than showing N/N', () => {
    expect(progressTotal(undefined, 250)).toEqual({ total: 250, text: '?', known: false });
    expect(timeLeft({ total: 250, known: false }, 250, 100)).toBe('total not counted');
  });

  it('computes the time left from the counted total and the rate', () => {
    expect(timeLeft({ total: 1000, known: true }, 250, 50)).toBe('ETA 15s');
    expect(timeLeft({ total: 10_000, known: true }, 250, 50)).toBe('ETA 3m 15s');
    expect(timeLeft({ total: 1000, known: true }, 0, 0)).toBe('ETA …');
  });
});

function lease(table: string, owner: string | null, secondsLeft: number): TableStatusRecord {
  return {
    table, scope: '*', tenant: '', highWater: null, lastAdvancedAt: null, advancedByRunId: null, leaseOwner: owner, leaseExpiresAt: owner ? new Date() : null,
    leaseActive: owner !== null && secondsLeft > 0, leaseSecondsLeft: owner ? secondsLeft : null, lastRunId: null, lastRunStatus: null,
    lastRunTableStatus: null, lastRunStartedAt: null, lastRunError: null, lastRunFindings: null,
  };
}

describe('resume waits for a dead poller\'s lease (item 10)', () => {
  const tables = [{ table: 'A', scope: '*' }, { table: 'B', scope: '*' }];

  it('lists the live leases of the run\'s tables, longest first, with a countdown line', () => {
    const held = heldLeases([lease('A', 'h:1', 5), lease('B', 'h:1', 20), lease('C', 'h:1', 50), lease('D', null, 0)], tables);
    expect(held.map((h) => h.table)).toEqual(['B', 'A']);
    expect(countdownLine(held)).toBe('waiting for the lease of B [*] and 1 more (held by h:1, a poller that may have died) to expire: 20 s left');
  });

  it('with --no-wait fails at once, naming the holder', async () => {
    await expect(waitForLeases(tables, { status: async () => [lease('A', 'h:1', 5)], say: () => undefined }, true)).rejects.toThrow(/A \[\*\] by h:1 for 5 s more/);
  });

  it('waits while the lease runs down, then returns', async () => {
    const left = [2, 1, 0];
    const said: string[] = [];
    await waitForLeases(tables, { status: async () => [lease('A', 'h:1', left.shift() ?? 0)], say: (l) => said.push(l), tickMs: 1 }, false);
    expect(said.at(-1)).toBe('the leases expired; resuming');
    expect(said.filter((l) => l.startsWith('waiting'))).toHaveLength(2);
  });

  it('stops waiting when the holder renews its lease: that poller is alive', async () => {
    const left = [3, 30];
    await expect(waitForLeases(tables, { status: async () => [lease('A', 'h:1', left.shift() ?? 30)], say: () => undefined, tickMs: 1 }, false)).rejects.toThrow(/another poller is alive/);
  });
});
