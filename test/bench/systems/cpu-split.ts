import type { BenchContext } from '../context.js';
import type { CpuSplit } from '../env/cpu.js';
import type { Stage, SystemId, WorkloadId } from '../model.js';

/**
 * A timed stage's CPU, as observations: how busy the machine's cores were over the stage's window, and the CPU each
 * party spent per row (µs of one core): all processes together, PostgreSQL, the broker, each of the stage's own
 * processes, this benchmark process, the kernel's interrupt handling (the loopback network), and the rest. With every core busy, a stage's rate is the cores divided by its CPU per row;
 * those figures say whose CPU a faster stage would have to save.
 */

export interface StageWindow {
  readonly startMs: number;
  readonly endMs: number;
  readonly rows: number;
  /** The stage's own child processes, by the name its lines use (poll, consume, rebuild). */
  readonly processes?: readonly { readonly name: string; readonly pid: number }[];
}

export async function observeCpu(ctx: BenchContext, w: WorkloadId, system: SystemId, stage: Stage, rep: number, window: StageWindow): Promise<void> {
  if (ctx.cpu === null || !(window.endMs > window.startMs) || window.rows <= 0) return;
  ctx.cpu.now();
  const split = ctx.cpu.between(window.startMs, window.endMs);
  for (const { name, value, unit } of cpuObservations(split, stage, window)) ctx.collect.observe(w, system, rep, name, value, unit);
}

/** The observations of one window's split. Pure. */
export function cpuObservations(split: CpuSplit, stage: Stage, window: StageWindow): { name: string; value: number; unit: string }[] {
  const perRow = (seconds: number): number => Math.round((seconds * 1e6) / window.rows);
  const out = [
    { name: `cpu (${stage}): machine busy`, value: Math.round((100 * split.machine) / (split.seconds * split.cores)), unit: '% of cores' },
    { name: `cpu/row (${stage}): all processes`, value: perRow(split.machine), unit: 'µs' },
    { name: `cpu/row (${stage}): postgres`, value: perRow(split.postgres), unit: 'µs' },
    { name: `cpu/row (${stage}): kafka broker`, value: perRow(split.broker), unit: 'µs' },
  ];
  let known = split.postgres + split.broker + split.bench + split.interrupts;
  for (const p of window.processes ?? []) {
    const own = split.children.get(p.pid) ?? 0;
    known += own;
    out.push({ name: `cpu/row (${stage}): ${p.name} process`, value: perRow(own), unit: 'µs' });
  }
  out.push({ name: `cpu/row (${stage}): bench process`, value: perRow(split.bench), unit: 'µs' });
  out.push({ name: `cpu/row (${stage}): kernel interrupts`, value: perRow(split.interrupts), unit: 'µs' });
  // Anything else that ran meanwhile (another job on the machine, the kernel's own threads): noise to read the rest by.
  out.push({ name: `cpu/row (${stage}): other processes`, value: perRow(Math.max(0, split.machine - known)), unit: 'µs' });
  return out;
}
