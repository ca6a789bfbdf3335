/**
 * Batch API mode: the same judgments at about half the price and none of the rate-limit pressure,
 * for when latency does not matter (a whole lineage evaluated overnight). Uncached items go into
 * one JSONL file, a batch is created and polled, and the results land in the same cache and the
 * same Judgment shape as judgeAll's. Requests the batch could not serve are judged synchronously.
 */
import { setMaxListeners } from 'node:events';
import { toFile } from 'openai';
import type { Batch } from 'openai/resources/batches';
import type { ChatCompletion } from 'openai/resources/chat/completions';
import { z } from 'zod';
import type { Judgment } from '../../common/contracts';
import type { CachedJudgment } from './cache';
import {
  CacheWriter,
  DEFAULT_TOP_LOGPROBS,
  groupByCacheKey,
  JudgeItem,
  judgeAll,
  judgeRequestBody,
  judgmentFromCompletion,
  toJudgment,
  type JudgeAllInput,
  type JudgeAllResult,
} from './judgeAll';
import { buildJudgeMessages } from './prompt';
import { abortReason, callWithRetries, DEFAULT_BACKOFF, JudgeRequestError, sleep, type BackoffOptions } from './retry';

/** The provider checks on a batch every few minutes at best; polling faster only spends requests. */
export const DEFAULT_BATCH_POLL_MS = 30_000;
const TERMINAL: ReadonlyArray<Batch['status']> = ['completed', 'failed', 'expired', 'cancelled'];

export interface BatchHeartbeat {
  /** Put this in the activity's heartbeat details and pass it back as `batchId` on retry: the batch is resumed, not paid for twice. */
  batchId: string;
  status: Batch['status'];
  completed: number;
  failed: number;
  total: number;
}

export interface JudgeBatchInput extends Omit<JudgeAllInput, 'onProgress'> {
  /** Resume a batch an earlier attempt created (from heartbeat details). */
  batchId?: string | undefined;
  pollIntervalMs?: number | undefined;
  heartbeat?: ((info: BatchHeartbeat) => void) | undefined;
}

export interface JudgeBatchResult extends JudgeAllResult {
  /** Undefined when everything was cached and no batch was needed. */
  batchId: string | undefined;
  /** Requests the batch did not serve that were judged synchronously instead. */
  fallbackCalls: number;
  /** Tokens billed for the batch's answers (at the batch price); the fallback calls' are not in it. */
  batchUsage: TokenUsage;
}

interface Known {
  value: Pick<CachedJudgment, 'probs' | 'topTokens'>;
  cached: boolean;
}

/** Tokens a provider billed, as its `usage` says (summed over requests). */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
}
export const NO_USAGE: TokenUsage = { promptTokens: 0, completionTokens: 0 };

/** Reads a chat completion's `usage` (absent or malformed counts as nothing billed). */
export function usageOf(body: unknown): TokenUsage {
  const u = (body as { usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } } | null | undefined)?.usage;
  const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.round(v) : 0);
  return { promptTokens: n(u?.prompt_tokens), completionTokens: n(u?.completion_tokens) };
}

export function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  return { promptTokens: a.promptTokens + b.promptTokens, completionTokens: a.completionTokens + b.completionTokens };
}

export type BatchRetry = { maxRetries: number; backoff: BackoffOptions; signal: AbortSignal };

/** Which of the items' distinct cache keys are already cached (lookups bounded like judgeAll's calls). */
export async function lookUpBatchItems(
  input: Pick<JudgeBatchInput, 'items' | 'client' | 'model' | 'topLogprobs' | 'cache' | 'concurrency'>,
): Promise<{ items: JudgeItem[]; groups: Map<string, number[]>; keys: string[]; known: Map<string, Known>; missing: string[] }> {
  const items = z.array(JudgeItem).parse(input.items);
  const groups = groupByCacheKey(items, { endpoint: input.client.baseURL, judgeModel: input.model, topLogprobs: input.topLogprobs ?? DEFAULT_TOP_LOGPROBS });
  const keys = [...groups.keys()];
  const known = new Map<string, Known>();
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(input.concurrency, Math.max(1, keys.length)) }, async () => {
      while (next < keys.length) {
        const key = keys[next++] as string;
        const hit = await input.cache.get(key);
        if (hit !== undefined) known.set(key, { value: hit, cached: true });
      }
    }),
  );
  return { items, groups, keys, known, missing: keys.filter((k) => !known.has(k)) };
}

