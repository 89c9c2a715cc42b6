import type { Config, TableConfig } from '../config/schema.js';
import { coerceError } from '../errors.js';
import { scrubSecrets } from '../logger.js';
import type { SourceConnector } from '../poll/source/connector.js';
import { isoFromTicks, TICKS_PER_SECOND } from '../time/ticks.js';
import { duration } from './findings.js';

/**
 * `status` asks each source database, now, for its oldest open transaction: one left open (an idle-in-transaction
 * session, a stuck job) keeps every window on that database ending before it began, so no table's high-watermark
 * advances, and nothing else says why. The last run's clamp is history; this is the present.
 */

export interface SourceTransactions {
  readonly database: string;
  /** False when the login cannot see other sessions (then the safety buffer alone protects late commits). */
  readonly visible: boolean;
  readonly oldestOpenTransaction: { readonly start: bigint; readonly ageSeconds: number } | null;
  /** Tables whose next window this transaction holds back (its age exceeds their safety buffer). */
  readonly holdsBack: readonly string[];
  /** Set when the database could not be asked (status still reports the rest). */
  readonly error?: string;
  /** The configuration turned the check off (databases[].oldestOpenTransaction). */
  readonly off?: boolean;
}

/** One probe per source database that has enabled tables, through the connector of its first table. */
export async function probeSources(config: Config, sourceOf: (t: TableConfig) => Promise<SourceConnector>): Promise<SourceTransactions[]> {
  const byDatabase = new Map<string, TableConfig[]>();
  for (const t of config.tables.filter((x) => x.enabled)) byDatabase.set(t.source, [...(byDatabase.get(t.source) ?? []), t]);
  const probes = [...byDatabase].map(([database, tables]) => {
    const off = config.databases.find((d) => d.name === database)?.oldestOpenTransaction !== 'auto';
    return off ? Promise.resolve({ database, visible: false, oldestOpenTransaction: null, holdsBack: [], off }) : probe(database, tables, sourceOf);
  });
  return Promise.all(probes);
}

async function probe(database: string, tables: readonly TableConfig[], sourceOf: (t: TableConfig) => Promise<SourceConnector>): Promise<SourceTransactions> {
  try {
    const source = await sourceOf(tables[0]!);
    const [now, oldest] = await Promise.all([source.clock(), source.oldestOpenTransaction()]);
    if (!oldest.visible) return { database, visible: false, oldestOpenTransaction: null, holdsBack: [] };
    if (oldest.start === null) return { database, visible: true, oldestOpenTransaction: null, holdsBack: [] };
    const ageSeconds = Number((now - oldest.start) / TICKS_PER_SECOND);
    return { database, visible: true, oldestOpenTransaction: { start: oldest.start, ageSeconds }, holdsBack: heldTables(tables, ageSeconds) };
  } catch (err) {
    return { database, visible: false, oldestOpenTransaction: null, holdsBack: [], error: scrubSecrets(coerceError(err).message.split('\n')[0]!) };
  }
}

/** A transaction older than a table's safety buffer ends that table's next window before the buffer would. Pure. */
export function heldTables(tables: readonly Pick<TableConfig, 'name' | 'safetyBufferMinutes'>[], ageSeconds: number): string[] {
  return tables.filter((t) => ageSeconds > t.safetyBufferMinutes * 60).map((t) => t.name);
}

/** The lines `status` prints under "sources:". Pure. */
export function renderSourceTransactions(sources: readonly SourceTransactions[]): string[] {
  return sources.map((s) => {
    if (s.off) return `  ${s.database}: open transactions not checked (databases[].oldestOpenTransaction is off)`;
    if (s.error !== undefined) return `  ${s.database}: could not read its open transactions (${s.error})`;
    if (!s.visible) return `  ${s.database}: open transactions not visible to this login (grant pg_read_all_stats / VIEW SERVER STATE); the safety buffer alone protects late commits`;
    const tx = s.oldestOpenTransaction;
    if (tx === null) return `  ${s.database}: no open transaction`;
    const since = `oldest open transaction began ${isoFromTicks(tx.start)} (${duration(tx.ageSeconds)} ago)`;
    if (s.holdsBack.length === 0) return `  ${s.database}: ${since}; within every table's safety buffer`;
    return `  ${s.database}: ${since} HOLDS BACK the windows of ${s.holdsBack.join(', ')}: their high-watermarks cannot pass its start until it ends (an idle-in-transaction session?)`;
  });
}
