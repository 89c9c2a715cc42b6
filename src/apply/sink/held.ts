import type { BlobChange, Ticks } from '../../contract.js';

/**
 * Held children (hw_held, the target's holding table for children whose parent has not arrived) as changes again,
 * the same way for every engine: for the dead-letter topic when a parent never comes. Pure.
 */

type Row = Readonly<Record<string, unknown>>;

function ticks(v: unknown): Ticks | null {
  return v === null || v === undefined ? null : BigInt(String(v));
}

function bool(v: unknown): boolean | null {
  return v === null || v === undefined ? null : v === true || v === 1 || v === '1' || v === 't';
}

function text(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}

/** A row of hw_held (target column names) as the change it was held from; content travels inline. */
export function changeFromHeldRow(table: string, r: Row): BlobChange {
  const modifiedOn = ticks(r.modified_on_ticks);
  const observed = ticks(r.observed_ticks) ?? modifiedOn ?? 0n;
  const at = modifiedOn ?? observed;
  const bytes = r.content === null || r.content === undefined ? null : Buffer.from(r.content as Uint8Array);
  return {
    table,
    tenant: String(r.tenant),
    key: String(r.key),
    name: text(r.name),
    pathLocator: text(r.path_locator),
    parentPathLocator: text(r.parent_path_locator),
    isDirectory: bool(r.is_directory) ?? false,
    size: r.size === null || r.size === undefined ? null : Number(r.size),
    attributes: {
      creationTime: ticks(r.creation_time_ticks), lastWriteTime: ticks(r.last_write_time_ticks), lastAccessTime: ticks(r.last_access_time_ticks),
      isReadonly: bool(r.is_readonly), isHidden: bool(r.is_hidden), isSystem: bool(r.is_system), isArchive: bool(r.is_archive),
    },
    modifiedOn,
    observed,
    businessUnit: text(r.business_unit),
    content: bytes === null ? { kind: 'none' } : { kind: 'inline', bytes },
    contentSha256: r.content_sha256 === null || r.content_sha256 === undefined ? null : Buffer.from(r.content_sha256 as Uint8Array),
    runId: text(r.run_id) ?? '',
    window: { start: at, end: at },
  };
}
