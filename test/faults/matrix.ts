/**
 * The scenarios of the whole fault matrix (`npm run test:faults`) beyond the fast subset. Each names the
 * RELIABILITY.md scenario it drives; the durations of network faults are 5 s, 30 s and 120 s.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { insertRows } from '../../src/dev/demo/sample.js';
import { startPgCluster, type PgCluster } from '../support/pg-cluster.js';
import { startProxiedKafka, type ProxiedKafka } from '../support/proxied-kafka.js';
import { SMALL_LOAD, type Pipeline, type PipelineOptions } from './harness.js';
import {
  brokerKill, pgTerminate, proxyFault, sigstopRebalance, sourceProxy, targetDrop, targetProxy, timedFault,
  type Injection, type ScenarioDef,
} from './scenarios.js';

const SESSION_MS = 6000;

/** Kills a service with SIGKILL at `times` seeded load steps and restarts it at once. */
function killAndRestart(role: 'poller' | 'consumer', times: number): ScenarioDef['inject'] {
  return (_env, rand) => {
    const at = new Set(Array.from({ length: times }, () => Math.floor(rand() * 8)));
    return {
      atStep: async (offset, p) => {
        if (!at.has(offset)) return;
        const service = role === 'poller' ? p.poller : p.consumers[Math.floor(rand() * p.consumers.length)]!;
        // A random moment inside the step, so the kill lands in a send, a COPY or a commit rather than between them.
        await sleep(Math.floor(rand() * 400));
        await service.restart();
      },
      healed: async () => undefined,
      notes: () => `${role} SIGKILLed and restarted at load offsets ${[...at].sort((a, b) => a - b).join(',')}`,
    };
  };
}

const brokerStop: ScenarioDef = {
  id: 'R3-stop', title: 'broker stopped gracefully during the load, started after 5 s', boundMs: 120_000,
  inject: (env) => timedFault(() => env.broker!.stop(), () => env.broker!.start(), 5000, 'broker stopped for 5 s'),
};

/** A private cluster holds source and target, so the database itself can be stopped, killed and started. */
function privateCluster(fault: 'stop' | 'kill', downMs: number): ScenarioDef {
  let cluster: PgCluster | undefined;
  return {
    id: `R5-pg-${fault}`, title: `PostgreSQL (source, target, control store) ${fault === 'stop' ? 'stopped (fast)' : 'SIGKILLed'} for ${downMs / 1000} s`, boundMs: 150_000,
    prepare: async () => {
      cluster = await startPgCluster();
      const c = cluster;
      return { options: { pgServerUrl: c.url() }, close: () => c.destroy() };
    },
    inject: () => timedFault(async () => (fault === 'stop' ? cluster!.stop() : cluster!.kill()), () => cluster!.start(), downMs, `cluster ${fault} for ${downMs / 1000} s`),
  };
}

function network(id: string, where: 'target' | 'source', kind: 'drop' | 'reset' | 'delay' | 'slow', durationMs: number): ScenarioDef {
  const mode = kind === 'delay' ? { kind, latencyMs: 400 } as const : kind === 'slow' ? { kind, bytesPerSecond: 20_000 } as const : { kind } as const;
  const link = where === 'target' ? 'consumer→target database' : 'poller→source database';
  return {
    id, title: `${kind} ${link} for ${durationMs / 1000} s`, boundMs: 120_000 + durationMs,
    prepare: where === 'target' ? targetProxy() : sourceProxy(),
    inject: proxyFault(mode, durationMs, link),
  };
}

/**
 * A network fault on the link between the services (poller and consumers) and the broker. The scenario has its own
 * broker whose services' listener is advertised at a fault proxy (test/support/proxied-kafka.ts), so every
 * connection of the services to the broker, not only the bootstrap one, passes through the proxy; the harness
 * watches over the broker's direct listener. `verify` checks that the services were indeed told the proxy's address.
 */
