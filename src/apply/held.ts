import { HEADERS } from '../contract.js';
import { backfillTopic } from '../config/load.js';
import type { TargetConfig } from '../config/schema.js';
import type { EventCodec } from '../events/codec.js';
import { backfillToAvro } from '../events/mapping.js';
import { changeRecord, type OutRecord } from '../events/records.js';
import { coerceError } from '../errors.js';
import type { Publisher } from '../kafka/publisher.js';
import type { Logger } from '../logger.js';
import { backoffDelay } from '../retry.js';
import type { HeldParent, TargetWriter } from './sink/writer.js';
import type { TopicBinding } from './loop.js';
import type { PartitionLag } from './offsets.js';

/**
 * Children held in the target (hw_held) for a parent that has not arrived. The writers promote them set-based as
 * soon as a batch writes the parent, so what is left here is only what the log does not bring: HeldResolver asks
 * the poller side to back-fill such parents, and dead-letters the children of a parent that never comes.
 *
 * It acts only once the consumer has caught up: a step is taken only after every record that was in the table
 * topic at the previous step has been applied (a barrier of topic ends), so a parent still in the log — a rebuild
 * replaying a compacted topic reorders every parent and child — is never requested. Before asking, it promotes
 * across the whole table, every round (a parent written by another consumer's concurrent transaction is not seen
 * by the batch that held its child). Per parent the attempts follow the retry policy: the back-fill request at attempt
 * `backfillAfterAttempts`, the dead-letter topic at `maxAttempts`, delays doubling from `initialDelayMs`. A
 * dead-lettered child stays held (and parked, so consistent_as_of stays below it): if its parent comes after all,
 * it is still promoted.
 */

export interface ParentWait {
  readonly attempt: number;
  readonly dueAt: number;
  readonly exhausted: boolean;
}

export type WaitAction = 'none' | 'backfill' | 'dead-letter';

/** The next state of one parent's wait at `now`, and what to do. Pure. */
export function stepWait(wait: ParentWait | undefined, now: number, policy: TargetConfig['retry'], random: () => number = Math.random): { wait: ParentWait; action: WaitAction } {
  const delay = (attempt: number) => backoffDelay({ attempts: policy.maxAttempts, initialDelayMs: policy.initialDelayMs, maxDelayMs: policy.maxDelayMs, jitter: 0.1 }, attempt, random);
  if (wait === undefined) return { wait: { attempt: 0, dueAt: now + delay(1), exhausted: false }, action: 'none' };
  if (wait.exhausted || now < wait.dueAt) return { wait, action: 'none' };
  const attempt = wait.attempt + 1;
  if (attempt >= policy.maxAttempts) return { wait: { attempt, dueAt: Number.POSITIVE_INFINITY, exhausted: true }, action: 'dead-letter' };
  return { wait: { attempt, dueAt: now + delay(attempt + 1), exhausted: false }, action: attempt === policy.backfillAfterAttempts ? 'backfill' : 'none' };
}

/** Whether every partition has applied at least up to the barrier's ends (partitions new since count as passed). Pure. */
export function passedBarrier(barrier: ReadonlyMap<string, bigint>, now: readonly PartitionLag[]): boolean {
  return now.every((p) => p.next >= (barrier.get(`${p.topic}\u0000${p.partition}`) ?? 0n));
}

export interface HeldResolverDeps {
  readonly bindings: readonly TopicBinding[];
  readonly writer: TargetWriter;
  readonly codec: EventCodec;
  readonly publisher: Publisher;
  readonly logger: Logger;
  readonly policy: TargetConfig['retry'];
  readonly requestedBy: string;
  /** Where the group stands on these topics (stored offsets against the broker's ends). */
  readonly partitions: (topics: readonly string[]) => Promise<PartitionLag[]>;
  readonly now?: () => number;
  readonly tickMs?: number;
  readonly onBackfillRequested?: (table: string) => void;
}

interface TableState {
  barrier: Map<string, bigint> | null;
  readonly waits: Map<string, ParentWait>;
}

