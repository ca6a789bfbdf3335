import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import { describe, expect, it } from 'vitest';
import { backoffDelayMs, isRetryable, retryAfterMs, sleep } from '../../activities/judge/retry';

const err = (status: number, headers: Record<string, string> = {}): APIError => APIError.generate(status, { error: { message: 'x' } }, undefined, new Headers(headers));
const opts = { baseMs: 100, maxMs: 1_000, maxRetryAfterMs: 5_000 };

describe('isRetryable', () => {
  it.each([408, 409, 429, 500, 502, 503, 504])('retries %i', (s) => expect(isRetryable(err(s))).toBe(true));
  it.each([400, 401, 403, 404, 422])('does not retry %i', (s) => expect(isRetryable(err(s))).toBe(false));
  it('retries connection failures and timeouts, not user aborts or plain errors', () => {
    expect(isRetryable(new APIConnectionError({ message: 'ECONNRESET' }))).toBe(true);
    expect(isRetryable(new APIConnectionTimeoutError())).toBe(true);
    expect(isRetryable(new APIUserAbortError())).toBe(false);
    expect(isRetryable(new Error('bug'))).toBe(false);
  });
});

describe('retryAfterMs', () => {
  const now = Date.parse('2025-01-01T00:00:00Z');
  it('reads seconds, HTTP dates and retry-after-ms', () => {
    expect(retryAfterMs(new Headers({ 'retry-after': '2' }), now)).toBe(2000);
    expect(retryAfterMs(new Headers({ 'retry-after': 'Wed, 01 Jan 2025 00:00:03 GMT' }), now)).toBe(3000);
    expect(retryAfterMs(new Headers({ 'retry-after': 'Tue, 31 Dec 2024 23:59:00 GMT' }), now)).toBe(0);
    expect(retryAfterMs(new Headers({ 'retry-after-ms': '250', 'retry-after': '9' }), now)).toBe(250);
    expect(retryAfterMs({ 'Retry-After': '1' }, now)).toBe(1000);
  });
  it('ignores what it cannot read', () => {
    expect(retryAfterMs(new Headers({ 'retry-after': 'soon' }), now)).toBeUndefined();
    expect(retryAfterMs(new Headers({ 'retry-after-ms': 'x' }), now)).toBeUndefined();
    expect(retryAfterMs(new Headers(), now)).toBeUndefined();
    expect(retryAfterMs(undefined, now)).toBeUndefined();
  });
});

describe('backoffDelayMs', () => {
  it('honours the server hint, capped', () => {
    expect(backoffDelayMs(0, err(429, { 'retry-after': '3' }), opts, () => 0.5)).toBe(3000);
    expect(backoffDelayMs(0, err(429, { 'retry-after': '60' }), opts, () => 0.5)).toBe(5000);
  });
  it('is full-jitter exponential without a hint, capped', () => {
    expect(backoffDelayMs(0, err(500), opts, () => 0.999)).toBe(99);
    expect(backoffDelayMs(3, err(500), opts, () => 0.999)).toBe(799);
    expect(backoffDelayMs(10, err(500), opts, () => 0.999)).toBe(999);
    expect(backoffDelayMs(10, err(500), opts, () => 0)).toBe(0);
  });
});

describe('sleep', () => {
  it('rejects with the abort reason as soon as aborted', async () => {
    const c = new AbortController();
    const reason = new Error('stop');
    setTimeout(() => c.abort(reason), 20);
    const t0 = Date.now();
    await expect(sleep(10_000, c.signal)).rejects.toBe(reason);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });
});
