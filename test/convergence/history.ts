/**
 * Seeded source histories: a list of operations on a FileTable-like source (blob table ⋈ metadata table ⋈ BU map),
 * drawn from a PRNG against a model of the source, so that every operation is valid when it is applied and the
 * source is a consistent tree when the history ends. The same seed always gives the same list.
 *
 * Event classes (issue 8, "The convergence test"; RELIABILITY.md R10–R21): inserts, updates and deletes of blob and
 * metadata rows; content changes with and without a ModifiedOn change; many rows on one ModifiedOn across page
 * boundaries; two versions within a microsecond; late commits inside and beyond the safety buffer and by a
 * transaction that read for longer than the buffer before writing; NULL ModifiedOn; undeletes with the original
 * ModifiedOn; trees built parent-first and child-first, with re-parenting; several BUs, an excluded key, a BU
 * leaving the mapping (and coming back); contents below, at and above the inline limit, and chunked ones; SIGKILL of
 * the poller or the consumer at random moments.
 *
 * Rules that keep the final source a consistent tree (a FileTable has no orphans): folders are never deleted,
 * unmapped or moved to another BU, and live in BUs that always stay mapped (A, B); BU C, the one that leaves the
 * mapping, holds flat files only; a child created before its folder gets that folder a few operations later.
 */
import { Prng } from './prng.js';

/** Operations after which a row has most likely been published (300 ms apart, a 1 s buffer, polls every second). */
const OLD_OPS = 8;

/** A, B, C are in the BU map at the start (C leaves and may come back); D never is. */
export type Bu = 'A' | 'B' | 'C' | 'D';

/** How an operation sets ModifiedOn: the source clock, NULL, the clock minus some time (a late commit), or as it was. */
export type Stamp = { readonly kind: 'now' } | { readonly kind: 'null' } | { readonly kind: 'ago'; readonly ms: number } | { readonly kind: 'keep' };

export interface Content {
  readonly size: number;
  readonly fill: number;
}

export interface NewRow {
  readonly key: string;
  readonly path: string;
  readonly parent: string | null;
  /** null for a folder. */
  readonly content: Content | null;
  readonly bu: Bu;
}

export type Op =
  /** Rows inserted in one transaction, all with one stamp (`now` in one transaction: one ModifiedOn for all). */
  | { readonly kind: 'insert'; readonly rows: readonly NewRow[]; readonly stamp: Stamp; readonly why: string }
  | { readonly kind: 'update'; readonly keys: readonly string[]; readonly content: Content | null; readonly stamp: Stamp; readonly why: string }
  /** Two committed versions of one key with the same ModifiedOn (or 1 µs apart), different content. */
  | { readonly kind: 'same-microsecond'; readonly key: string; readonly first: Content; readonly second: Content; readonly apartMicros: 0 | 1; readonly gapMs: number }
  | { readonly kind: 'delete-row'; readonly key: string }
  | { readonly kind: 'delete-meta'; readonly key: string }
  /** The metadata row back: with its original ModifiedOn (a restore) or a new stamp. */
  | { readonly kind: 'restore-meta'; readonly key: string; readonly original: boolean }
  /** The blob and metadata rows back exactly as they were deleted (ModifiedOn and content). */
  | { readonly kind: 'undelete'; readonly key: string }
  | { readonly kind: 'reparent'; readonly key: string; readonly path: string; readonly parent: string; readonly stamp: Stamp }
  | { readonly kind: 'set-bu'; readonly key: string; readonly bu: Bu; readonly stamp: Stamp }
  | { readonly kind: 'unmap-bu'; readonly bu: Bu }
  | { readonly kind: 'map-bu'; readonly bu: Bu }
  /** A transaction that starts by reading, writes after longer than the safety buffer (at `long-commit`). */
  | { readonly kind: 'long-open'; readonly id: number }
  | { readonly kind: 'long-commit'; readonly id: number; readonly rows: readonly NewRow[] }
  /** SIGKILL a process after `afterMs` (without waiting), restart it `restartAfterMs` later. */
  | { readonly kind: 'kill'; readonly who: 'poller' | 'consumer'; readonly afterMs: number; readonly restartAfterMs: number }
  | { readonly kind: 'pause'; readonly ms: number };