export class HeldResolver {
  private readonly tables = new Map<string, TableState>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly deps: HeldResolverDeps) {}

  start(): void {
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** One round over every table; errors are logged, never thrown (the next round tries again). */
  async tick(): Promise<void> {
    for (const binding of this.deps.bindings) {
      if (this.stopped) return;
      try {
        await this.resolveTable(binding);
      } catch (err) {
        this.deps.logger.warn({ err: coerceError(err), table: binding.table }, 'could not look after held children; trying again');
      }
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    const tickMs = this.deps.tickMs ?? Math.min(2000, Math.max(200, this.deps.policy.initialDelayMs));
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => this.schedule());
    }, tickMs);
    this.timer.unref();
  }

  private async resolveTable(binding: TopicBinding): Promise<void> {
    const state = this.stateOf(binding.table);
    // Every round first promotes across the whole table: a child held by one consumer's transaction while another's
    // wrote its parent (neither saw the other's rows) has its parent in the target, so it is no longer among the held
    // parents below and nothing else would ever promote it (fault matrix C2, consumers churning on three brokers).
    await this.deps.writer.promoteHeld(binding.table);
    const parents = await this.deps.writer.heldParents(binding.table);
    if (parents.length === 0) {
      state.barrier = null;
      state.waits.clear();
      return;
    }
    const partitions = await this.deps.partitions([binding.topic]);
    const barrier = state.barrier;
    state.barrier = new Map(partitions.map((p) => [`${p.topic}\u0000${p.partition}`, p.high]));
    if (barrier === null || !passedBarrier(barrier, partitions)) return;
    const now = (this.deps.now ?? Date.now)();
    const live = new Set<string>();
    for (const parent of parents) {
      const id = `${parent.tenant}\u0000${parent.parentPathLocator}`;
      live.add(id);
      const { wait, action } = stepWait(state.waits.get(id), now, this.deps.policy);
      // The step counts only once its request or dead letter is sent: a failed send is tried again next round.
      if (action === 'backfill') await this.requestBackfill(binding, parent, wait.attempt);
      if (action === 'dead-letter') await this.deadLetter(binding, parent, wait.attempt);
      state.waits.set(id, wait);
    }
    for (const id of [...state.waits.keys()]) if (!live.has(id)) state.waits.delete(id);
  }

  private stateOf(table: string): TableState {
    let state = this.tables.get(table);
    if (!state) this.tables.set(table, (state = { barrier: null, waits: new Map() }));
    return state;
  }

  private async requestBackfill(binding: TopicBinding, parent: HeldParent, attempt: number): Promise<void> {
    const value = await this.deps.codec.encode('BackfillRequest', backfillToAvro({
      table: binding.table, tenant: parent.tenant, parentPathLocator: parent.parentPathLocator, keys: [],
      requestedBy: this.deps.requestedBy, reason: `${parent.children} held child(ren) still wait for their parent after ${attempt} attempts, the consumer having caught up`,
    }));
    await this.deps.publisher.send(backfillTopic(), [{ key: binding.table, value, headers: { [HEADERS.table]: binding.table, [HEADERS.tenant]: parent.tenant } }]);
    this.deps.onBackfillRequested?.(binding.table);
    this.deps.logger.info({ table: binding.table, parent: parent.parentPathLocator, children: parent.children }, 'asked the poller side to back-fill a missing parent');
  }

  /** The held children go to the dead-letter topic with the reason; they stay held, in case the parent comes after all. */
  private async deadLetter(binding: TopicBinding, parent: HeldParent, attempt: number): Promise<void> {
    const children = await this.deps.writer.heldChildren(binding.table, parent.tenant, parent.parentPathLocator);
    const reason = `parent ${parent.parentPathLocator} did not arrive after ${attempt} attempts`;
    const records: OutRecord[] = [];
    for (const change of children) {
      const record = await changeRecord(this.deps.codec, change);
      records.push({ ...record, headers: { ...record.headers, [HEADERS.originalTopic]: binding.topic, [HEADERS.error]: reason, [HEADERS.errorKind]: 'missing-parent', [HEADERS.failedAt]: new Date().toISOString() } });
    }
    if (records.length > 0) await this.deps.publisher.send(binding.dlqTopic, records);
    this.deps.logger.warn({ table: binding.table, parent: parent.parentPathLocator, children: records.length, reason }, 'held children sent to the dead-letter topic; they stay held');
  }
}
