/**
 * When tables highwater fills have grown enough since their statistics were last made that the planner's picture
 * of them is wrong. A first load, a rebuild or a first poll fills a target, its holding tables and the control
 * store's registry from empty within minutes, and autovacuum analyzes a table only after a minute's nap and 10 %
 * growth (or never, where it is off): until then every plan is made for a handful of rows or, for `= ANY(array)`
 * of hundreds of keys, for all of them, and lookups that should be index probes become scans of the table per
 * batch or page. The writers count the rows they wrote per table and analyze when this says so.
 */

/** Rows written before a table is first analyzed by the writer: below it, plans for "a handful of rows" are right. */
export const ANALYZE_MIN_GROWTH = 2000;
/** Growth, as a fraction of the rows at the last analyze, that makes the statistics stale again. */
export const ANALYZE_GROWTH_FRACTION = 0.5;

interface Growth {
  /** Rows written since the last analyze. */
  since: number;
  /** Rows written up to the last analyze (the table's size as far as this writer knows). */
  atLast: number;
}

export class StatisticsPolicy {
  readonly #tables = new Map<string, Growth>();

  /** Counts rows written to a table (its target table and holding tables); returns whether it is due an analyze. */
  wrote(table: string, rows: number): boolean {
    const growth = this.#tables.get(table) ?? { since: 0, atLast: 0 };
    growth.since += rows;
    this.#tables.set(table, growth);
    return growth.since >= Math.max(ANALYZE_MIN_GROWTH, ANALYZE_GROWTH_FRACTION * growth.atLast);
  }

  /** The table was analyzed: growth counts from here. */
  analyzed(table: string): void {
    const growth = this.#tables.get(table);
    if (growth === undefined) return;
    growth.atLast += growth.since;
    growth.since = 0;
  }

  /**
   * Counts rows written and runs `analyze` when the table is due. Best effort: statistics only steer plans, so a
   * failure (a lock wait cut short, a restart) is not the caller's failure; the table stays due and the next write
   * tries again.
   */
  async analyzeIfDue(table: string, rows: number, analyze: () => Promise<unknown>): Promise<void> {
    if (rows === 0 || !this.wrote(table, rows)) return;
    try {
      await analyze();
      this.analyzed(table);
    } catch {
      // Still due (see above).
    }
  }
}
