/**
 * The source contract, written once and run against every source connector: what the poller relies on when it reads
 * a window. An engine's test file supplies a SourceHarness: a connector on a fresh source of its own and a way to
 * seed rows in that engine's SQL.
 */
import { describe, expect, it } from 'vitest';
import type { SourceRow, Ticks } from '../../src/contract.js';
import type { ScopeFilter, SourceConnector } from '../../src/poll/source/connector.js';
import { ticksFromIso, TICKS_PER_MINUTE } from '../../src/time/ticks.js';

export interface SeedRow {
  readonly path: string;
  readonly parent?: string | null;
  readonly modifiedOn: Ticks;
  /** A business unit id; default one listed in the BU table. */
  readonly bu?: string;
}

export interface SourceUnderTest {
  readonly source: SourceConnector;
  /** A business unit listed in the BU table (the one rows get by default). */
  readonly listedBu: string;
  /** Inserts a blob row and its metadata row; returns the key as the connector reports it. */
  seed(row: SeedRow): Promise<string>;
}

export interface SourceHarness {
  readonly engine: string;
  readonly skip: string | null;
  fresh(label: string): Promise<SourceUnderTest>;
}

/** Microseconds only: PostgreSQL holds no finer. */
const T0 = ticksFromIso('2024-03-01T10:00:00.123456Z');
const WINDOW = { start: T0 - TICKS_PER_MINUTE, end: T0 + TICKS_PER_MINUTE };
const ALL: ScopeFilter = { businessUnit: null, excludedKeys: [] };

async function allPages(source: SourceConnector, step: 'roots' | 'children', limit: number, filter = ALL): Promise<SourceRow[][]> {
  const pages: SourceRow[][] = [];
  let after: { modifiedOn: Ticks; key: string } | null = null;
  for (;;) {
    const rows = await source.readPage({ step, window: WINDOW, after, limit, ...filter });
    if (rows.length === 0) return pages;
    pages.push(rows);
    const last = rows[rows.length - 1]!;
    after = { modifiedOn: last.modifiedOn!, key: last.key };
  }
}

const keysOf = (pages: SourceRow[][]): string[] => pages.flat().map((r) => r.key);

export function sourceContract(harness: SourceHarness): void {
  if (harness.skip !== null) console.log(`[highwater] SKIPPED the source contract on ${harness.engine}: ${harness.skip}.`);

  describe.skipIf(harness.skip !== null)(`source contract: ${harness.engine}`, () => {
    it('pages through equal timestamps at page boundaries, neither skipping nor repeating', async () => {
      const { source, seed } = await harness.fresh('equal timestamps');
      const keys = await Promise.all(Array.from({ length: 7 }, (_, i) => seed({ path: `/${i + 1}/`, modifiedOn: T0 })));
      const pages = await allPages(source, 'roots', 3);
      expect(pages.map((p) => p.length)).toEqual([3, 3, 1]);
      expect(new Set(keysOf(pages)).size).toBe(7);
      expect([...keysOf(pages)].sort()).toEqual([...keys].sort());
      expect(pages.flat().every((r) => r.modifiedOn === T0)).toBe(true);
    });

    it('reads the window (start, end] exactly', async () => {
      const { source, seed } = await harness.fresh('window bounds');
      const [, inside, atEnd] = [
        await seed({ path: '/1/', modifiedOn: WINDOW.start }),
        await seed({ path: '/2/', modifiedOn: WINDOW.start + 10n }),
        await seed({ path: '/3/', modifiedOn: WINDOW.end }),
        await seed({ path: '/4/', modifiedOn: WINDOW.end + 10n }),
      ];
      expect(keysOf(await allPages(source, 'roots', 10)).sort()).toEqual([inside, atEnd].sort());
    });

    it('splits roots from children', async () => {
      const { source, seed } = await harness.fresh('roots and children');
      const root = await seed({ path: '/1/', modifiedOn: T0 });
      const child = await seed({ path: '/1/1/', parent: '/1/', modifiedOn: T0 });
      expect(keysOf(await allPages(source, 'roots', 10))).toEqual([root]);
      expect(keysOf(await allPages(source, 'children', 10))).toEqual([child]);
    });

    it('scopes to one business unit and to the BU table, and leaves out excluded keys', async () => {
      const { source, seed, listedBu } = await harness.fresh('scope');
      const unlisted = '00000000-0000-4000-8000-000000000099';
      const kept = await seed({ path: '/1/', modifiedOn: T0 });
      const excluded = await seed({ path: '/2/', modifiedOn: T0 });
      await seed({ path: '/3/', modifiedOn: T0, bu: unlisted });
      expect(keysOf(await allPages(source, 'roots', 10, { businessUnit: null, excludedKeys: [excluded] }))).toEqual([kept]);
      expect(keysOf(await allPages(source, 'roots', 10, { businessUnit: listedBu, excludedKeys: [excluded] }))).toEqual([kept]);
      expect(keysOf(await allPages(source, 'roots', 10, { businessUnit: unlisted, excludedKeys: [] }))).toEqual([]);
    });
  });
}
