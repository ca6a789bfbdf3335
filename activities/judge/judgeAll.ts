/**
 * Judging many generations: one one-token chat completion per distinct uncached item, bounded
 * concurrency, our own backoff, and every result written to the cache so a re-run costs nothing.
 */
import { setMaxListeners } from 'node:events';
import type OpenAI from 'openai';
import type { ChatCompletion, ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { z } from 'zod';
import type { Judgment } from '../../common/contracts';
import { cacheKey, type CachedJudgment, type JudgeCache } from './cache';
import { readStanceLogprobs, usableTokens, type TokenLogprob } from './parse';
import { buildJudgeMessages, JUDGE_PROMPT_VERSION } from './prompt';
import { abortReason, callWithRetries, DEFAULT_BACKOFF, JudgeRequestError, JudgeRetriesExhaustedError, type BackoffOptions } from './retry';

export const JudgeItem = z.object({
  promptId: z.string().min(1),
  category: z.string().min(1),
  sample: z.number().int().nonnegative(),
  question: z.string(),
  response: z.string(),
  topic: z.string().min(1),
});
export type JudgeItem = z.infer<typeof JudgeItem>;

/** OpenAI's ceiling for top_logprobs; more alternatives also means fewer labels missing from top-k. */
export const DEFAULT_TOP_LOGPROBS = 20;
/** Older servers (vLLM, llama.cpp) know max_tokens; OpenAI's newer models want max_completion_tokens. */
export type TokenLimitParam = 'max_tokens' | 'max_completion_tokens';
/** When no label matched, this many raw top tokens are kept in the judgment so an auditor sees what came instead. */
const UNLABELLED_AUDIT_TOKENS = 5;
/** Label tokens kept in a judgment (OpenAI sends at most 20 alternatives; the rest of a flood is dropped from the record, not from the reading). */
const MAX_AUDIT_TOKENS = 64;

/**
 * How an item is put to the judge, and the version its cache entries carry. The default is the
 * question/response stance prompt (prompt.ts); the dataset stance analysis judges whole
 * conversations with its own.
 */
export interface JudgePrompt {
  version: string;
  messages: (item: Pick<JudgeItem, 'question' | 'response' | 'topic'>) => ChatCompletionCreateParamsNonStreaming['messages'];
}
export const STANCE_JUDGE_PROMPT: JudgePrompt = { version: JUDGE_PROMPT_VERSION, messages: buildJudgeMessages };

export interface JudgeRequestOptions {
  client: OpenAI;
  model: string;
  topLogprobs?: number | undefined;
  tokenLimitParam?: TokenLimitParam | undefined;
}

export interface JudgeAllInput extends JudgeRequestOptions {
  items: ReadonlyArray<JudgeItem>;
  /** Calls in flight at once; match the provider's rate limit, not the CPU. */
  concurrency: number;
  cache: JudgeCache;
  /** Retries per item after the first attempt, for retryable failures only. */
  maxRetries: number;
  backoff?: Partial<BackoffOptions> | undefined;
  /**
   * New cache entries are written in groups of this size (and at the end, and on failure); default
   * DEFAULT_CACHE_FLUSH_EVERY. A killed worker (no chance to write) pays again for what it had not
   * written: fewer than this many answers, plus a batch whose write was in flight.
   */
  cacheFlushEvery?: number | undefined;
  /** …and no answer waits longer than this for its write (ms); default DEFAULT_CACHE_FLUSH_MS. */
  cacheFlushMs?: number | undefined;
  onProgress?: ((done: number, total: number) => void) | undefined;
  signal?: AbortSignal | undefined;
  /** Awaited before every HTTP attempt, retries included (the shared judge budget, budget.ts). */
  beforeAttempt?: BeforeAttempt | undefined;
  /** How items are put to the judge; default STANCE_JUDGE_PROMPT. */
  prompt?: JudgePrompt | undefined;
}

/** Waits, if it must, before one request is sent; rejects only with the signal's reason. */
export type BeforeAttempt = (body: ChatCompletionCreateParamsNonStreaming, signal: AbortSignal) => Promise<void>;

export interface JudgeAllResult {
  /** One per input item, in input order. */
  judgments: Judgment[];
  /** Chat completions that produced a judgment (distinct uncached items). */
  calls: number;
  /** HTTP attempts including the failed ones that were retried. */
  attempts: number;
  /** Distinct keys served from the cache. */
  cacheHits: number;
}

export function judgeRequestBody(
  messages: ChatCompletionCreateParamsNonStreaming['messages'],
  { model, topLogprobs, tokenLimitParam }: Omit<JudgeRequestOptions, 'client'>,
): ChatCompletionCreateParamsNonStreaming {
  const base: ChatCompletionCreateParamsNonStreaming = {
    model,
    messages,
    // Temperature 0 makes the judgment a function of its inputs, which is what makes caching sound.
    temperature: 0,
    logprobs: true,
    top_logprobs: topLogprobs ?? DEFAULT_TOP_LOGPROBS,
  };
  // One output token: the label's first token carries the whole distribution we read.
  return (tokenLimitParam ?? 'max_tokens') === 'max_tokens' ? { ...base, max_tokens: 1 } : { ...base, max_completion_tokens: 1 };
}

/** A completion's first output position turned into what we cache. Throws when the endpoint sent no logprobs at all. */
export function judgmentFromCompletion(completion: ChatCompletion, judgeModel: string, now: Date = new Date()): CachedJudgment {
  // What a server sends is not trusted to match the SDK's types: any field may be missing or null.
  const choice = (completion.choices as ChatCompletion['choices'] | undefined)?.[0];
  const first: unknown = choice?.logprobs?.content?.[0];
  let top: TokenLogprob[];
  if (first !== undefined && first !== null) {
    const { top_logprobs: alternatives, token, logprob } = first as { top_logprobs?: unknown; token?: unknown; logprob?: unknown };
    top = usableTokens(alternatives);
    // A server that ignored top_logprobs still tells us the token it chose; better that than nothing.
    // Nothing usable at all (garbage alternatives) leaves `top` empty: this item is unlabelled.
    if (top.length === 0) top = usableTokens([{ token, logprob }]);
  } else if (choice?.finish_reason === 'content_filter') {
    // The provider refused to judge this text: an unlabelled generation, not a broken endpoint.
    top = [];
  } else {
    // Systematic (endpoint or model without logprobs support): every retry would get the same.
    throw new JudgeRequestError(
      `judge model ${judgeModel} returned no logprobs; the endpoint must support logprobs/top_logprobs on chat completions`,
      undefined,
    );
  }
  const { probs, labelTokens } = readStanceLogprobs(top);
  return {
    probs,
    // A misbehaving server can send any number of alternatives: the audit trail keeps a bounded number.
    topTokens: probs === null ? top.slice(0, UNLABELLED_AUDIT_TOKENS) : labelTokens.slice(0, MAX_AUDIT_TOKENS),
    judgeModel,
    promptVersion: JUDGE_PROMPT_VERSION,
    judgedAt: now.toISOString(),
  };
}

interface CallOutcome {
  value: CachedJudgment;
  attempts: number;
}

/** One judgment with retries. Rejects with JudgeRequestError, JudgeRetriesExhaustedError or the abort reason. */
export function judgeOneWithRetries(
  item: Pick<JudgeItem, 'question' | 'response' | 'topic'>,
  opts: JudgeRequestOptions & { maxRetries: number; backoff: BackoffOptions; signal: AbortSignal; beforeAttempt?: BeforeAttempt | undefined; prompt?: JudgePrompt | undefined },
): Promise<CallOutcome> {
  const prompt = opts.prompt ?? STANCE_JUDGE_PROMPT;
  const body = judgeRequestBody(prompt.messages(item), opts);
  return callWithRetries(
    async (signal) => {
      // Before the SDK's request timeout starts: a long wait for the budget is not a timed-out call.
      await opts.beforeAttempt?.(body, signal);
      return { ...judgmentFromCompletion(await opts.client.chat.completions.create(body, { signal }), opts.model), promptVersion: prompt.version };
    },
    { maxRetries: opts.maxRetries, backoff: opts.backoff, signal: opts.signal, what: `judge call to ${opts.model}` },
  );
}

export function toJudgment(item: JudgeItem, value: Pick<CachedJudgment, 'probs' | 'topTokens'>, cached: boolean): Judgment {
  return {
    promptId: item.promptId,
    category: item.category,
    sample: item.sample,
    probs: value.probs,
    topTokens: value.topTokens,
    cached,
  };
}

/** Cache entries written per group by default: what a killed worker can lose is bounded by this. */
export const DEFAULT_CACHE_FLUSH_EVERY = 8;
/** The longest an answer waits in memory for its cache write by default (ms). */
export const DEFAULT_CACHE_FLUSH_MS = 5_000;

/**
 * Writes cache entries in groups, one write at a time, so a failure midway keeps what was already
 * paid for. A group is written when it reaches `every` entries, or `maxDelayMs` after its first
 * entry arrived (a slow judge would otherwise keep answers in memory for minutes), whichever first.
 */
export class CacheWriter {
  private pending: Array<{ key: string; value: CachedJudgment }> = [];
  /** Never rejects: a failed write is remembered and reported by the next flush(). */
  private chain: Promise<void> = Promise.resolve();
  private firstError: { err: unknown } | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly cache: JudgeCache,
    private readonly every: number,
    private readonly maxDelayMs: number = Number.POSITIVE_INFINITY,
  ) {}

  add(key: string, value: CachedJudgment): void {
    this.pending.push({ key, value });
    if (this.pending.length >= this.every) void this.enqueue();
    else if (this.timer === undefined && Number.isFinite(this.maxDelayMs)) {
      this.timer = setTimeout(() => void this.enqueue(), this.maxDelayMs);
      // A pending write never keeps the process alive; flush() is what callers wait on.
      this.timer.unref?.();
    }
  }

  /** Resolves when everything added so far is written; rejects if any write so far failed. */
  async flush(): Promise<void> {
    await this.enqueue();
    if (this.firstError !== undefined) throw this.firstError.err;
  }

  private enqueue(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    this.chain = this.chain.then(async () => {
      if (batch.length === 0) return;
      try {
        await this.cache.putMany(batch);
      } catch (err) {
        this.firstError ??= { err };
      }
    });
    return this.chain;
  }
}

