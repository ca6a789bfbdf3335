/**
 * Judgment cache: a judgment is a pure function of (endpoint, judge model, prompt version,
 * top-logprobs, question, response, topic) at temperature 0, so it is computed once and served from the store ever after —
 * an activity retry, a workflow replay or a re-evaluation of the same generations costs no calls.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { storeKeys } from '../../common/config';
import { StanceProbs } from '../../common/contracts';

export interface CacheKeyInput {
  /** Who answers: the endpoint's base URL (one model name can mean different weights at two providers). */
  endpoint: string;
  judgeModel: string;
  /** How many alternatives were read: a label outside a smaller top-k reads as missing. */
  topLogprobs: number;
  promptVersion: string;
  question: string;
  response: string;
  topic: string;
}

/** JSON with object keys sorted at every level, so the same values always give the same bytes. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** An endpoint's identity: its base URL without trailing slashes (`https://api.openai.com/v1`). */
export function endpointIdentity(baseURL: string): string {
  return baseURL.replace(/\/+$/, '');
}

/** sha256 hex of the canonical JSON of exactly these seven fields (extra fields are not keyed). */
export function cacheKey({ endpoint, judgeModel, topLogprobs, promptVersion, question, response, topic }: CacheKeyInput): string {
  const canonical = canonicalJson({ endpoint: endpointIdentity(endpoint), judgeModel, topLogprobs, promptVersion, question, response, topic });
  return createHash('sha256').update(canonical, 'utf8').digest('hex');
}

/** Where the S3-backed cache keeps a key: a two-hex-char fan-out keeps listings small. */
export function cacheObjectKey(key: string): string {
  return storeKeys.judgeCache(key);
}

export const CachedJudgment = z.object({
  probs: StanceProbs.nullable(),
  topTokens: z.array(z.object({ token: z.string(), logprob: z.number() })),
  judgeModel: z.string(),
  promptVersion: z.string(),
  /** ISO time of the call; audit only, never part of the key. */
  judgedAt: z.string(),
});
export type CachedJudgment = z.infer<typeof CachedJudgment>;

export interface JudgeCache {
  get(key: string): Promise<CachedJudgment | undefined>;
  putMany(entries: ReadonlyArray<{ key: string; value: CachedJudgment }>): Promise<void>;
}

/** For tests and one-off checks; counts traffic so tests can assert what was read and written. */
export class InMemoryJudgeCache implements JudgeCache {
  readonly entries = new Map<string, CachedJudgment>();
  gets = 0;
  puts = 0;

  get(key: string): Promise<CachedJudgment | undefined> {
    this.gets++;
    const hit = this.entries.get(key);
    // A copy, so a caller mutating its judgment cannot corrupt the cache.
    return Promise.resolve(hit === undefined ? undefined : structuredClone(hit));
  }

  putMany(entries: ReadonlyArray<{ key: string; value: CachedJudgment }>): Promise<void> {
    for (const { key, value } of entries) {
      this.puts++;
      this.entries.set(key, structuredClone(value));
    }
    return Promise.resolve();
  }
}
