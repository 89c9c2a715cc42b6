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

/** Returns a readable reason when the change is not acceptable, or null when it is. */
export function invalidChangeReason(change: BlobChange): string | null {
  const result = blobChangeValidator.safeParse(change);
  if (result.success) return null;
  return result.error.issues.map((i) => `${i.path.join('.') || 'event'}: ${i.message}`).join('; ');
}
