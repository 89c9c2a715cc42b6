import { isoFromTicks } from '../time/ticks.js';
import { Runtime, type RunningConsumers } from '../wiring.js';
import { scrubSecrets } from '../logger.js';
import { HighwaterError, isRetriable } from '../errors.js';
import type { Config, TargetConfig } from '../config/schema.js';
import { groupIdFor } from '../config/load.js';
import { loadContext, report, type GlobalOptions } from './context.js';
import { EXIT } from './exit-codes.js';
import { installShutdown, untilAborted } from './shutdown.js';
import { sleep } from '../retry.js';
import { scopeOf, type RunSummary } from '../poll/poller.js';
import { waitForLeases } from './lease-wait.js';
import { progressListener, showsProgress } from './progress.js';
import { findingsText, heldBackText } from './findings.js';
import { probeSources, renderSourceTransactions, type SourceTransactions } from './open-transactions.js';
import type { TableStatusRecord } from '../control/sql.js';
import { preflight, renderPreflight, requireInitialised } from '../preflight/check.js';
import { metricsPortFor, type MetricsRole } from '../metrics/port.js';
import type { Observability } from '../metrics/observe.js';
import type { PollerListener } from '../poll/observer.js';
import { packageVersion } from './version.js';

/** The subcommands' bodies. Each returns an exit code; errors propagate to main, which maps them to codes. */

async function withRuntime<T>(options: GlobalOptions, body: (rt: Runtime, config: Config) => Promise<T>): Promise<T> {
  const { config, logger } = await loadContext(options);
  const rt = new Runtime(config, logger);
  try {
    return await body(rt, config);
  } finally {
    await rt.close();
  }
}

/** `highwater check`: the preflight alone; changes nothing. Exit 1 when it finds a problem. */
export async function checkCommand(options: GlobalOptions): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    const result = await preflight(rt, config);
    report(options, result, () => renderPreflight(result));
    return result.ok ? EXIT.OK : EXIT.FAILURE;
  });
}

export async function initCommand(options: GlobalOptions): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    // Nothing is created unless everything init needs is there: a half-initialised deployment is worse than none.
    const check = await preflight(rt, config);
    if (!check.ok) {
      report(options, { initialised: false, preflight: check }, () => renderPreflight(check));
      throw new HighwaterError('PREFLIGHT_FAILED', `init changed nothing: the preflight found ${check.problems} problem${check.problems === 1 ? '' : 's'}`);
    }
    const control = await rt.store().migrate();
    const targets: string[] = [];
    for (const t of config.targets) {
      const writer = await rt.writer(t);
      try {
        await writer.migrate();
      } finally {
        await writer.close();
      }
      targets.push(t.name);
    }
    for (const t of config.tables.filter((x) => x.enabled)) await rt.ensureTableTopics(t);
    report(options, { initialised: true, control, targets, preflight: check }, () => `control store ready (schema ${config.controlStore.schema}); targets migrated: ${targets.join(', ') || 'none'}; topics ensured`);
    return EXIT.OK;
  });
}

function summaryLine(s: RunSummary): string {
  const lines = [`run ${s.runId}: ${s.status}`];
  for (const t of s.tables) {
    if (t.error) lines.push(`  ${t.table} [${t.scope}]: FAILED — ${t.error}`);
    else if (t.outcome) {
      const o = t.outcome;
      lines.push(`  ${t.table} [${t.scope}]: window (${isoFromTicks(o.window.start)}, ${isoFromTicks(o.window.end)}] published ${o.published}, unchanged ${o.skipped}, tombstones ${o.tombstones}; ${findingsText({ lateArrivals: o.lateArrivals, rowsRefused: o.failed, nullModifiedOn: o.nullModifiedOn })}`);
      if (o.heldBack) lines.push(`    ${heldBackText(o.heldBack)}`);
    }
    else lines.push(`  ${t.table} [${t.scope}]: already completed`);
  }
  return lines.join('\n');
}

type MetricsOptions = { metricsPort?: number };

