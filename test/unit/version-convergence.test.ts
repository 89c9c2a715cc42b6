/**
 * The version rule of the event contract (src/events/version.ts), proved on generated histories rather than
 * examples: for a key whose source state changes at random — ModifiedOn moving forward, staying (content changed
 * under it), moving backwards (a restore), becoming NULL, the row deleted and restored — the events the poller's
 * rules publish, delivered in any order the pipeline can produce (children parked in the retry topic and applied
 * late, duplicates from replays, any cut into batches), bring every replica to the last state the poller observed.
 *
 * The target is modelled exactly as the writers behave: in-batch reduction (reduceBatch), then a guarded upsert
 * (a change is written when it beats the row's version and no tombstone was observed at or after it) and a guarded
 * delete (rows observed at or before it go; its observation is remembered for ever). Seeds print on failure and
 * HIGHWATER_SEED=<n> replays one.
 */
import { describe, expect, it } from 'vitest';
import { reduceBatch, type BatchEvent } from '../../src/apply/reduce.js';
import type { BlobChange, Deletion } from '../../src/contract.js';
import { compareChanges, compareModifiedOn } from '../../src/events/version.js';
import { seeded as mulberry32 } from '../support/seeded.js';

type Rng = () => number;

const pick = <T>(rng: Rng, items: readonly T[]): T => items[Math.floor(rng() * items.length)]!;

interface State {
  readonly alive: boolean;
  readonly modifiedOn: bigint | null;
  readonly content: string;
}

/** A random walk of one key's source state, the way users' tables move. */
function sourceHistory(rng: Rng, steps: number): State[] {
  let state: State = { alive: true, modifiedOn: 1000n, content: 'c0' };
  const history = [state];
  for (let i = 1; i < steps; i++) {
    const m = state.modifiedOn ?? 1000n;
    const move = pick(rng, ['newer', 'newer', 'same-m', 'backwards', 'null', 'delete', 'restore-original', 'restore-older']);
    const content = `c${i}`;
    if (!state.alive) {
      state = { alive: true, modifiedOn: move === 'restore-older' ? m - 50n : m, content: move === 'restore-original' ? state.content : content };
    } else if (move === 'newer') state = { alive: true, modifiedOn: m + BigInt(1 + Math.floor(rng() * 20)), content };
    else if (move === 'same-m') state = { ...state, content };
    else if (move === 'backwards' || move === 'restore-older') state = { alive: true, modifiedOn: m - BigInt(1 + Math.floor(rng() * 20)), content };
    else if (move === 'null') state = { alive: true, modifiedOn: null, content };
    else state = { ...state, alive: false };
    history.push(state);
  }
  return history;
}

type Published = { readonly type: 'change'; readonly change: BlobChange } | { readonly type: 'delete'; readonly deletion: Deletion };

/**
 * What the poller publishes while observing that history, observation by observation (stamps strictly increasing):
 * a change for a live state, a tombstone when the row is gone, and a tombstone just before a change whose ModifiedOn
 * is older than the newest sent since the last delete (src/poll/build.ts movedBackwards). Unchanged states are
 * sometimes published again (a crash before the registry write), and some states are never observed at all.
 */
function publishedLog(rng: Rng, history: readonly State[]): { log: Published[]; last: State | null } {
  const log: Published[] = [];
  let observed = 5000n;
  let maxSent: bigint | null | undefined;
  let sentDeleted = true;
  let last: State | null = null;
  for (const state of history) {
    if (rng() < 0.25) continue;
    observed += BigInt(2 + Math.floor(rng() * 5));
    last = state;
    if (!state.alive) {
      if (!sentDeleted) log.push({ type: 'delete', deletion: deletion(observed) });
      sentDeleted = true;
      maxSent = undefined;
      continue;
    }
    if (maxSent !== undefined && maxSent !== null && compareModifiedOn(state.modifiedOn, maxSent) < 0) {
      log.push({ type: 'delete', deletion: deletion(observed - 1n) });
      maxSent = undefined;
    }
    log.push({ type: 'change', change: change(state, observed) });
    if (rng() < 0.15) log.push({ type: 'change', change: change(state, observed) });
    maxSent = maxSent === undefined || compareModifiedOn(state.modifiedOn, maxSent) > 0 ? state.modifiedOn : maxSent;
    sentDeleted = false;
  }
  return { log, last };
}

function change(state: State, observed: bigint): BlobChange {
  const content = Buffer.from(state.content);
  return {
    table: 'T', tenant: '', key: 'k', name: 'k', pathLocator: '/k/', parentPathLocator: null, isDirectory: false, size: content.length,
    attributes: {}, modifiedOn: state.modifiedOn, observed, businessUnit: null, content: { kind: 'inline', bytes: content },
    contentSha256: Buffer.from(state.content.padEnd(32, '.')), runId: 'r', window: { start: 0n, end: 0n },
  };
}

function deletion(observed: bigint): Deletion {
  return { table: 'T', tenant: '', key: 'k', modifiedOn: null, observed, runId: 'r' };
}

