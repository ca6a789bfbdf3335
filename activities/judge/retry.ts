/**
 * Our retry policy for judge calls. The openai client's own retries are switched off
 * (maxRetries: 0) so that this is the only policy in play: one place that decides what is
 * retried, how long to wait, and that a cancelled activity stops waiting at once.
 */
import { APIConnectionError, APIError, APIUserAbortError } from 'openai';

export interface BackoffOptions {
  /** First retry waits up to this (full jitter), doubling per attempt. */
  baseMs: number;
  /** Cap on one computed wait, so a long outage is polled rather than slept through. */
  maxMs: number;
  /**
   * Cap on a server-sent Retry-After: a provider asking for an hour would otherwise park the
   * activity past its heartbeat timeout; we wait this long and ask again.
   */
  maxRetryAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 30_000, maxRetryAfterMs: 120_000 };

/** A failure a retry cannot fix (bad request, auth, unknown model): the same request gets the same refusal. */
export class JudgeRequestError extends Error {
  override readonly name = 'JudgeRequestError';
  constructor(
    message: string,
    readonly status: number | undefined,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/** Retryable failures persisted past maxRetries; the activity's own retry policy may try again later. */
export class JudgeRetriesExhaustedError extends Error {
  override readonly name = 'JudgeRetriesExhaustedError';
  constructor(
    message: string,
    readonly attempts: number,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/**
 * 408 (request timeout), 409 (conflict, e.g. a concurrent write on the provider's side), 429 (rate
 * limit) and every 5xx are transient; so are connection failures and client-side timeouts.
 * Other 4xx describe the request itself and would fail identically on retry.
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof APIUserAbortError) return false;
  if (err instanceof APIConnectionError) return true;
  if (err instanceof APIError) {
    const s = err.status;
    if (s === undefined) return true;
    return s === 408 || s === 409 || s === 429 || s >= 500;
  }
  return false;
}

type HeaderSource = Headers | Record<string, string | undefined> | undefined;

function header(headers: HeaderSource, name: string): string | undefined {
  if (headers === undefined) return undefined;
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  const rec = headers as Record<string, string | undefined>;
  const found = Object.keys(rec).find((k) => k.toLowerCase() === name);
  return found === undefined ? undefined : rec[found];
}

/**
 * The wait the server asked for, in ms: `retry-after-ms` (OpenAI's precise hint) first, then
 * `Retry-After` as delta-seconds or an HTTP date. Undefined when absent or unparseable.
 */
export function retryAfterMs(headers: HeaderSource, now: number = Date.now()): number | undefined {
  const ms = header(headers, 'retry-after-ms');
  if (ms !== undefined && ms.trim() !== '') {
    const v = Number(ms);
    if (Number.isFinite(v) && v >= 0) return v;
  }
  const ra = header(headers, 'retry-after');
  if (ra === undefined || ra.trim() === '') return undefined;
  const trimmed = ra.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * Wait before retry number `attempt` (0-based). A server hint is honoured as given (capped);
 * otherwise full-jitter exponential backoff, which spreads a burst of 429s from many concurrent
 * workers instead of having them all come back at the same instant.
 */
export function backoffDelayMs(
  attempt: number,
  err: unknown,
  opts: BackoffOptions,
  random: () => number = Math.random,
  now: number = Date.now(),
): number {
  const hinted = err instanceof APIError ? retryAfterMs(err.headers, now) : undefined;
  if (hinted !== undefined) return Math.min(hinted, opts.maxRetryAfterMs);
  const ceiling = Math.min(opts.maxMs, opts.baseMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}

/** The reason to throw when `signal` aborted: Temporal puts its CancelledFailure there. */
export function abortReason(signal: AbortSignal): unknown {
  const reason: unknown = signal.reason;
  return reason ?? new Error('judge aborted');
}

/** setTimeout as a promise that rejects with the abort reason as soon as `signal` fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A short human description of a failed call for error messages and logs. */
export function describeError(err: unknown): string {
  if (err instanceof APIError) {
    const status = err.status === undefined ? err.constructor.name : `HTTP ${err.status}`;
    return `${status}: ${err.message}`;
  }
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

export interface RetryOptions {
  maxRetries: number;
  backoff: BackoffOptions;
  signal: AbortSignal;
  /** Names the call in error messages ("judge call to gpt-4o"). */
  what: string;
}

/**
 * Runs `fn` until it succeeds, a non-retryable error occurs (→ JudgeRequestError), retries run out
 * (→ JudgeRetriesExhaustedError) or `signal` aborts (→ the abort reason, unwrapped, so Temporal
 * sees its own CancelledFailure). `fn` gets a fresh signal per attempt: the openai client never
 * removes the abort listener it adds, so handing it one long-lived signal would pile up a listener
 * per request for the whole run.
 */
export async function callWithRetries<T>(fn: (signal: AbortSignal) => Promise<T>, opts: RetryOptions): Promise<{ value: T; attempts: number }> {
  for (let attempt = 0; ; attempt++) {
    if (opts.signal.aborted) throw abortReason(opts.signal);
    let lastError: unknown;
    const request = new AbortController();
    const forward = (): void => request.abort(opts.signal.reason);
    opts.signal.addEventListener('abort', forward, { once: true });
    try {
      return { value: await fn(request.signal), attempts: attempt + 1 };
    } catch (err) {
      if (opts.signal.aborted) throw abortReason(opts.signal);
      if (err instanceof JudgeRequestError) throw err;
      if (!isRetryable(err)) {
        const status = err instanceof APIError ? err.status : undefined;
        throw new JudgeRequestError(`${opts.what} failed and will not be retried: ${describeError(err)}`, status, err);
      }
      if (attempt >= opts.maxRetries) {
        throw new JudgeRetriesExhaustedError(`${opts.what} still failing after ${attempt + 1} attempts: ${describeError(err)}`, attempt + 1, err);
      }
      lastError = err;
    } finally {
      opts.signal.removeEventListener('abort', forward);
    }
    // Outside the try: an abort during the wait reaches the caller as the abort reason, unwrapped.
    await sleep(backoffDelayMs(attempt, lastError, opts.backoff), opts.signal);
  }
}