function observe(rt: Runtime, config: Config, role: MetricsRole, options: MetricsOptions): Promise<Observability> {
  return rt.observe({ port: metricsPortFor(role, config, options.metricsPort, process.env), role, version: packageVersion() });
}

/**
 * The poll loop's liveness: it may be silent for an interval plus a lease (a window that long between batches
 * means the lease expired under it anyway); every batch and every finished run count as progress.
 */
function watchPollLoop(o: Observability, config: Config): PollerListener {
  o.liveness.expect('poller', (config.poll.intervalSeconds + config.poll.leaseSeconds) * 1000);
  return { batchPublished: () => o.liveness.beat('poller'), windowCompleted: () => o.liveness.beat('poller'), tableFailed: () => o.liveness.beat('poller') };
}

async function timedRun(o: Observability | undefined, run: () => Promise<RunSummary>): Promise<RunSummary> {
  const started = process.hrtime.bigint();
  const summary = await run();
  o?.metrics.pollRuns.observe({ outcome: summary.status }, Number(process.hrtime.bigint() - started) / 1e9);
  o?.metrics.lastPollFinishedAt.set(Date.now() / 1000);
  o?.liveness.beat('poller');
  return summary;
}

/**
 * One poll. With --every, a run that could not even start because a service is unavailable (the control store's
 * database restarting, say) is logged and tried again at the next interval: a long-running poller must outlive a
 * database restart. Errors that will not heal by waiting still end the command.
 */
async function pollOnce(run: () => Promise<RunSummary>, options: { every?: boolean }, rt: Runtime): Promise<RunSummary | undefined> {
  try {
    return await run();
  } catch (err) {
    if (!options.every || !isRetriable(err)) throw err;
    rt.logger.error({ err }, 'the poll could not run; trying again at the next interval');
    return undefined;
  }
}

export async function pollCommand(options: GlobalOptions & MetricsOptions & { table?: string[]; every?: boolean }): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    await rt.store().migrate();
    const stop = installShutdown(rt.logger);
    const observed = options.every ? await observe(rt, config, 'poll', options) : undefined;
    const watch = observed ? [observed.metrics.pollerListener(), watchPollLoop(observed, config)] : [];
    const poller = await rt.poller({ listeners: [progressListener(options, rt.logger), ...watch], signal: stop.signal, countWindows: showsProgress(options) && !options.every });
    // A long-running poller also serves the consumers' back-fill requests (missing parents).
    const backfill = options.every ? await rt.startBackfill() : undefined;
    let code: number = EXIT.OK;
    try {
      do {
        const summary = await pollOnce(() => timedRun(observed, () => poller.run({ ...(options.table ? { tables: options.table } : {}), requestedBy: 'cli' })), options, rt);
        if (summary !== undefined) report(options, summary, () => summaryLine(summary));
        code = summary?.status === 'failed' || summary === undefined ? EXIT.FAILURE : EXIT.OK;
        if (options.every) await sleep(config.poll.intervalSeconds * 1000, stop.signal);
      } while (options.every && !stop.signal.aborted);
    } finally {
      await backfill?.stop();
    }
    return code;
  });
}

export async function resumeCommand(options: GlobalOptions & { wait?: boolean }, runId: string): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    await requireInitialised(rt, config);
    const stop = installShutdown(rt.logger);
    const run = await rt.store().getRun(runId);
    await waitForLeases(runTables(config, run), { status: () => rt.store().status(), say: countdown(), signal: stop.signal }, options.wait === false);
    const poller = await rt.poller({ listeners: [progressListener(options, rt.logger)], signal: stop.signal, countWindows: showsProgress(options) });
    const summary = await poller.resume(runId);
    report(options, summary, () => summaryLine(summary));
    return summary.status === 'failed' ? EXIT.FAILURE : EXIT.OK;
  });
}

/** The tables (and scopes) a run works on: those it was started with, else every enabled table. */
function runTables(config: Config, run: { options: Record<string, unknown> }): { table: string; scope: string }[] {
  const names = (run.options as { tables?: string[] }).tables;
  return config.tables.filter((t) => (names ? names.includes(t.name) : t.enabled)).map((t) => ({ table: t.name, scope: scopeOf(t) }));
}

