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
}

interface Known {
  value: Pick<CachedJudgment, 'probs' | 'topTokens'>;
  cached: boolean;
}

const BatchOutputLine = z.object({
  custom_id: z.string(),
  response: z.object({ status_code: z.number(), body: z.unknown() }).nullable().optional(),
  error: z.object({ code: z.string().nullable().optional(), message: z.string().nullable().optional() }).nullable().optional(),
});

/** Judges every item through the Batch API; safe to retry with the heartbeat's batchId (nothing is submitted twice). Writes only to `cache`. */
export async function judgeBatch(input: JudgeBatchInput): Promise<JudgeBatchResult> {
  const items = z.array(JudgeItem).parse(input.items);
  const backoff: BackoffOptions = { ...DEFAULT_BACKOFF, ...input.backoff };
  const controller = new AbortController();
  setMaxListeners(input.concurrency * 2 + 10, controller.signal);
  const onOuterAbort = (): void => controller.abort(input.signal?.reason);
  if (input.signal?.aborted) throw abortReason(input.signal);
  input.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const signal = controller.signal;
  const retry = { maxRetries: input.maxRetries, backoff, signal };

  try {
    const groups = groupByCacheKey(items, { endpoint: input.client.baseURL, judgeModel: input.model, topLogprobs: input.topLogprobs ?? DEFAULT_TOP_LOGPROBS });
    const keys = [...groups.keys()];
    const known = new Map<string, Known>();

    // Cache lookups, bounded like judgeAll's calls (an S3-backed cache is one GET per key).
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
    const cacheHits = known.size;
    const missing = keys.filter((k) => !known.has(k));
    let batchId = input.batchId;
    let calls = 0;
    let attempts = 0;

    if (missing.length > 0) {
      if (batchId === undefined) {
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
        batchId = created.value.id;
      }
      const id: string = batchId;

      let batch: Batch;
      try {
        for (;;) {
          batch = (await callWithRetries((s) => input.client.batches.retrieve(id, { signal: s }), { ...retry, what: `judge batch ${id} poll` })).value;
          const counts = batch.request_counts ?? { completed: 0, failed: 0, total: missing.length };
          input.heartbeat?.({ batchId: id, status: batch.status, completed: counts.completed, failed: counts.failed, total: counts.total });
          if (TERMINAL.includes(batch.status)) break;
          await sleep(input.pollIntervalMs ?? DEFAULT_BATCH_POLL_MS, signal);
        }
      } catch (err) {
        // Cancelled: stop the provider's work too, so an abandoned batch costs nothing more. Best
        // effort — the cancellation is what the caller must see, whatever the provider answers.
        // (A poll that merely failed leaves the batch running: a retry resumes it by batchId.)
        if (signal.aborted) await input.client.batches.cancel(id).catch(() => undefined);
        throw err;
      }
      if (batch.status === 'failed') {
        // A failed batch is a rejected input file (validation): resubmitting it gets the same verdict.
        const why = batch.errors?.data?.map((e) => `${e.line !== undefined && e.line !== null ? `line ${e.line}: ` : ''}${e.message ?? e.code ?? ''}`).join('; ');
        throw new JudgeRequestError(`judge batch ${id} failed: ${why ?? 'no reason given'}`, undefined);
      }

      const writer = new CacheWriter(input.cache, Math.max(1, input.cacheFlushEvery ?? 256));
      const wanted = new Set(missing);
      for (const fileId of [batch.output_file_id, batch.error_file_id]) {
        if (fileId === undefined || fileId === null) continue;
        const res = await callWithRetries(async (s) => (await input.client.files.content(fileId, { signal: s })).text(), { ...retry, what: `judge batch ${id} download` });
        for (const line of res.value.split('\n')) {
          if (line.trim() === '') continue;
          const parsed = BatchOutputLine.parse(JSON.parse(line));
          if (!wanted.has(parsed.custom_id) || known.has(parsed.custom_id)) continue;
          if (parsed.response?.status_code !== 200) continue;
          const value = judgmentFromCompletion(parsed.response.body as ChatCompletion, input.model);
          known.set(parsed.custom_id, { value, cached: false });
          writer.add(parsed.custom_id, value);
          calls++;
          attempts++;
        }
      }
      await writer.flush();
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
    return { judgments, calls, attempts, cacheHits, batchId, fallbackCalls };
  } finally {
    input.signal?.removeEventListener('abort', onOuterAbort);
  }
}