function brokerLink(kind: 'drop' | 'reset' | 'delay' | 'slow', durationMs: number): ScenarioDef {
  const mode = kind === 'delay' ? { kind, latencyMs: 400 } as const : kind === 'slow' ? { kind, bytesPerSecond: 20_000 } as const : { kind } as const;
  const link = 'poller and consumer ↔ broker';
  let kafka: ProxiedKafka | undefined;
  return {
    id: `R7-broker-${kind}${durationMs === 5000 ? '' : `-${durationMs / 1000}s`}`, title: `${kind} ${link} for ${durationMs / 1000} s`, boundMs: 120_000 + durationMs,
    prepare: async () => {
      kafka = await startProxiedKafka();
      const k = kafka;
      return { options: { brokers: [k.direct], serviceBrokers: [k.proxied] }, proxy: k.proxy, close: (passed) => k.stop({ keep: passed === false }) };
    },
    inject: proxyFault(mode, durationMs, link),
    verify: async () => {
      const advertised = await kafka!.advertisedToServices();
      const notes = `services told ${advertised.join(',')} (proxy ${kafka!.proxied}), ${kafka!.proxy.accepted} connections through the proxy`;
      const ok = advertised.length === 1 && advertised[0] === kafka!.proxied;
      return { notes, problem: ok ? null : `the services were not routed through the proxy (${notes}): the fault did not sit on their link` };
    },
  };
}

/** Consumers join (a new instance) and leave (SIGTERM) every step or two of the load. */
const churn: ScenarioDef = {
  id: 'R15-churn', title: 'consumers join and leave every few seconds during the load', boundMs: 120_000,
  pipeline: { consumers: 2, sessionTimeoutMs: SESSION_MS },
  load: { ...SMALL_LOAD, steps: 20 },
  inject: (_env, rand): Injection => {
    let joins = 0;
    let leaves = 0;
    return {
      atStep: async (_offset, p: Pipeline) => {
        const live = p.consumers.filter((c) => c.running());
        if (live.length <= 1 || (live.length < 4 && rand() < 0.5)) {
          p.addConsumer();
          joins += 1;
        } else {
          await live[Math.floor(rand() * live.length)]!.stop('SIGTERM');
          leaves += 1;
        }
      },
      healed: async () => undefined,
      notes: () => `${joins} joins, ${leaves} leaves`,
    };
  },
};

/** libfaketime, where the Debian package `faketime` puts it. */
export function libfaketime(): string | undefined {
  const candidates = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/faketime/libfaketime.so.1'];
  return candidates.find((c) => existsSync(c));
}

/**
 * The poller's host clock under libfaketime, set through a file the test rewrites while the poller runs (libfaketime
 * reads it again every second), so the clock can be offset from the start, step during the load, or be put just
 * before a DST change when the load is under way. The monotonic clock stays real, as NTP steps and DST leave it.
 */
class FakeClock {
  private dir: string | undefined;

  async prepare(): Promise<{ options: Partial<PipelineOptions>; close(): Promise<void> }> {
    this.dir = await mkdtemp(join(tmpdir(), 'hw-faketime-'));
    await this.set('+0');
    const env = { LD_PRELOAD: libfaketime() ?? '', FAKETIME_TIMESTAMP_FILE: this.file(), FAKETIME_CACHE_DURATION: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_DONT_RESET: '1' };
    return { options: { pollerEnv: env }, close: async () => rm(this.dir!, { recursive: true, force: true }) };
  }

  /** libfaketime's syntax: `+300` (seconds), `-1h`, `+5m`. */
  async set(offset: string): Promise<void> {
    await writeFile(this.file(), `${offset}\n`);
  }

  /** Offsets the clock so that it reads `instant` now. */
  async setTo(instant: Date): Promise<void> {
    const seconds = Math.round((instant.getTime() - Date.now()) / 1000);
    await this.set(seconds >= 0 ? `+${seconds}` : String(seconds));
  }

  private file(): string {
    return join(this.dir!, 'faketime.rc');
  }
}

/**
 * How far the poller's clock was from the database's, measured on what the poller wrote: a batch's `started_at` is
 * the poller host's clock, its `finished_at` the database's (clock_timestamp()), a moment later.
 */
async function measuredSkew(p: Pipeline): Promise<{ batches: number; lowS: number; highS: number; firstAt: Date | null; lastAt: Date | null }> {
  const { rows } = await p.target.query<{ n: number; lo: number | null; hi: number | null; first: Date | null; last: Date | null }>(
    `SELECT count(*)::int AS n, extract(epoch from min(started_at - finished_at))::float8 AS lo, extract(epoch from max(started_at - finished_at))::float8 AS hi,
       min(started_at) AS first, max(started_at) AS last FROM hw_control.run_batches`);
  const r = rows[0]!;
  return { batches: r.n, lowS: r.lo ?? 0, highS: r.hi ?? 0, firstAt: r.first, lastAt: r.last };
}

