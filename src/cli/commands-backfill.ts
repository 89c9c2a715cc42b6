import { tenantOf } from '../config/load.js';
import { HighwaterError } from '../errors.js';
import { BackfillService } from '../poll/backfill.js';
import { Runtime } from '../wiring.js';
import { loadContext, report, type GlobalOptions } from './context.js';
import { EXIT } from './exit-codes.js';

/**
 * `highwater backfill --table T --keys k1 k2 …`: republishes chosen rows from the source, whatever their window —
 * the operator's version of the consumers' back-fill requests. It goes through the same service, so the rows are
 * registered and recorded as a `backfill` run.
 */
export async function backfillCommand(options: GlobalOptions & { table: string; keys: string[] }): Promise<number> {
  const { config, logger } = await loadContext(options);
  const table = config.tables.find((t) => t.name === options.table);
  if (!table) throw new HighwaterError('USAGE', `unknown table ${JSON.stringify(options.table)}`);
  const rt = new Runtime(config, logger);
  try {
    await rt.store().migrate();
    await rt.ensureTableTopics(table);
    const service = new BackfillService({
      config, store: rt.store(), publisher: await rt.publisher(), codec: rt.codec, logger: logger.child({ component: 'backfill' }),
      sourceFor: (t) => rt.source(t),
    });
    const outcome = await service.serve({ table: table.name, tenant: tenantOf(config, table), parentPathLocator: null, keys: options.keys, requestedBy: 'cli', reason: 'operator back-fill' });
    report(options, outcome, () => {
      if (outcome.kind === 'published') return `run ${outcome.runId}: republished ${outcome.rows} row(s)${outcome.failed > 0 ? `, ${outcome.failed} refused (see \`highwater runs ${outcome.runId}\`)` : ''}`;
      if (outcome.kind === 'not-found') return `run ${outcome.runId}: none of the keys exists at the source (or they are excluded)`;
      return `nothing done: ${outcome.reason}`;
    });
    return outcome.kind === 'published' && outcome.failed === 0 ? EXIT.OK : EXIT.FAILURE;
  } finally {
    await rt.close();
  }
}