export interface HistoryShape {
  /** Operations drawn (the history may hold a few more: pending folders and long transactions are completed). */
  readonly ops: number;
  /** Consumer kills at most (each costs a group session timeout). */
  readonly consumerKills: number;
  readonly pollerKills: number;
  /** Page size of the poller (batchSize), so that one-ModifiedOn inserts cross page boundaries. */
  readonly pageSize: number;
  /** inlineContentMaxBytes of the poller. */
  readonly inlineLimit: number;
  /** Safety buffer in milliseconds (late commits are drawn inside and beyond it). */
  readonly bufferMs: number;
  /** Allow contents bigger than one Kafka message (chunked). */
  readonly chunked: boolean;
}

export const SHAPES = {
  small: { ops: 28, consumerKills: 1, pollerKills: 1, pageSize: 5, inlineLimit: 256, bufferMs: 1000, chunked: false },
  large: { ops: 110, consumerKills: 2, pollerKills: 3, pageSize: 5, inlineLimit: 256, bufferMs: 1000, chunked: true },
} as const satisfies Record<string, HistoryShape>;

export type SizeName = keyof typeof SHAPES;

export interface History {
  readonly seed: number;
  readonly shape: HistoryShape;
  readonly excludedKey: string;
  readonly ops: readonly Op[];
}

interface ModelRow {
  readonly key: string;
  path: string;
  parent: string | null;
  readonly folder: boolean;
  bu: Bu;
  /** blob and meta present; false/false when deleted (restorable), blob only when its metadata row is gone. */
  blob: boolean;
  meta: boolean;
  /** Index of the last operation that wrote the row: older rows have most likely been published already. */
  writtenAt: number;
}

/** Draws the history of one seed. */
export function generateHistory(seed: number, shape: HistoryShape): History {
  return new Generator(new Prng(seed), shape).run(seed);
}

class Generator {
  private readonly rows = new Map<string, ModelRow>();
  private now = 0;
  private readonly ops: Op[] = [];
  private readonly mapped = new Set<Bu>(['A', 'B', 'C']);
  /** Folders a child already references, with the op index by which they must exist. */
  private readonly pendingFolders: { path: string; parent: string | null; bu: Bu; due: number }[] = [];
  private openLong: { id: number; due: number } | null = null;
  private nextPath = 1;
  private nextLong = 1;
  private kills = { poller: 0, consumer: 0 };
  readonly excludedKey: string;

  constructor(private readonly r: Prng, private readonly shape: HistoryShape) {
    this.excludedKey = r.uuid();
  }

  run(seed: number): History {
    // The excluded key exists from the start, so every history has it, and later operations may touch it.
    this.insert([this.flatRow('A', this.excludedKey)], { kind: 'now' }, 'excluded key');
    this.insert([this.folderRow(null, 'A')], { kind: 'now' }, 'first folder');
    for (let i = 0; i < this.shape.ops; i++) {
      this.now = i;
      this.duePending(i);
      this.step(i);
    }
    this.duePending(Number.POSITIVE_INFINITY);
    return { seed, shape: this.shape, excludedKey: this.excludedKey, ops: this.ops };
  }

  private step(i: number): void {
    const r = this.r;
    const choice = r.weighted<() => boolean>([
      [8, () => this.insertFlat()],
      [1, () => this.insertManyOnOneStamp()],
      [3, () => this.insertFolderParentFirst()],
      [2, () => this.insertChildFirst(i)],
      [3, () => this.insertChild()],
      [10, () => this.update()],
      [2, () => this.updateMany()],
      [2, () => this.sameMicrosecond()],
      [3, () => this.deleteRow()],
      [2, () => this.deleteMeta()],
      [2, () => this.restoreMeta()],
      [2, () => this.undelete()],
      [2, () => this.reparent()],
      [2, () => this.setBu()],
      [1, () => this.toggleBuC()],
      [1, () => this.longTransaction(i)],
      [1.5, () => this.kill('poller')],
      [1, () => this.kill('consumer')],
      [10, () => this.pause()],
    ]);
    if (!choice()) this.insertFlat();
  }

  // ------------------------------------------------------------------------------------------------ inserts

  private insertFlat(): boolean {
    const rows = Array.from({ length: this.r.int(1, 3) }, () => this.flatRow(this.r.pick<Bu>(['A', 'B', 'C', 'C', 'D'])));
    this.insert(rows, this.stamp(), 'flat files');
    return true;
  }

