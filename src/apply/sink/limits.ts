/**
 * The largest content each target engine stores in one value, with room to spare: PostgreSQL's bytea (and the
 * string_agg that assembles chunks) stops at 1 GiB − 1 byte; SQL Server's varbinary(max) at 2 GiB − 1 byte.
 * The poller's default poll.maxBlobBytes is the smallest of these, and a configuration that lets larger blobs reach
 * a configured target of that engine is refused. Consumers dead-letter anything larger instead of failing a batch.
 */
export const MAX_CONTENT_BYTES = {
  postgres: 1023 * 1024 * 1024,
  sqlserver: 2047 * 1024 * 1024,
} as const satisfies Record<'postgres' | 'sqlserver', number>;
