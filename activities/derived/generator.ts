/**
 * The OpenAI-compatible generator of built datasets (V-PRISM's rephrasing, cluster names and value
 * check; the synthetic pairs' responses). Every answer is cached in the store under a key of its
 * inputs, so a retried or re-run build pays only for what it had not got. Calls run `concurrency` at
 * a time, at most `requestsPerMinute` started per minute, each retried with backoff; the activity
 * heartbeats its progress. Endpoint and key come from the worker's settings, never from inputs.
 */
import { setMaxListeners } from 'node:events';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { activityContext } from '../context';
import { scrubSecrets } from '../env';
import { createJudgeClient } from '../judge/client';
import { callWithRetries, DEFAULT_BACKOFF, JudgeRequestError, JudgeRetriesExhaustedError, sleep } from '../judge/retry';
import { getJsonIfExists, putJson, uriOf } from '../store';
import { derivedKeys } from './keys';

export type ChatMessage = { role: 'system' | 'user'; content: string };

const CachedGeneration = z.object({ text: z.string(), model: z.string(), finishReason: z.string().nullable(), generatedAt: z.string() });

/** Spaces call starts at least `60000 / perMinute` ms apart (no bound when undefined). */
export class StartLimiter {
  private next = 0;
  constructor(private readonly perMinute: number | undefined) {}
  async wait(signal: AbortSignal): Promise<void> {
    if (this.perMinute === undefined) return;
    const now = Date.now();
    const at = Math.max(now, this.next);
    this.next = at + 60_000 / this.perMinute;
    if (at > now) await sleep(at - now, signal);
  }
}

/** A generator failure as Temporal should see it: a refused request is final, exhausted retries are not. */
export function generatorFailure(err: unknown): unknown {
  if (err instanceof JudgeRequestError) return ApplicationFailure.create({ message: scrubSecrets(err.message), type: 'GeneratorRequestRefused', nonRetryable: true });
  if (err instanceof JudgeRetriesExhaustedError) return ApplicationFailure.create({ message: scrubSecrets(err.message), type: 'GeneratorUnavailable', nonRetryable: false });
  return err;
}

export interface GenerateOptions {
  endpoint: { baseURL: string; apiKey: string | undefined };
  model: string;
  maxTokens: number;
  /** 0: greedy. */
  temperature: number;
  /** Sent only when sampling (temperature > 0); a greedy call is a function of its messages. */
  seed?: number | undefined;
  concurrency: number;
  requestsPerMinute?: number | undefined;
  /** The cache key of one call (its recipe's own: what decides the answer). */
  keyOf: (messages: ChatMessage[]) => string;
  /** Names the step in heartbeats ("generating", "naming clusters"). */
  step: string;
}

/** Answers every conversation, from the store's cache where it has them. */
export async function generateCached(conversations: ChatMessage[][], o: GenerateOptions): Promise<{ texts: string[]; calls: number; cached: number }> {
  const client = createJudgeClient({ baseURL: o.endpoint.baseURL, apiKey: o.endpoint.apiKey ?? 'unset', timeoutMs: 600_000 });
  const c = activityContext();
  const controller = new AbortController();
  setMaxListeners(o.concurrency * 2 + 10, controller.signal);
  c?.cancellationSignal.addEventListener('abort', () => controller.abort(c.cancellationSignal.reason), { once: true });
  const limiter = new StartLimiter(o.requestsPerMinute);
  const texts: string[] = new Array<string>(conversations.length).fill('');
  let calls = 0;
  let hits = 0;
  let next = 0;
  let failure: { err: unknown } | undefined;
  const beat = setInterval(() => c?.heartbeat({ step: o.step, done: calls + hits, total: conversations.length }), 5_000);
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < conversations.length) {
      const i = next++;
      const messages = conversations[i] as ChatMessage[];
      const objectKey = derivedKeys.generation(o.keyOf(messages));
      const hit = await getJsonIfExists(uriOf(objectKey), CachedGeneration).catch(() => undefined);
      if (hit) {
        hits++;
        texts[i] = hit.text;
        continue;
      }
      await limiter.wait(controller.signal);
      const body = { model: o.model, messages, max_tokens: o.maxTokens, temperature: o.temperature, ...(o.temperature > 0 && o.seed !== undefined && { seed: o.seed }) };
      const { value } = await callWithRetries(async (signal) => client.chat.completions.create(body, { signal }), {
        maxRetries: 8,
        backoff: DEFAULT_BACKOFF,
        signal: controller.signal,
        what: `generator call to ${o.model}`,
      });
      const choice = value.choices[0];
      const text = typeof choice?.message?.content === 'string' ? choice.message.content : '';
      calls++;
      texts[i] = text;
      await putJson(objectKey, { text, model: o.model, finishReason: choice?.finish_reason ?? null, generatedAt: new Date().toISOString() });
    }
  };
  try {
    await Promise.all(
      Array.from({ length: Math.min(o.concurrency, conversations.length) }, () =>
        worker().catch((err: unknown) => {
          failure ??= { err };
          controller.abort(err);
        }),
      ),
    );
  } finally {
    clearInterval(beat);
  }
  if (failure !== undefined) throw generatorFailure(failure.err);
  return { texts, calls, cached: hits };
}