/**
 * An arrival order the pipeline can produce from the log: a change may be parked (retry topic) and arrive any time
 * later, and any record may be delivered again later (replay). The log's own order is otherwise kept: one poller
 * publishes a table's records in sequence, on the key's partition.
 */
function arrival(rng: Rng, log: readonly Published[]): Published[] {
  const out: Published[] = [];
  const later: { due: number; event: Published }[] = [];
  const dueBy = (i: number) => i + Math.floor(rng() * (log.length - i + 2));
  log.forEach((e, i) => {
    for (const p of later.filter((x) => x.due <= i)) out.push(p.event);
    later.splice(0, later.length, ...later.filter((x) => x.due > i));
    if (e.type === 'change' && rng() < 0.3) later.push({ due: dueBy(i), event: e });
    else out.push(e);
    if (rng() < 0.1) later.push({ due: dueBy(i), event: e });
  });
  for (const p of later.sort((a, b) => a.due - b.due)) out.push(p.event);
  return out;
}

/** The target as the writers keep it: the row's version, and the latest tombstone's observation, for ever. */
class TargetModel {
  row: BlobChange | null = null;
  tombstone: bigint | null = null;

  applyBatch(events: readonly Published[]): void {
    const reduced = reduceBatch(events as BatchEvent[]);
    // Deletes first, as the writers do: a change that follows a delete in the batch (a ModifiedOn set back) must
    // not be compared with the version the delete removes.
    for (const d of reduced.deletes) this.delete(d);
    // The upsert: of the staged versions of the key that no tombstone covers, the greatest, if it beats the row.
    const uncovered = reduced.changes.filter((c) => this.tombstone === null || c.observed > this.tombstone);
    const best = uncovered.reduce<BlobChange | null>((a, c) => (a === null || compareChanges(c, a) > 0 ? c : a), null);
    if (best !== null && (this.row === null || compareChanges(best, this.row) > 0)) this.row = best;
  }

  private delete(d: Deletion): void {
    if (this.row !== null && this.row.observed <= d.observed) this.row = null;
    if (this.tombstone === null || d.observed > this.tombstone) this.tombstone = d.observed;
  }
}

function replica(rng: Rng, order: readonly Published[]): TargetModel {
  const target = new TargetModel();
  for (let i = 0; i < order.length;) {
    const size = 1 + Math.floor(rng() * 4);
    target.applyBatch(order.slice(i, i + size));
    i += size;
  }
  return target;
}

function show(e: Published): string {
  return e.type === 'change' ? `c(${e.change.modifiedOn},${e.change.observed},${e.change.content.kind === 'inline' ? e.change.content.bytes.toString() : ''})` : `d(${e.deletion.observed})`;
}

function finalState(t: TargetModel): string {
  return t.row === null ? 'gone' : `${t.row.modifiedOn}/${t.row.content.kind === 'inline' ? t.row.content.bytes.toString() : '?'}`;
}

function expected(last: State | null): string {
  return last === null || !last.alive ? 'gone' : `${last.modifiedOn}/${last.content}`;
}

const SEEDS = process.env.HIGHWATER_SEED ? [Number(process.env.HIGHWATER_SEED)] : Array.from({ length: Number(process.env.HIGHWATER_SEEDS ?? 2000) }, (_, i) => i + 1);

describe('the version rule converges on generated histories', () => {
  it(`every replica ends in the last observed state, whatever the arrival order (${SEEDS.length} seeds; HIGHWATER_SEEDS=<n> for more)`, () => {
    const failures: string[] = [];
    for (const seed of SEEDS) {
      const rng = mulberry32(seed);
      const { log, last } = publishedLog(rng, sourceHistory(rng, 4 + Math.floor(rng() * 12)));
      const want = expected(last);
      if (process.env.HIGHWATER_DEBUG) console.log(JSON.stringify(log.map(show)), want);
      for (let r = 0; r < 3; r++) {
        const order = r === 0 ? log : arrival(rng, log);
        if (process.env.HIGHWATER_DEBUG) console.log(r, JSON.stringify(order.map(show)));
        const got = finalState(replica(rng, order));
        if (got !== want) failures.push(`seed ${seed}, replica ${r}: got ${got}, want ${want}`);
      }
    }
    expect(failures.slice(0, 10), `HIGHWATER_SEED=<seed> replays one`).toEqual([]);
  });

  it('would not converge with the content hash as the ModifiedOn tie-break (the rule this replaced)', () => {
    // Same ModifiedOn, later state with the smaller hash: a hash order keeps the earlier state.
    const earlier = change({ alive: true, modifiedOn: 7n, content: 'zz' }, 10n);
    const later = change({ alive: true, modifiedOn: 7n, content: 'aa' }, 11n);
    expect(Buffer.compare(later.contentSha256!, earlier.contentSha256!)).toBeLessThan(0);
    const t = new TargetModel();
    t.applyBatch([{ type: 'change', change: later }]);
    t.applyBatch([{ type: 'change', change: earlier }]);
    expect(finalState(t)).toBe('7/aa');
  });
});
