import { setTimeout as delay } from 'node:timers/promises';
import { coerceError, isRetriable } from './errors.js';

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  readonly attempts: number;
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  /** 0..1: how much of each delay is random, so that many workers do not retry in step. */
  readonly jitter: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 8, initialDelayMs: 250, maxDelayMs: 30_000, jitter: 0.2 };

export interface RetryHooks {
  /** Called before each wait; an observer must not break the retry, so its errors are swallowed and logged by the caller. */
  onRetry?: (info: { attempt: number; delayMs: number; error: Error }) => void;
  /** Decides what may be retried; by default the classification of `HighwaterError`. */
  retriable?: (error: unknown) => boolean;
  signal?: AbortSignal;
  random?: () => number;
}

/** Exponential backoff delay for the given attempt (1-based), capped, with jitter. Pure. */
export function backoffDelay(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 1));
  const spread = base * policy.jitter;
  return Math.max(0, Math.round(base - spread + random() * 2 * spread));
}

/**
 * Runs `task` until it succeeds, gives up at once on an error that is not retriable, or runs out of attempts;
 * then throws the last error (classified by whoever threw it).
 */
export async function withRetry<T>(task: (attempt: number) => Promise<T>, policy: RetryPolicy = DEFAULT_RETRY, hooks: RetryHooks = {}): Promise<T> {
  const retriable = hooks.retriable ?? isRetriable;
  for (let attempt = 1; ; attempt++) {
    try {
      return await task(attempt);
    } catch (thrown) {
      if (attempt >= policy.attempts || !retriable(thrown) || hooks.signal?.aborted) throw thrown;
      const delayMs = backoffDelay(policy, attempt, hooks.random);
      safeCall(() => hooks.onRetry?.({ attempt, delayMs, error: coerceError(thrown) }));
      await sleep(delayMs, hooks.signal);
    }
  }
}

function safeCall(fn: () => void): void {
  try {
    fn();
  } catch {
    // An observer's failure must never turn a retriable error into a fatal one.
  }
}

/**
 * Waits `ms`, or less when `signal` aborts (then it resolves: the caller looks at the signal). node:timers/promises
 * removes its abort listener when the timer fires, so waiting often on one long-lived signal leaks nothing.
 */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return;
  try {
    await delay(ms, undefined, signal === undefined ? undefined : { signal });
  } catch (thrown) {
    if (!signal?.aborted) throw thrown;
  }
}
