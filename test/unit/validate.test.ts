import { describe, expect, it } from 'vitest';
import type { BlobChange } from '../../src/contract.js';
import { blobChangeValidator, invalidChangeReason, plainlyValid } from '../../src/events/validate.js';

const bytes = Buffer.from('hello');
const sha = Buffer.alloc(32, 7);
const good: BlobChange = {
  table: 'docs', tenant: '', key: 'k1', name: 'a.txt', pathLocator: '/1/', parentPathLocator: null, isDirectory: false,
  size: bytes.length, attributes: {} as BlobChange['attributes'], modifiedOn: 10n, observed: 11n, businessUnit: null,
  content: { kind: 'inline', bytes }, contentSha256: sha, runId: 'r', window: { start: 0n, end: 20n },
};

/** Changes the validator refuses, each by one field; and a few it accepts that the plain checks leave to it. */
const variants: [string, Partial<Record<keyof BlobChange, unknown>>][] = [
  ['empty table', { table: '' }],
  ['empty key', { key: '' }],
  ['NUL key', { key: '\u0000x' }],
  ['number modifiedOn', { modifiedOn: 10 }],
  ['null modifiedOn', { modifiedOn: null }],
  ['number observed', { observed: 11 }],
  ['negative size', { size: -1 }],
  ['fractional size', { size: 1.5 }],
  ['null size', { size: null }],
  ['short hash', { contentSha256: Buffer.alloc(31) }],
  ['no hash with content', { contentSha256: null }],
  ['no hash without content', { contentSha256: null, content: { kind: 'none' }, size: null }],
  ['size mismatch', { size: 4 }],
  ['window not ticks', { window: { start: 0, end: 20n } }],
  ['no window', { window: null }],
  ['chunked', { content: { kind: 'chunked', chunkCount: 2, chunkSize: 4, totalSize: 5 } }],
];

describe('change validation', () => {
  it('accepts a valid change without the validator, with the same verdict', () => {
    expect(plainlyValid(good)).toBe(true);
    expect(blobChangeValidator.safeParse(good).success).toBe(true);
    expect(invalidChangeReason(good)).toBeNull();
  });

  it.each(variants)('never accepts what the validator refuses: %s', (_, over) => {
    const change = { ...good, ...over } as unknown as BlobChange;
    const zodAccepts = blobChangeValidator.safeParse(change).success;
    if (plainlyValid(change)) expect(zodAccepts).toBe(true);
    expect(invalidChangeReason(change) === null).toBe(zodAccepts);
  });

  it('still gives the reason of a refused change', () => {
    expect(invalidChangeReason({ ...good, key: '\u0000x' })).toContain('must not start with NUL');
    expect(invalidChangeReason({ ...good, size: 4 })).toContain('inline content has 5 bytes but size says 4');
  });
});
