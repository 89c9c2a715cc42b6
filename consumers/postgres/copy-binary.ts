/**
 * PostgreSQL binary COPY encoding (`COPY … FROM STDIN (FORMAT binary)`), pure and streaming.
 *
 * Layout: the 11-byte signature `PGCOPY\n\xff\r\n\0`, an int32 flags field (0: no OIDs), an int32 header-extension
 * length (0); then per tuple an int16 field count and, per field, an int32 byte length (-1 for NULL) followed by the
 * value in the type's binary send format, all in network byte order; finally the int16 trailer -1.
 *
 * Bytes go out as bytes (never hex), int8 as 8 big-endian bytes from a bigint (exact beyond 2^53). Output is cut
 * into chunks of about `chunkBytes`; a value at least `passThroughBytes` long is emitted as its own chunk without
 * being copied, so a 1 MiB blob costs one socket write and no extra memory.
 */

export type CopyType = 'bool' | 'int2' | 'int4' | 'int8' | 'text' | 'bytea';
export type CopyValue = boolean | number | bigint | string | Uint8Array | null;

export interface CopyColumn {
  readonly name: string;
  readonly type: CopyType;
}

export interface CopyEncodeOptions {
  /** Target size of the chunks handed to the stream. Default 1 MiB. */
  readonly chunkBytes?: number;
  /** Values at least this long are passed through as their own chunk instead of being copied. Default 64 KiB. */
  readonly passThroughBytes?: number;
}

export const DEFAULT_CHUNK_BYTES = 1 << 20;
export const DEFAULT_PASS_THROUGH_BYTES = 64 << 10;

/** `PGCOPY\n\xff\r\n\0` */
export const COPY_BINARY_SIGNATURE: Buffer = Buffer.from([0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00]);
/** Signature, flags 0, header extension length 0. */
export const COPY_BINARY_HEADER: Buffer = Buffer.concat([COPY_BINARY_SIGNATURE, Buffer.alloc(8)]);
/** A field count of -1 ends the data. */
export const COPY_BINARY_TRAILER: Buffer = Buffer.from([0xff, 0xff]);

const INT8_MIN = -(2n ** 63n);
const INT8_MAX = 2n ** 63n - 1n;
const FIXED_WIDTH: Partial<Record<CopyType, number>> = { bool: 1, int2: 2, int4: 4, int8: 8 };

/**
 * Accumulates tuples into chunks. Call `row()` per tuple, `take()` to collect the finished chunks (bounded by
 * `chunkBytes` plus pass-through values), and `finish()` once to write the trailer.
 */
export class CopyBinaryEncoder {
  readonly #columns: readonly CopyColumn[];
  readonly #chunkBytes: number;
  readonly #passThroughBytes: number;
  #buf: Buffer;
  #pos = 0;
  #ready: Buffer[] = [];
  #finished = false;

  constructor(columns: readonly CopyColumn[], options: CopyEncodeOptions = {}) {
    if (columns.length === 0 || columns.length > 0x7fff) throw new RangeError(`binary COPY needs 1..32767 columns, got ${columns.length}`);
    this.#columns = columns;
    this.#chunkBytes = Math.max(64, options.chunkBytes ?? DEFAULT_CHUNK_BYTES);
    this.#passThroughBytes = Math.max(1, options.passThroughBytes ?? DEFAULT_PASS_THROUGH_BYTES);
    this.#buf = Buffer.allocUnsafe(this.#chunkBytes);
    this.#copy(COPY_BINARY_HEADER);
  }

