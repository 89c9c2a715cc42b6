import { z } from 'zod';
import type { BlobChange } from '../contract.js';

/**
 * Checks on a decoded event that Avro's types cannot express. A record that fails them is poison: it goes to the
 * dead-letter topic with these messages rather than into a target.
 */

// Ticks before 1970 are negative and legitimate: the default baseline is 1900, datetime2 starts at year 1.
const ticks = z.bigint();
const sha256 = z.instanceof(Buffer).refine((b) => b.length === 32, 'must be 32 bytes');

export const blobChangeValidator = z.object({
  table: z.string().min(1),
  key: z.string().min(1).refine((k) => !k.startsWith('\u0000'), 'must not start with NUL'),
  modifiedOn: ticks.nullable(),
  observed: ticks,
  size: z.number().int().min(0).nullable(),
  contentSha256: sha256.nullable(),
  window: z.object({ start: ticks, end: ticks }),
}).passthrough().superRefine((c, ctx) => {
  const change = c as unknown as BlobChange;
  if (change.content.kind === 'inline' && change.size !== null && change.content.bytes.length !== change.size) {
    ctx.addIssue({ code: 'custom', path: ['content'], message: `inline content has ${change.content.bytes.length} bytes but size says ${change.size}` });
  }
  if (change.content.kind !== 'none' && change.contentSha256 === null) {
    ctx.addIssue({ code: 'custom', path: ['contentSha256'], message: 'content without a hash' });
  }
});

/**
 * Returns a readable reason when the change is not acceptable, or null when it is. Every record of a table topic
 * passes here: the plain checks of `plainlyValid` accept the usual event without zod's copy of it; whatever they
 * do not accept (they are never more lenient than the validator) is decided, and explained, by the validator.
 */
export function invalidChangeReason(change: BlobChange): string | null {
  if (plainlyValid(change)) return null;
  const result = blobChangeValidator.safeParse(change);
  if (result.success) return null;
  return result.error.issues.map((i) => `${i.path.join('.') || 'event'}: ${i.message}`).join('; ');
}

/**
 * True only for a change `blobChangeValidator` accepts: each of its checks, written out (stricter where that is
 * simpler: a size must be a safe integer). False does not mean invalid, only that the validator must look. Pure.
 */
export function plainlyValid(change: BlobChange): boolean {
  const c = change as unknown as Record<string, unknown>;
  if (typeof c !== 'object' || c === null) return false;
  if (typeof c.table !== 'string' || c.table.length === 0) return false;
  if (typeof c.key !== 'string' || c.key.length === 0 || c.key.startsWith('\u0000')) return false;
  if (c.modifiedOn !== null && typeof c.modifiedOn !== 'bigint') return false;
  if (typeof c.observed !== 'bigint') return false;
  if (c.size !== null && !(typeof c.size === 'number' && Number.isSafeInteger(c.size) && c.size >= 0)) return false;
  if (c.contentSha256 !== null && !(c.contentSha256 instanceof Buffer && c.contentSha256.length === 32)) return false;
  const w = c.window as Record<string, unknown> | null | undefined;
  if (typeof w !== 'object' || w === null || typeof w.start !== 'bigint' || typeof w.end !== 'bigint') return false;
  const content = change.content as BlobChange['content'] | undefined;
  if (typeof content !== 'object' || content === null) return false;
  if (content.kind === 'inline' && change.size !== null && !(content.bytes instanceof Buffer && content.bytes.length === change.size)) return false;
  if (content.kind !== 'none' && change.contentSha256 === null) return false;
  return true;
}