  private insertManyOnOneStamp(): boolean {
    const n = this.r.int(this.shape.pageSize * 2 + 1, this.shape.pageSize * 3 + 2);
    const rows = Array.from({ length: n }, () => this.flatRow(this.r.pick<Bu>(['A', 'B', 'C'])));
    this.insert(rows, this.r.chance(0.2) ? { kind: 'ago', ms: this.shape.bufferMs / 2 } : { kind: 'now' }, 'many rows on one ModifiedOn across pages');
    return true;
  }

  private insertFolderParentFirst(): boolean {
    const parent = this.r.chance(0.5) ? this.r.pick([null, ...this.folders().map((f) => f.path)]) : null;
    this.insert([this.folderRow(parent, this.r.pick<Bu>(['A', 'B']))], this.stamp(), 'folder, parent first');
    return true;
  }

  private insertChild(): boolean {
    const folders = this.folders();
    if (folders.length === 0) return false;
    const parent = this.r.pick(folders);
    this.insert([this.fileRow(parent.path, this.r.pick<Bu>(['A', 'B']))], this.stamp(), 'file in a folder');
    return true;
  }

  /** A file whose folder does not exist yet; the folder is inserted 1–4 operations later. */
  private insertChildFirst(i: number): boolean {
    const under = this.r.chance(0.4) && this.folders().length > 0 ? this.r.pick(this.folders()).path : null;
    const path = `${under ?? '/'}f${this.nextPath++}/`;
    const bu = this.r.pick<Bu>(['A', 'B']);
    this.pendingFolders.push({ path, parent: under, bu, due: i + this.r.int(1, 4) });
    this.insert([this.fileRow(path, this.r.pick<Bu>(['A', 'B']))], this.stamp(), 'child before its folder');
    return true;
  }

  private duePending(i: number): void {
    for (const p of this.pendingFolders.filter((f) => f.due <= i)) {
      this.pendingFolders.splice(this.pendingFolders.indexOf(p), 1);
      this.insert([{ key: this.r.uuid(), path: p.path, parent: p.parent, content: null, bu: p.bu }], this.stamp(), 'the folder of a child inserted first');
    }
    if (this.openLong && this.openLong.due <= i) {
      const rows = Array.from({ length: this.r.int(1, 3) }, () => this.flatRow(this.r.pick<Bu>(['A', 'B'])));
      this.ops.push({ kind: 'long-commit', id: this.openLong.id, rows });
      for (const row of rows) this.add(row);
      this.openLong = null;
    }
  }

  private insert(rows: readonly NewRow[], stamp: Stamp, why: string): void {
    this.ops.push({ kind: 'insert', rows, stamp, why });
    for (const row of rows) this.add(row);
  }

  private add(row: NewRow): void {
    this.rows.set(row.key, { key: row.key, path: row.path, parent: row.parent, folder: row.content === null, bu: row.bu, blob: true, meta: true, writtenAt: this.now });
  }

  // ------------------------------------------------------------------------------------------------ changes

  private update(): boolean {
    const stamp = this.r.weighted<Stamp>([[5, { kind: 'now' }], [3, { kind: 'keep' }], [1, { kind: 'null' }], [1, { kind: 'ago', ms: this.shape.bufferMs * 3 }]]);
    // A change that keeps ModifiedOn matters once the previous state has been published: prefer rows written
    // several operations ago (the pipeline has most likely read them since).
    const row = (stamp.kind === 'keep' ? this.pickLive((r) => !r.folder && r.writtenAt <= this.now - OLD_OPS) : undefined) ?? this.pickLive((r) => !r.folder);
    if (!row) return false;
    row.writtenAt = this.now;
    this.ops.push({ kind: 'update', keys: [row.key], content: this.content(), stamp, why: stamp.kind === 'keep' ? 'content change, ModifiedOn kept' : 'content change' });
    return true;
  }

  private updateMany(): boolean {
    const rows = this.liveRows((r) => !r.folder);
    if (rows.length < 2) return false;
    const keys = [...new Set(Array.from({ length: this.r.int(2, Math.min(rows.length, this.shape.pageSize * 2 + 1)) }, () => this.r.pick(rows).key))];
    this.ops.push({ kind: 'update', keys, content: this.content(), stamp: { kind: 'now' }, why: 'several rows onto one ModifiedOn' });
    return true;
  }