/** Uploads one JSONL line per missing key (custom_id = cache key) and creates the batch; returns its id. */
export async function submitBatchRequests(
  input: Pick<JudgeBatchInput, 'client' | 'model' | 'topLogprobs' | 'tokenLimitParam'>,
  items: ReadonlyArray<JudgeItem>,
  groups: Map<string, number[]>,
  missing: ReadonlyArray<string>,
  retry: BatchRetry,
): Promise<string> {
  const lines = missing.map((key) => {
    const item = items[(groups.get(key) as number[])[0] as number] as JudgeItem;
    // custom_id is the cache key: unique within the batch, and maps each result straight to its cache entry.
    return JSON.stringify({ custom_id: key, method: 'POST', url: '/v1/chat/completions', body: judgeRequestBody(buildJudgeMessages(item), input) });
  });
  const jsonl = `${lines.join('\n')}\n`;
  const file = await callWithRetries(
    async (s) => input.client.files.create({ file: await toFile(Buffer.from(jsonl, 'utf8'), 'valuedrift-judge.jsonl', { type: 'application/jsonl' }), purpose: 'batch' }, { signal: s }),
    { ...retry, what: 'judge batch upload' },
  );
  const created = await callWithRetries(
    (s) =>
      input.client.batches.create(
        { input_file_id: file.value.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { app: 'valuedrift', judge_model: input.model } },
        { signal: s },
      ),
    { ...retry, what: 'judge batch create' },
  );
  return created.value.id;
}

export function isTerminal(status: Batch['status']): boolean {
  return TERMINAL.includes(status);
}

/** One look at a batch (with retries for transient failures). */
export async function pollBatchOnce(client: JudgeBatchInput['client'], id: string, retry: BatchRetry): Promise<Batch> {
  return (await callWithRetries((s) => client.batches.retrieve(id, { signal: s }), { ...retry, what: `judge batch ${id} poll` })).value;
}

/** A failed batch is a rejected input file (validation): resubmitting it gets the same verdict. */
export function failedBatchError(batch: Batch): JudgeRequestError {
  const why = batch.errors?.data?.map((e) => `${e.line !== undefined && e.line !== null ? `line ${e.line}: ` : ''}${e.message ?? e.code ?? ''}`).join('; ');
  return new JudgeRequestError(`judge batch ${batch.id} failed: ${why ?? 'no reason given'}`, undefined);
}

/**
 * Reads a terminal batch's output (and error) file and writes every successful answer whose
 * custom_id is `wanted` into the cache. Returns what was served and the tokens the batch billed.
 */
export async function collectBatchOutput(
  input: Pick<JudgeBatchInput, 'client' | 'model' | 'cache' | 'cacheFlushEvery'>,
  batch: Batch,
  wanted: ReadonlySet<string>,
  retry: BatchRetry,
): Promise<{ served: Map<string, CachedJudgment>; usage: TokenUsage }> {
  const writer = new CacheWriter(input.cache, Math.max(1, input.cacheFlushEvery ?? 256));
  const served = new Map<string, CachedJudgment>();
  let usage = NO_USAGE;
  for (const fileId of [batch.output_file_id, batch.error_file_id]) {
    if (fileId === undefined || fileId === null) continue;
    const res = await callWithRetries(async (s) => (await input.client.files.content(fileId, { signal: s })).text(), { ...retry, what: `judge batch ${batch.id} download` });
    for (const line of res.value.split('\n')) {
      if (line.trim() === '') continue;
      const parsed = BatchOutputLine.parse(JSON.parse(line));
      if (!wanted.has(parsed.custom_id) || served.has(parsed.custom_id)) continue;
      if (parsed.response?.status_code !== 200) continue;
      const value = judgmentFromCompletion(parsed.response.body as ChatCompletion, input.model);
      usage = addUsage(usage, usageOf(parsed.response.body));
      served.set(parsed.custom_id, value);
      writer.add(parsed.custom_id, value);
    }
  }
  await writer.flush();
  return { served, usage };
}