/** The countdown on stderr: rewritten in place at a terminal, one line every 10 s otherwise (logs, CI). */
function countdown(): (line: string, final: boolean) => void {
  let lastPrinted = 0;
  return (line, final) => {
    if (process.stderr.isTTY) {
      process.stderr.write(`\r\x1b[K${line}${final && line ? '\n' : ''}`);
      return;
    }
    if (line === '' || (!final && Date.now() - lastPrinted < 10_000)) return;
    lastPrinted = Date.now();
    process.stderr.write(`highwater: ${line}\n`);
  };
}

export async function resetCommand(options: GlobalOptions, runId: string): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    await requireInitialised(rt, config);
    await rt.store().resetRun(runId);
    report(options, { runId, reset: true }, () => `run ${runId} reset: \`highwater resume ${runId}\` starts it again from its window start (targets keep what they hold)`);
    return EXIT.OK;
  });
}

function selectTargets(config: Config, names: string[] | undefined): TargetConfig[] {
  if (!names || names.length === 0) return [...config.targets];
  const unknown = names.filter((n) => !config.targets.some((t) => t.name === n));
  if (unknown.length > 0) throw new HighwaterError('USAGE', `unknown target(s): ${unknown.join(', ')}`);
  return config.targets.filter((t) => names.includes(t.name));
}

function applyCallbacks(o: Observability, target: TargetConfig): Parameters<Runtime['startConsumers']>[1] {
  return {
    onApplied: (info) => o.metrics.onApplied({ ...info, target: target.name }),
    onBackfillRequested: (table) => o.metrics.backfillRequests.inc({ table, target: target.name }),
  };
}

export async function consumeCommand(options: GlobalOptions & MetricsOptions & { target?: string[] }): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    const stop = installShutdown(rt.logger);
    const observed = await observe(rt, config, 'consume', options);
    const running = [];
    for (const t of selectTargets(config, options.target)) running.push(await rt.startConsumers(t, applyCallbacks(observed, t)));
    rt.logger.info({ targets: running.map((r) => r.groupId) }, 'consuming; SIGINT or SIGTERM stops');
    const failure = await Promise.race([untilAborted(stop.signal).then(() => undefined), firstFailure(running)]);
    for (const r of running) await r.stop();
    return failure === undefined ? EXIT.OK : exitForStoppedConsumer(rt, failure);
  });
}

/** The first consumer that stops for good, with its group id. */
function firstFailure(running: readonly RunningConsumers[]): Promise<{ groupId: string; err: Error }> {
  return Promise.race(running.map((r) => r.failed.then((err) => ({ groupId: r.groupId, err }))));
}

/**
 * A consumer that stopped for good must not leave a process that looks alive (lag would grow and no one be told):
 * the log record, one plain line on stderr, and exit code 1, so a supervisor restarts the process.
 */
function exitForStoppedConsumer(rt: Runtime, failure: { groupId: string; err: Error }): number {
  rt.logger.error({ err: failure.err, groupId: failure.groupId }, 'a consumer stopped on an error it cannot retry; exiting');
  const reason = scrubSecrets(failure.err.message.split('\n')[0]!);
  process.stderr.write(`highwater: the consumer of group ${failure.groupId} stopped on an error it cannot retry: ${reason}\n  hint: exiting with code 1 so a supervisor restarts the process; if it stops again, fix the cause named here\n`);
  return EXIT.FAILURE;
}

/**
 * `highwater run`: the poll loop and the consumers in one process. It ends on SIGINT/SIGTERM (exit 0) or when a
 * consumer stopped for good (exit 1, as `consume` does): the poll loop alone must not keep a process alive whose
 * targets no longer move. A poll that could not start because a service is unavailable is tried again at the next
 * interval, as with `poll --every`.
 */