  private sameMicrosecond(): boolean {
    const row = this.pickLive((r) => !r.folder);
    if (!row) return false;
    row.writtenAt = this.now;
    // Back to back (the poller may read only the second) or far enough apart that the first is published first.
    const gapMs = this.r.chance(0.5) ? 0 : this.r.int(this.shape.bufferMs * 2, this.shape.bufferMs * 4);
    this.ops.push({ kind: 'same-microsecond', key: row.key, first: this.content(), second: this.content(), apartMicros: this.r.chance(0.5) ? 0 : 1, gapMs });
    return true;
  }

  private deleteRow(): boolean {
    const row = this.pickLive((r) => !r.folder) ?? this.pick((r) => !r.folder && r.blob && !r.meta);
    if (!row) return false;
    this.ops.push({ kind: 'delete-row', key: row.key });
    row.blob = false;
    row.meta = false;
    return true;
  }

  private deleteMeta(): boolean {
    const row = this.pickLive((r) => !r.folder);
    if (!row) return false;
    this.ops.push({ kind: 'delete-meta', key: row.key });
    row.meta = false;
    return true;
  }

  private restoreMeta(): boolean {
    const row = this.pick((r) => r.blob && !r.meta);
    if (!row) return false;
    this.ops.push({ kind: 'restore-meta', key: row.key, original: this.r.chance(0.6) });
    row.meta = true;
    return true;
  }

  private undelete(): boolean {
    const row = this.pick((r) => !r.blob && !r.meta);
    if (!row) return false;
    this.ops.push({ kind: 'undelete', key: row.key });
    row.blob = true;
    row.meta = true;
    return true;
  }

  /** A file (never a folder: its children would need new paths too) moved under another folder. */
  private reparent(): boolean {
    const row = this.pickLive((r) => !r.folder && r.parent !== null);
    const folders = this.folders().filter((f) => f.path !== row?.parent);
    if (!row || folders.length === 0) return false;
    const parent = this.r.pick(folders).path;
    row.parent = parent;
    row.path = `${parent}${this.nextPath++}/`;
    this.ops.push({ kind: 'reparent', key: row.key, path: row.path, parent, stamp: this.r.chance(0.7) ? { kind: 'now' } : { kind: 'keep' } });
    return true;
  }

  private setBu(): boolean {
    const row = this.pickLive((r) => !r.folder && r.parent === null && r.key !== this.excludedKey);
    if (!row) return false;
    row.bu = this.r.pick<Bu>(['A', 'B', 'C', 'D'].filter((b) => b !== row.bu) as Bu[]);
    this.ops.push({ kind: 'set-bu', key: row.key, bu: row.bu, stamp: this.r.chance(0.7) ? { kind: 'now' } : { kind: 'keep' } });
    return true;
  }

  private toggleBuC(): boolean {
    if (this.mapped.has('C')) {
      this.mapped.delete('C');
      this.ops.push({ kind: 'unmap-bu', bu: 'C' });
    } else {
      this.mapped.add('C');
      this.ops.push({ kind: 'map-bu', bu: 'C' });
    }
    return true;
  }

  private longTransaction(i: number): boolean {
    if (this.openLong) return false;
    this.openLong = { id: this.nextLong++, due: i + this.r.int(2, 6) };
    this.ops.push({ kind: 'long-open', id: this.openLong.id });
    return true;
  }

  private kill(who: 'poller' | 'consumer'): boolean {
    const cap = who === 'poller' ? this.shape.pollerKills : this.shape.consumerKills;
    if (this.kills[who] >= cap) return false;
    this.kills[who]++;
    this.ops.push({ kind: 'kill', who, afterMs: this.r.int(0, 1500), restartAfterMs: this.r.int(0, 1000) });
    return true;
  }

  private pause(): boolean {
    this.ops.push({ kind: 'pause', ms: this.r.int(200, 2000) });
    return true;
  }

  // ------------------------------------------------------------------------------------------------ drawing