const BatchOutputLine = z.object({
  custom_id: z.string(),
  response: z.object({ status_code: z.number(), body: z.unknown() }).nullable().optional(),
  error: z.object({ code: z.string().nullable().optional(), message: z.string().nullable().optional() }).nullable().optional(),
});

/** Judges every item through the Batch API; safe to retry with the heartbeat's batchId (nothing is submitted twice). Writes only to `cache`. */
export async function judgeBatch(input: JudgeBatchInput): Promise<JudgeBatchResult> {
  const backoff: BackoffOptions = { ...DEFAULT_BACKOFF, ...input.backoff };
  const controller = new AbortController();
  setMaxListeners(input.concurrency * 2 + 10, controller.signal);
  const onOuterAbort = (): void => controller.abort(input.signal?.reason);
  if (input.signal?.aborted) throw abortReason(input.signal);
  input.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const signal = controller.signal;
  const retry: BatchRetry = { maxRetries: input.maxRetries, backoff, signal };

  try {
    const { items, groups, keys, known, missing } = await lookUpBatchItems(input);
    const cacheHits = known.size;
    let batchId = input.batchId;
    let calls = 0;
    let attempts = 0;
    let batchUsage = NO_USAGE;

    if (missing.length > 0) {
      batchId ??= await submitBatchRequests(input, items, groups, missing, retry);
      const id: string = batchId;

      let batch: Batch;
      try {
        for (;;) {
          batch = await pollBatchOnce(input.client, id, retry);
          const counts = batch.request_counts ?? { completed: 0, failed: 0, total: missing.length };
          input.heartbeat?.({ batchId: id, status: batch.status, completed: counts.completed, failed: counts.failed, total: counts.total });
          if (isTerminal(batch.status)) break;
          await sleep(input.pollIntervalMs ?? DEFAULT_BATCH_POLL_MS, signal);
        }
      } catch (err) {
        // Cancelled: stop the provider's work too, so an abandoned batch costs nothing more. Best
        // effort — the cancellation is what the caller must see, whatever the provider answers.
        // (A poll that merely failed leaves the batch running: a retry resumes it by batchId.)
        if (signal.aborted) await input.client.batches.cancel(id).catch(() => undefined);
        throw err;
      }
      if (batch.status === 'failed') throw failedBatchError(batch);

      const out = await collectBatchOutput(input, batch, new Set(missing), retry);
      for (const [key, value] of out.served) {
        known.set(key, { value, cached: false });
        calls++;
        attempts++;
      }
      batchUsage = out.usage;
    }

    // Whatever the batch did not serve (per-request errors, an expired or cancelled batch) goes through the synchronous path with its retries.
    const leftover = keys.filter((k) => !known.has(k));
    let fallbackCalls = 0;
    if (leftover.length > 0) {
      const leftoverItems = leftover.map((k) => items[(groups.get(k) as number[])[0] as number] as JudgeItem);
      const sync = await judgeAll({ ...input, items: leftoverItems, signal });
      sync.judgments.forEach((j, i) => {
        known.set(leftover[i] as string, { value: { probs: j.probs, topTokens: j.topTokens ?? [] }, cached: j.cached === true });
      });
      fallbackCalls = sync.calls;
      calls += sync.calls;
      attempts += sync.attempts;
    }

    const judgments: Judgment[] = new Array<Judgment>(items.length);
    for (const [key, idx] of groups) {
      const k = known.get(key) as Known;
      for (const i of idx) judgments[i] = toJudgment(items[i] as JudgeItem, k.value, k.cached);
    }
    return { judgments, calls, attempts, cacheHits, batchId, fallbackCalls, batchUsage };
  } finally {
    input.signal?.removeEventListener('abort', onOuterAbort);
  }
}