/** The judge as the cache knows it: who answers, which model, how many alternatives are read. */
export interface JudgeIdentity {
  endpoint: string;
  judgeModel: string;
  topLogprobs: number;
}

/** Identical (judge, prompt version, question, response, topic) → one call shared by every copy: cache key → item indexes. */
export function groupByCacheKey(items: ReadonlyArray<JudgeItem>, judge: JudgeIdentity, promptVersion = JUDGE_PROMPT_VERSION): Map<string, number[]> {
  const groups = new Map<string, number[]>();
  items.forEach((item, i) => {
    const key = cacheKey({ ...judge, promptVersion, question: item.question, response: item.response, topic: item.topic });
    const g = groups.get(key);
    if (g === undefined) groups.set(key, [i]);
    else g.push(i);
  });
  return groups;
}

/** Judges every item; safe to retry (cached results are reused, new ones are written to `cache` only). */
export async function judgeAll(input: JudgeAllInput): Promise<JudgeAllResult> {
  const items = z.array(JudgeItem).parse(input.items);
  if (!Number.isInteger(input.concurrency) || input.concurrency < 1) throw new RangeError('concurrency must be an integer ≥ 1');
  if (!Number.isInteger(input.maxRetries) || input.maxRetries < 0) throw new RangeError('maxRetries must be an integer ≥ 0');
  const backoff: BackoffOptions = { ...DEFAULT_BACKOFF, ...input.backoff };
  const total = items.length;

  const groups = groupByCacheKey(items, { endpoint: input.client.baseURL, judgeModel: input.model, topLogprobs: input.topLogprobs ?? DEFAULT_TOP_LOGPROBS }, (input.prompt ?? STANCE_JUDGE_PROMPT).version);
  const keys = [...groups.keys()];

  // Internal controller: the caller's abort, or our own first fatal error, stops every worker.
  const controller = new AbortController();
  // Each worker legitimately holds a listener or two (request forwarder, backoff sleep).
  setMaxListeners(input.concurrency * 2 + 10, controller.signal);
  const onOuterAbort = (): void => controller.abort(input.signal?.reason);
  if (input.signal?.aborted) throw abortReason(input.signal);
  input.signal?.addEventListener('abort', onOuterAbort, { once: true });

  const judgments: Array<Judgment | undefined> = new Array<Judgment | undefined>(total);
  const flushEvery = input.cacheFlushEvery ?? DEFAULT_CACHE_FLUSH_EVERY;
  const flushMs = input.cacheFlushMs ?? DEFAULT_CACHE_FLUSH_MS;
  if (!Number.isInteger(flushEvery) || flushEvery < 1) throw new RangeError('cacheFlushEvery must be an integer ≥ 1');
  if (!(flushMs > 0)) throw new RangeError('cacheFlushMs must be > 0');
  const writer = new CacheWriter(input.cache, flushEvery, flushMs);
  let calls = 0;
  let attempts = 0;
  let cacheHits = 0;
  let done = 0;
  let next = 0;
  let failure: { err: unknown } | undefined;

  const settle = (key: string, value: CachedJudgment, cached: boolean): void => {
    const idx = groups.get(key) ?? [];
    for (const i of idx) judgments[i] = toJudgment(items[i] as JudgeItem, value, cached);
    done += idx.length;
    input.onProgress?.(done, total);
  };

  const worker = async (): Promise<void> => {
    while (failure === undefined && !controller.signal.aborted && next < keys.length) {
      const key = keys[next++] as string;
      const first = items[(groups.get(key) as number[])[0] as number] as JudgeItem;
      const hit = await input.cache.get(key);
      if (hit !== undefined) {
        cacheHits++;
        settle(key, hit, true);
        continue;
      }
      const outcome = await judgeOneWithRetries(first, {
        client: input.client,
        model: input.model,
        topLogprobs: input.topLogprobs,
        tokenLimitParam: input.tokenLimitParam,
        maxRetries: input.maxRetries,
        backoff,
        signal: controller.signal,
        beforeAttempt: input.beforeAttempt,
        prompt: input.prompt,
      }).catch((err: unknown) => {
        // Count the failed attempts too, so `attempts` reflects what the provider saw.
        if (err instanceof JudgeRetriesExhaustedError) attempts += err.attempts;
        throw err;
      });
      attempts += outcome.attempts;
      calls++;
      writer.add(key, outcome.value);
      settle(key, outcome.value, false);
    }
  };

  const workers = Array.from({ length: Math.min(input.concurrency, Math.max(1, keys.length)) }, () =>
    worker().catch((err: unknown) => {
      if (failure === undefined) {
        // The caller's abort wins over whatever error it caused in flight.
        failure = { err: input.signal?.aborted ? abortReason(input.signal) : err };
        controller.abort(failure.err);
      }
    }),
  );
  try {
    await Promise.all(workers);
  } finally {
    input.signal?.removeEventListener('abort', onOuterAbort);
  }

  if (failure !== undefined || input.signal?.aborted) {
    // Keep what was already paid for; the failure below is what the caller must classify, so a
    // cache write error here is secondary and only costs repeated calls on the next attempt.
    await writer.flush().catch(() => undefined);
    throw failure !== undefined ? failure.err : abortReason(input.signal as AbortSignal);
  }
  await writer.flush();
  return { judgments: judgments as Judgment[], calls, attempts, cacheHits };
}