/** The time a batch takes between its start and its record, at most, on a busy machine: the slack of the measure. */
const BATCH_SLACK_S = 120;

/** The poller's host clock offset by `seconds` against the database's for the whole run. */
function skew(id: string, seconds: number, what: string): ScenarioDef {
  const clock = new FakeClock();
  return {
    id, title: `poller host clock ${what}`, boundMs: 120_000,
    prepare: async () => {
      const prepared = await clock.prepare();
      await clock.set(seconds >= 0 ? `+${seconds}` : String(seconds));
      return prepared;
    },
    inject: () => ({ atStep: async () => undefined, healed: async () => undefined, notes: () => `poller clock ${seconds >= 0 ? '+' : ''}${seconds} s` }),
    verify: async (p) => {
      const m = await measuredSkew(p);
      const notes = `measured poller − database ${m.highS.toFixed(0)} s over ${m.batches} batches`;
      const ok = m.batches > 0 && m.highS <= seconds + 5 && m.highS >= seconds - BATCH_SLACK_S;
      return { notes, problem: ok ? null : `the poller's clock was not skewed as the scenario says (${notes}, expected ${seconds} s): faketime did not take effect` };
    },
  };
}

/** The clock steps back by `seconds` at the fault, and forward again 20 s later (an NTP step, a misset clock fixed). */
function clockStep(seconds: number): ScenarioDef {
  const clock = new FakeClock();
  return {
    id: `R13-step-back-${seconds / 3600}h`, title: `poller host clock steps back ${seconds / 3600} h during the load, forward again 20 s later`, boundMs: 120_000,
    prepare: () => clock.prepare(),
    inject: () => timedFault(() => clock.set(String(-seconds)), () => clock.set('+0'), 20_000, `poller clock −${seconds} s for 20 s`),
    verify: async (p) => {
      const m = await measuredSkew(p);
      const notes = `measured poller − database from ${m.lowS.toFixed(0)} s to ${m.highS.toFixed(0)} s over ${m.batches} batches`;
      const ok = m.lowS <= -seconds + 5 && m.lowS >= -seconds - BATCH_SLACK_S;
      return { notes, problem: ok ? null : `the poller published no batch while its clock was stepped back (${notes})` };
    },
  };
}

/**
 * A DST change on the poller host (TZ=Europe/Berlin): at the fault its clock is put 5 s before the change, so the
 * change happens while the load is polled. Spring: 02:00 CET becomes 03:00 CEST; autumn: 03:00 CEST becomes 02:00
 * CET, an hour of local times twice. Its clock is also months away from the database's, which the window bounds
 * must not notice. The poller must have published batches on both sides of the change.
 */
function dstChange(season: 'spring' | 'autumn'): ScenarioDef {
  const change = season === 'spring' ? new Date('2027-03-28T01:00:00Z') : new Date('2026-10-25T01:00:00Z');
  const local = season === 'spring' ? '2027-03-28 02:00 CET → 03:00 CEST' : '2026-10-25 03:00 CEST → 02:00 CET';
  const clock = new FakeClock();
  return {
    id: `R13-dst-${season}`, title: `poller host crosses a DST change during the load (Europe/Berlin, ${local})`, boundMs: 120_000,
    load: { ...SMALL_LOAD, steps: 24 },
    prepare: async () => {
      const prepared = await clock.prepare();
      return { ...prepared, options: { pollerEnv: { ...prepared.options.pollerEnv, TZ: 'Europe/Berlin' } } };
    },
    inject: () => {
      let pipeline: Pipeline | undefined;
      return {
        atStep: async (offset, p) => {
          if (offset !== 0) return;
          pipeline = p;
          await clock.setTo(new Date(change.getTime() - 3000));
        },
        // The load may end before the poller's clock reaches the change: a row a second keeps it publishing until
        // it has published a batch after the change (at most 60 rows; verify says so if it never did).
        healed: async () => {
          for (let i = 0; i < 60 && pipeline && (await batchesAfter(pipeline, change)) === 0; i++) {
            await insertRows(pipeline.source, [{ id: randomUUID(), name: `dst-${i}`, path: `/dst${i}/`, parent: null, isDirectory: true, content: null, modifiedOnSql: 'clock_timestamp()', bu: pipeline.bus[0]! }]);
            await sleep(1000);
          }
        },
        notes: () => `poller clock put 3 s before ${local}`,
      };
    },
    verify: async (p) => {
      const m = await measuredSkew(p);
      const localTime = (d: Date | null) => (d ? d.toLocaleString('sv-SE', { timeZone: 'Europe/Berlin', timeZoneName: 'short' }) : '-');
      const [before, after] = [await batchesBefore(p, change), await batchesAfter(p, change)];
      const notes = `poller batches ${before} in the minute before and ${after} after ${local}; all from ${localTime(m.firstAt)} to ${localTime(m.lastAt)}`;
      const crossed = before > 0 && after > 0;
      return { notes, problem: crossed ? null : `the poller published no batches on both sides of the DST change (${notes})` };
    },
  };
}