  /** Mostly the clock; sometimes NULL, or a late commit inside or beyond the safety buffer. */
  private stamp(): Stamp {
    return this.r.weighted<Stamp>([
      [12, { kind: 'now' }],
      [2, { kind: 'null' }],
      [2, { kind: 'ago', ms: Math.round(this.shape.bufferMs / 2) }],
      [2, { kind: 'ago', ms: this.shape.bufferMs * 3 }],
    ]);
  }

  /** Sizes around the inline limit, empty, larger, and (rarely) bigger than one Kafka message. */
  private content(): Content {
    const limit = this.shape.inlineLimit;
    const size = this.r.weighted<() => number>([
      [1, () => 0],
      [6, () => this.r.int(1, limit - 1)],
      [3, () => limit],
      [3, () => limit + 1],
      [3, () => this.r.int(limit + 2, limit * 16)],
      [this.shape.chunked ? 1 : 0, () => this.r.int(70_000, 150_000)],
    ])();
    return { size, fill: this.r.int(1, 2 ** 31) };
  }

  private flatRow(bu: Bu, key = this.r.uuid()): NewRow {
    return { key, path: `/${this.nextPath++}/`, parent: null, content: this.content(), bu };
  }

  private fileRow(parent: string, bu: Bu): NewRow {
    return { key: this.r.uuid(), path: `${parent}${this.nextPath++}/`, parent, content: this.content(), bu };
  }

  private folderRow(parent: string | null, bu: Bu): NewRow {
    return { key: this.r.uuid(), path: `${parent ?? '/'}f${this.nextPath++}/`, parent, content: null, bu };
  }

  private folders(): ModelRow[] {
    return [...this.rows.values()].filter((r) => r.folder);
  }

  private liveRows(filter: (r: ModelRow) => boolean): ModelRow[] {
    return [...this.rows.values()].filter((r) => r.blob && r.meta && filter(r));
  }

  private pickLive(filter: (r: ModelRow) => boolean): ModelRow | undefined {
    return this.pick((r) => r.blob && r.meta && filter(r));
  }

  private pick(filter: (r: ModelRow) => boolean): ModelRow | undefined {
    const candidates = [...this.rows.values()].filter(filter);
    return candidates.length === 0 ? undefined : this.r.pick(candidates);
  }
}

/** One line per operation, for logs and for reading a failing seed. */
export function describeOp(op: Op): string {
  const k = (key: string) => key.slice(0, 8);
  const st = (s: Stamp) => (s.kind === 'ago' ? `ago ${s.ms}ms` : s.kind);
  switch (op.kind) {
    case 'insert': return `insert ${op.rows.length} (${op.why}; ModifiedOn ${st(op.stamp)}): ${op.rows.map((r) => `${k(r.key)}@${r.path}${r.content ? ` ${r.content.size}B` : ' dir'} ${r.bu}`).join(', ')}`;
    case 'update': return `update ${op.keys.map(k).join(',')} (${op.why}; ModifiedOn ${st(op.stamp)}) ${op.content?.size ?? 'dir'}B`;
    case 'same-microsecond': return `two versions of ${k(op.key)} ${op.apartMicros} µs apart, committed ${op.gapMs} ms apart (${op.first.size}B, ${op.second.size}B)`;
    case 'delete-row': return `delete ${k(op.key)} (blob and metadata rows)`;
    case 'delete-meta': return `delete the metadata row of ${k(op.key)}`;
    case 'restore-meta': return `restore the metadata row of ${k(op.key)} (${op.original ? 'original ModifiedOn' : 'new ModifiedOn'})`;
    case 'undelete': return `undelete ${k(op.key)} with its original ModifiedOn and content`;
    case 'reparent': return `move ${k(op.key)} to ${op.path} (ModifiedOn ${st(op.stamp)})`;
    case 'set-bu': return `move ${k(op.key)} to BU ${op.bu} (ModifiedOn ${st(op.stamp)})`;
    case 'unmap-bu': return `BU ${op.bu} leaves the mapping`;
    case 'map-bu': return `BU ${op.bu} comes back to the mapping`;
    case 'long-open': return `long transaction ${op.id} starts by reading`;
    case 'long-commit': return `long transaction ${op.id} writes ${op.rows.map((r) => k(r.key)).join(',')} and commits`;
    case 'kill': return `SIGKILL the ${op.who} in ${op.afterMs} ms, restart ${op.restartAfterMs} ms later`;
    case 'pause': return `pause ${op.ms} ms`;
  }
}
