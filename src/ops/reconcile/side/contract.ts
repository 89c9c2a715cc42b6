import type { Ticks } from '../../../contract.js';
import type { ScopeFilter, SourceTableSpec } from '../../../poll/source/connector.js';

/**
 * What an engine gives reconciliation (src/ops/reconcile/reconcile.ts, which holds the vocabulary: bucket, cell,
 * line, digest, content scope): per side, pure builders of its statements and parsers of their rows. A source
 * engine reads the poller's set of rows (connectors/<engine>/reconcile.ts), a target engine one tenant of its
 * table (consumers/<engine>/reconcile.ts); the composition root (src/wiring.ts) picks them by database kind.
 */

/** Prefix length of the first comparison (256 buckets for hex keys) and of content-sample ranges. */
export const TOP_PREFIX_LENGTH = 2;

export type ContentScope =
  | { readonly kind: 'all' }
  | { readonly kind: 'sample'; readonly fraction: number; readonly prefixes: readonly string[] };

/** One bucket of one business unit on one side. */
export interface Cell {
  readonly businessUnit: string | null;
  readonly bucket: string;
  readonly rows: number;
  readonly latest: Ticks | null;
  readonly digest: string;
}

/** One row's version: `contentSha256` is hex, `-` for no content, or null when its content is not checked. */
export interface RowVersion {
  readonly key: string;
  readonly businessUnit: string | null;
  readonly modifiedOn: Ticks;
  readonly contentSha256: string | null;
}

/** One orphan row, with the number of orphans of its business unit. */
export interface OrphanRow {
  readonly businessUnit: string | null;
  readonly key: string;
  readonly total: number;
}

export interface SummaryRequest {
  readonly prefixLength: number;
  /** Only buckets of these prefixes (each `prefixLength - 1` long), or every row. */
  readonly within: readonly string[] | null;
  readonly content: ContentScope;
}

export interface RowsRequest {
  readonly prefixLength: number;
  /** Buckets of exactly `prefixLength` characters. */
  readonly buckets: readonly string[];
  readonly content: ContentScope;
}

/** What reconciliation reads from one side, as statements of that side's engine (pure builders and parsers). */
export interface SideQueries<S> {
  readonly describe: string;
  summary(request: SummaryRequest): S;
  rows(request: RowsRequest): S;
  /** Up to `examples` orphans per business unit (at least one, so the total is always known). */
  orphans(examples: number): S;
  toCell(raw: Record<string, unknown>): Cell;
  toRow(raw: Record<string, unknown>): RowVersion;
  toOrphan(raw: Record<string, unknown>): OrphanRow;
}

/** The target table of one configured table (its SQL name comes from the target dialect's targetTableName). */
export interface TargetTableRef {
  readonly schema: string;
  readonly table: string;
}

/** A source engine's reconciliation queries over the rows the poller reads. */
export type SourceSideQueries<S> = (spec: SourceTableSpec, scope: ScopeFilter) => SideQueries<S>;

/** A target engine's reconciliation queries over one tenant's rows of its table. */
export type TargetSideQueries<S> = (table: TargetTableRef, tenant: string) => SideQueries<S>;