/** Batches the poller started (by its own clock) within ten minutes after `instant` (not the ones at the real time). */
async function batchesAfter(p: Pipeline, instant: Date): Promise<number> {
  const { rows } = await p.target.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM hw_control.run_batches WHERE started_at >= $1 AND started_at < $1::timestamptz + interval '10 minutes'`, [instant]);
  return rows[0]!.n;
}

/** Batches the poller started (by its own clock) within the minute before `instant`. */
async function batchesBefore(p: Pipeline, instant: Date): Promise<number> {
  const { rows } = await p.target.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM hw_control.run_batches WHERE started_at < $1 AND started_at > $1::timestamptz - interval '1 minute'`, [instant]);
  return rows[0]!.n;
}

export interface MatrixEntry {
  readonly def: ScenarioDef;
  readonly repetitions: number;
  /** Why it cannot run here (a missing tool); printed in the table instead of a result. */
  readonly unavailable?: string;
}

/**
 * RELIABILITY.md scenarios that are source-side shapes rather than faults, and the tests that check them (file and
 * test name, so `npx vitest run <file> -t '<name>'` runs exactly that). I6 also runs in every matrix scenario (a
 * poison record published before the fault must be dead-lettered, and nothing else).
 */
export const COVERED_ELSEWHERE: readonly { id: string; by: readonly string[] }[] = [
  { id: 'R8 poison', by: ['integration/consumer.test.ts "sends poison records to the dead-letter topic with the reason and keeps applying good ones" (undecodable value, key differing from the event key, bare tombstone, a value the target refuses)',
    'integration/dlq.test.ts "lists poison with its reason, and a replayed dead letter is tried again once the cause is fixed"',
    'integration/defects.test.ts "11: content larger than the target stores goes to the dead-letter topic, and the partition keeps flowing"'] },
  { id: 'R9 replay', by: ['integration/consumer.test.ts "replays a topic from offset 0 into the same target without changing a byte"',
    'contract/sink.ts "replays idempotently: the same batch again writes nothing and changes nothing" (run by integration/sink-postgres.test.ts)'] },
  { id: 'R10 older after newer', by: ['integration/consumer.test.ts "never lets an older version or an older delete overwrite a newer one"',
    'contract/sink.ts "lets a newer version overwrite and never an older or equal one (audited by a trigger)"',
    'integration/defects.test.ts "5b: a row restored from an older backup in place …"'] },
  { id: 'R11 equal ModifiedOn, poller killed', by: ['integration/poller.test.ts "publishes every one of 5,000 rows sharing one ModifiedOn after a kill -9 mid-run and a resume (duplicates only)"',
    'contract/source.ts "pages through equal timestamps at page boundaries, neither skipping nor repeating" (run by integration/source-postgres.test.ts)'] },
  { id: 'R12 late commits', by: ['integration/poller.test.ts "publishes a row committed late with a ModifiedOn inside the previous window overlap"',
    'integration/poller.test.ts "detects a row committed later than the safety buffer covers, reports it and publishes it (R12, beyond)"',
    'integration/poller.test.ts "holds the window end back before an open transaction, and publishes its row once committed"'] },
  { id: 'R14 same-millisecond versions', by: ['integration/poller.test.ts "keeps ModifiedOn exact to the microsecond, before 1970 and beyond 2^53 ticks"',
    'unit/apply-reduce.test.ts "breaks a ModifiedOn tie by the later observation, whatever the hashes and the arrival order"',
    'unit/version-convergence.test.ts "every replica ends in the last observed state, whatever the arrival order"'] },
  { id: 'R16 blob larger than a message', by: ['integration/poller.test.ts "sends a blob bigger than one Kafka message as chunks and a manifest, and refuses one above maxBlobBytes"',
    'integration/consumer.test.ts "puts a 3 MiB blob back together from 1 MiB messages"'] },
  { id: 'R17 deletes, compaction, rebuild', by: ['integration/rebuild.test.ts "reset-offsets …" and "rebuild …" (deletes not resurrected)',
    'integration/defects.test.ts "9: a fresh target replays a topic compaction has cleaned, with no seek-back loop", "5c …", "5d …"',
    'integration/poller.test.ts "turns deleted rows into tombstones carrying the last published version, and logs them"; deletes also run in every matrix load'] },
];

