import { describe, expect, it } from 'vitest';
import {
  COPY_BINARY_HEADER, COPY_BINARY_TRAILER, CopyBinaryEncoder, encodeCopyBinary, encodeCopyBinaryToBuffer, type CopyColumn,
} from '../../consumers/postgres/copy-binary.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('binary COPY encoding', () => {
  it('starts with the PGCOPY signature, zero flags and no header extension, and ends with -1', () => {
    const bytes = encodeCopyBinaryToBuffer([{ name: 'a', type: 'int4' }], []);
    expect(bytes).toEqual(hex('5047434f50590aff0d0a00 00000000 00000000 ffff'));
    expect(COPY_BINARY_HEADER.length).toBe(19);
    expect(COPY_BINARY_TRAILER).toEqual(hex('ffff'));
  });

  it('encodes a known tuple field by field in network byte order', () => {
    const columns: CopyColumn[] = [
      { name: 'n', type: 'int4' },
      { name: 's', type: 'text' },
      { name: 'b', type: 'bool' },
      { name: 't', type: 'int8' },
      { name: 'c', type: 'bytea' },
      { name: 'z', type: 'text' },
      { name: 'h', type: 'int2' },
    ];
    const bytes = encodeCopyBinaryToBuffer(columns, [[258, 'hé', true, -2n, Buffer.from([0x00, 0x5c, 0xff]), null, -1]]);
    expect(bytes).toEqual(Buffer.concat([
      COPY_BINARY_HEADER,
      hex('0007'), // field count
      hex('00000004 00000102'), // int4 258
      hex('00000003 68c3a9'), // text 'hé' as UTF-8 (3 bytes)
      hex('00000001 01'), // bool true
      hex('00000008 fffffffffffffffe'), // int8 -2
      hex('00000003 005cff'), // bytea as raw bytes, not hex text
      hex('ffffffff'), // NULL
      hex('00000002 ffff'), // int2 -1
      COPY_BINARY_TRAILER,
    ]));
  });

  it('keeps bigint ticks beyond 2^53 exact', () => {
    const ticks = 2n ** 53n + 1n;
    const bytes = encodeCopyBinaryToBuffer([{ name: 'ticks', type: 'int8' }], [[ticks], [2n ** 63n - 1n]]);
    const body = bytes.subarray(COPY_BINARY_HEADER.length);
    expect(body.readInt16BE(0)).toBe(1);
    expect(body.readInt32BE(2)).toBe(8);
    expect(body.readBigInt64BE(6)).toBe(ticks);
    expect(body.subarray(6, 14)).toEqual(hex('0020000000000001'));
    expect(body.readBigInt64BE(20)).toBe(2n ** 63n - 1n);
  });

  it('writes NULL as length -1 for every type', () => {
    const types = ['bool', 'int2', 'int4', 'int8', 'text', 'bytea'] as const;
    const columns = types.map((type) => ({ name: type, type }));
    const bytes = encodeCopyBinaryToBuffer(columns, [types.map(() => null)]);
    expect(bytes.subarray(COPY_BINARY_HEADER.length, -2)).toEqual(Buffer.concat([hex('0006'), ...types.map(() => hex('ffffffff'))]));
  });

  it('passes large bytea values through as their own chunk, uncopied', () => {
    const blob = Buffer.alloc(1 << 20, 0xab);
    const chunks = [...encodeCopyBinary([{ name: 'k', type: 'text' }, { name: 'c', type: 'bytea' }], [['k1', blob], ['k2', Buffer.from('x')]])];
    expect(chunks.some((c) => c === blob)).toBe(true);
    const all = Buffer.concat(chunks);
    expect(all.length).toBe(19 + (2 + 4 + 2 + 4 + blob.length) + (2 + 4 + 2 + 4 + 1) + 2);
    expect(all.includes(Buffer.from('abababab', 'hex'))).toBe(true);
    expect(all.includes(Buffer.from('abababab', 'utf8'))).toBe(false);
  });

  it('cuts the stream into chunks of about the configured size without changing the bytes', () => {
    const columns: CopyColumn[] = [{ name: 'k', type: 'text' }, { name: 'n', type: 'int8' }, { name: 'c', type: 'bytea' }];
    const rows = Array.from({ length: 500 }, (_, i) => [`key-${i}-ü`, BigInt(i) * 2n ** 40n, Buffer.alloc(i % 200, i % 256)]);
    const chunks = [...encodeCopyBinary(columns, rows, { chunkBytes: 4096, passThroughBytes: 1 << 20 })];
    expect(chunks.length).toBeGreaterThan(10);
    for (const chunk of chunks) expect(chunk.length).toBeLessThanOrEqual(4096);
    expect(Buffer.concat(chunks).equals(encodeCopyBinaryToBuffer(columns, rows))).toBe(true);
  });

  it('refuses values that do not fit their column, naming it', () => {
    const encode = (column: CopyColumn, value: unknown) => () =>
      encodeCopyBinaryToBuffer([column], [[value as never]]);
    expect(encode({ name: 'ticks', type: 'int8' }, 2 ** 60)).toThrow(/ticks \(int8\)/);
    expect(encode({ name: 'ticks', type: 'int8' }, 2n ** 63n)).toThrow(RangeError);
    expect(encode({ name: 'size', type: 'int4' }, 1.5)).toThrow(/size \(int4\) expects an integer/);
    expect(encode({ name: 'p', type: 'int4' }, 2 ** 31)).toThrow(RangeError);
    expect(encode({ name: 'flag', type: 'bool' }, 1)).toThrow(TypeError);
    expect(encode({ name: 'name', type: 'text' }, Buffer.from('x'))).toThrow(TypeError);
    expect(encode({ name: 'content', type: 'bytea' }, 'x')).toThrow(TypeError);
    expect(() => new CopyBinaryEncoder([{ name: 'a', type: 'int4' }]).row([1, 2])).toThrow(/2 values for 1 columns/);
  });
});