  /** Encodes one tuple; throws TypeError/RangeError naming the column when a value does not fit its type. */
  row(values: readonly CopyValue[]): void {
    if (this.#finished) throw new Error('the COPY encoder is finished');
    if (values.length !== this.#columns.length) {
      throw new RangeError(`a tuple has ${values.length} values for ${this.#columns.length} columns`);
    }
    this.#room(2);
    this.#pos = this.#buf.writeInt16BE(values.length, this.#pos);
    this.#columns.forEach((column, i) => this.#field(column, values[i] ?? null));
  }

  /** Writes the trailer; `take()` then returns the last chunks. */
  finish(): void {
    if (this.#finished) return;
    this.#copy(COPY_BINARY_TRAILER);
    this.#flush();
    this.#finished = true;
  }

  /** The chunks completed since the last call. */
  take(): Buffer[] {
    const ready = this.#ready;
    this.#ready = [];
    return ready;
  }

  #field(column: CopyColumn, value: CopyValue): void {
    if (value === null) return this.#int32(-1);
    const width = FIXED_WIDTH[column.type];
    if (width !== undefined) {
      this.#room(4 + width);
      this.#pos = this.#buf.writeInt32BE(width, this.#pos);
      this.#pos = writeFixed(this.#buf, this.#pos, column, value);
      return;
    }
    if (column.type === 'text') return this.#text(column, value);
    if (!(value instanceof Uint8Array)) throw mismatch(column, value, 'a Buffer');
    this.#bytes(value);
  }

  #text(column: CopyColumn, value: CopyValue): void {
    if (typeof value !== 'string') throw mismatch(column, value, 'a string');
    const length = Buffer.byteLength(value, 'utf8');
    if (length >= this.#passThroughBytes) return this.#bytes(Buffer.from(value, 'utf8'));
    this.#int32(length);
    this.#room(length);
    this.#pos += this.#buf.write(value, this.#pos, length, 'utf8');
  }

  #bytes(value: Uint8Array): void {
    this.#int32(value.length);
    if (value.length < this.#passThroughBytes) return this.#copy(value);
    this.#flush();
    this.#ready.push(Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.length));
  }

  #int32(n: number): void {
    this.#room(4);
    this.#pos = this.#buf.writeInt32BE(n, this.#pos);
  }

  #copy(bytes: Uint8Array): void {
    let offset = 0;
    while (offset < bytes.length) {
      if (this.#pos === this.#buf.length) this.#flush();
      const n = Math.min(bytes.length - offset, this.#buf.length - this.#pos);
      this.#buf.set(bytes.subarray(offset, offset + n), this.#pos);
      this.#pos += n;
      offset += n;
    }
  }

  /** Makes `n` contiguous bytes available (n is small: a length or a fixed-width value). */
  #room(n: number): void {
    if (this.#pos + n > this.#buf.length) this.#flush();
  }

  #flush(): void {
    if (this.#pos === 0) return;
    this.#ready.push(this.#buf.subarray(0, this.#pos));
    this.#buf = Buffer.allocUnsafe(this.#chunkBytes);
    this.#pos = 0;
  }
}

function writeFixed(buf: Buffer, pos: number, column: CopyColumn, value: CopyValue): number {
  switch (column.type) {
    case 'bool':
      if (typeof value !== 'boolean') throw mismatch(column, value, 'a boolean');
      return buf.writeUInt8(value ? 1 : 0, pos);
    case 'int2':
      return buf.writeInt16BE(integer(column, value, 0x7fff), pos);
    case 'int4':
      return buf.writeInt32BE(integer(column, value, 0x7fffffff), pos);
    default:
      return buf.writeBigInt64BE(int8(column, value), pos);
  }
}

function integer(column: CopyColumn, value: CopyValue, max: number): number {
  const n = typeof value === 'bigint' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw mismatch(column, value, 'an integer');
  if (n > max || n < -max - 1) throw new RangeError(`column ${column.name} (${column.type}): ${n} is out of range`);
  return n;
}

function int8(column: CopyColumn, value: CopyValue): bigint {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) throw mismatch(column, value, 'a bigint or a safe integer');
  if (typeof value !== 'bigint' && typeof value !== 'number') throw mismatch(column, value, 'a bigint');
  const n = BigInt(value);
  if (n < INT8_MIN || n > INT8_MAX) throw new RangeError(`column ${column.name} (int8): ${n} is out of range`);
  return n;
}

function mismatch(column: CopyColumn, value: CopyValue, expected: string): TypeError {
  const got = value instanceof Uint8Array ? 'bytes' : typeof value === 'number' ? String(value) : typeof value;
  return new TypeError(`column ${column.name} (${column.type}) expects ${expected}, got ${got}`);
}

/** Encodes every row, yielding chunks as they fill: the source for `pipeline(…, copyStream)`. */
export function* encodeCopyBinary(
  columns: readonly CopyColumn[],
  rows: Iterable<readonly CopyValue[]>,
  options?: CopyEncodeOptions,
): Generator<Buffer> {
  const encoder = new CopyBinaryEncoder(columns, options);
  for (const row of rows) {
    encoder.row(row);
    yield* encoder.take();
  }
  encoder.finish();
  yield* encoder.take();
}

/** The whole COPY payload in one buffer (tests, small payloads). */
export function encodeCopyBinaryToBuffer(columns: readonly CopyColumn[], rows: Iterable<readonly CopyValue[]>): Buffer {
  return Buffer.concat([...encodeCopyBinary(columns, rows)]);
}