export async function runCommand(options: GlobalOptions & MetricsOptions): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    await rt.store().migrate();
    const stop = installShutdown(rt.logger);
    const observed = await observe(rt, config, 'run', options);
    const running: RunningConsumers[] = [];
    for (const t of config.targets) running.push(await rt.startConsumers(t, applyCallbacks(observed, t)));
    const ended = new AbortController();
    let failure: { groupId: string; err: Error } | undefined;
    void firstFailure(running).then((f) => {
      failure = f;
      ended.abort();
    });
    void untilAborted(stop.signal).then(() => ended.abort());
    const backfill = await rt.startBackfill();
    const poller = await rt.poller({ listeners: [observed.metrics.pollerListener(), watchPollLoop(observed, config)], signal: ended.signal });
    try {
      while (!ended.signal.aborted) {
        const summary = await pollOnce(() => timedRun(observed, () => poller.run({ requestedBy: 'run' })), { every: true }, rt);
        if (summary !== undefined) rt.logger.info({ runId: summary.runId, status: summary.status }, 'poll finished');
        await sleep(config.poll.intervalSeconds * 1000, ended.signal);
      }
    } finally {
      await backfill.stop();
      for (const r of running) await r.stop();
    }
    return failure === undefined ? EXIT.OK : exitForStoppedConsumer(rt, failure);
  });
}

export async function runsCommand(options: GlobalOptions & { limit?: number }, runId?: string): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    await requireInitialised(rt, config);
    if (runId) {
      const run = await rt.store().getRun(runId);
      report(options, run, () => JSON.stringify(run, (_k, v) => (typeof v === 'bigint' ? isoFromTicks(v) : v), 2));
      return EXIT.OK;
    }
    const runs = await rt.store().listRuns({ limit: options.limit ?? 20 });
    report(options, runs, () => runs.map((r) => `${r.runId}  ${r.status.padEnd(9)}  ${r.startedAt.toISOString()}  ${r.kind}${r.error ? `  ${r.error}` : ''}`).join('\n') || 'no runs yet');
    return EXIT.OK;
  });
}

export async function statusCommand(options: GlobalOptions): Promise<number> {
  return withRuntime(options, async (rt, config) => {
    await requireInitialised(rt, config);
    const tables = await rt.store().status();
    const sources = await probeSources(config, (t) => rt.source(t));
    const targets: { target: string; groupId: string; consistentAsOf: { table: string; scope: string; watermark: bigint | null }[] }[] = [];
    for (const t of config.targets) {
      const writer = await rt.writer(t);
      try {
        targets.push({ target: t.name, groupId: groupIdFor(t), consistentAsOf: await writer.consistentAsOf(groupIdFor(t)) });
      } finally {
        await writer.close();
      }
    }
    report(options, { tables, sources, targets }, () => renderStatus(tables, sources, targets));
    return EXIT.OK;
  });
}

function renderStatus(tables: readonly TableStatusRecord[], sources: readonly SourceTransactions[], targets: { target: string; consistentAsOf: { table: string; scope: string; watermark: bigint | null }[] }[]): string {
  const lines = ['tables:'];
  for (const t of tables) {
    const hw = t.highWater === null ? 'none yet' : isoFromTicks(t.highWater);
    lines.push(`  ${t.table} [${t.scope}] high-water ${hw}; lease ${t.leaseOwner ?? 'free'}${t.leaseExpiresAt ? ` until ${t.leaseExpiresAt.toISOString()}` : ''}; last run ${t.lastRunId ?? '-'} ${t.lastRunStatus ?? ''}`);
    const f = t.lastRunFindings;
    if (f) lines.push(`    last run: ${findingsText(f)}${f.endClampedBy ? `; window end ${isoFromTicks(f.windowEnd)} held back by an open transaction` : ''}`);
  }
  if (sources.length > 0) lines.push('sources:', ...renderSourceTransactions(sources));
  lines.push('targets:');
  for (const t of targets) {
    for (const c of t.consistentAsOf) lines.push(`  ${t.target}: ${c.table} [${c.scope}] consistent as of ${c.watermark === null ? 'unknown' : isoFromTicks(c.watermark)}`);
    if (t.consistentAsOf.length === 0) lines.push(`  ${t.target}: no watermark marker applied yet`);
  }
  return lines.join('\n');
}