export function matrix(full: { long: boolean }): MatrixEntry[] {
  const faketime = libfaketime() === undefined ? 'faketime is not installed (Debian: apt-get install -y faketime)' : undefined;
  const durations = full.long ? [5000, 30_000, 120_000] : [5000];
  const entries: MatrixEntry[] = [
    { def: { id: 'R1-consumer-kill', title: 'consumer SIGKILLed at three random moments, restarted at once', boundMs: 120_000, pipeline: { sessionTimeoutMs: SESSION_MS }, inject: killAndRestart('consumer', 3) }, repetitions: 2 },
    { def: { id: 'R2-poller-kill', title: 'poller SIGKILLed at three random moments, restarted at once', boundMs: 120_000, inject: killAndRestart('poller', 3) }, repetitions: 2 },
    { def: brokerKill, repetitions: 2 },
    { def: brokerStop, repetitions: 1 },
    { def: sigstopRebalance, repetitions: 2 },
    { def: pgTerminate, repetitions: 2 },
    { def: privateCluster('stop', 5000), repetitions: 1 },
    { def: privateCluster('kill', 5000), repetitions: 1 },
    { def: { ...pgTerminate, id: 'R6-source-terminate', title: 'pg_terminate_backend of the poller sessions, three times', inject: (e, r, p) => onlyPoller(pgTerminate.inject(e, r, p)) }, repetitions: 1 },
    { def: network('R6-source-reset', 'source', 'reset', 5000), repetitions: 1 },
    { def: targetDrop, repetitions: 1 },
    ...durations.map((d) => ({ def: network(`R7-drop-src-${d / 1000}s`, 'source', 'drop', d), repetitions: 1 })),
    { def: network('R7-reset-db', 'target', 'reset', 5000), repetitions: 1 },
    { def: network('R7-delay-db', 'target', 'delay', 10_000), repetitions: 1 },
    { def: network('R7-slow-db', 'target', 'slow', 10_000), repetitions: 1 },
    // The long faults (HIGHWATER_FAULTS_LONG=1): every kind for 30 s and 120 s between the consumers and the target.
    ...durations.filter((d) => d > 5000).flatMap((d) => (['drop', 'reset', 'delay', 'slow'] as const).map((kind) => ({ def: network(`R7-${kind}-db-${d / 1000}s`, 'target', kind, d), repetitions: 1 }))),
    // Every kind between the services and the broker, 5 s (and 30 s, 120 s with the long faults).
    ...durations.flatMap((d) => (['drop', 'reset', 'delay', 'slow'] as const).map((kind) => ({ def: brokerLink(kind, d), repetitions: 1 }))),
    ...[skew('R13-skew+5m', 300, '5 min ahead'), skew('R13-skew-5m', -300, '5 min behind'), skew('R13-skew+1h', 3600, '1 h ahead'),
      skew('R13-skew-1h', -3600, '1 h behind'), clockStep(3600), dstChange('spring'), dstChange('autumn')]
      .map((def) => ({ def, repetitions: 1, ...(faketime ? { unavailable: faketime } : {}) })),
    { def: churn, repetitions: 1 },
  ];
  const only = process.env.HIGHWATER_FAULTS_ONLY;
  return only ? entries.filter((e) => new RegExp(only).test(e.def.id)) : entries;
}

/** Restricts a pg_terminate injection to the poller's sessions. */
function onlyPoller(injection: Injection): Injection {
  return {
    ...injection,
    atStep: (offset, p) => injection.atStep(offset, { ...p, terminateServiceSessions: () => p.terminateServiceSessions('poller') }),
  };
}

/** One line for the start of the matrix: whether the clock-skew scenarios can run, and how to make them. */
export function faketimeStatus(): string {
  return libfaketime() === undefined
    ? 'faketime missing: the clock-skew scenarios (R13) are SKIPPED; install libfaketime with `apt-get install -y faketime` (Debian/Ubuntu)'
    : `faketime available (${libfaketime()!}): the clock-skew scenarios (R13) run`;
}
