/**
 * `judgeResponses`: asks the stance judge about every generation of one checkpoint (CPU queue).
 * The judgments file is content-addressed by the judgment key (generations + judge identity + prompt
 * version + top-logprobs + topics) and written once; every single answer is also cached by its own
 * key, so a retry or a re-evaluation of the same generations makes no new calls.
 */
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import type { ArtifactRef } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import type { EvaluationSpec } from '../../common/spec';
import { activityContext } from '../context';
import { scrubSecrets, workerEnv } from '../env';
import { GenerationRow, loadEvalRows } from '../generation';
import { cacheObjectKey, CachedJudgment, type JudgeCache } from '../judge/cache';
import { estimateTokens, type JudgeBudgets } from '../judge/budget';
import { createJudgeClient } from '../judge/client';
import { judgeAll, type JudgeItem } from '../judge/judgeAll';
import { JudgeRequestError, JudgeRetriesExhaustedError } from '../judge/retry';
import { getJsonIfExists, getRefIfExists, getVerified, putBytesOnce, putJson, uriOf } from '../store';
import { judgeIdentity, judgmentKey } from './keys';
import { NO_COUNTS, UsageTally, type JudgeUsage } from './usage';

/** Judge cache in the store: one small JSON object per key (DESIGN §4). */
export class StoreJudgeCache implements JudgeCache {
  async get(key: string) {
    const raw = await getJsonIfExists(uriOf(cacheObjectKey(key)), z.unknown());
    if (raw === undefined) return undefined;
    // An entry this version cannot read (e.g. a null logprob written before non-finite values were
    // dropped) is a miss: the item is judged again and the entry replaced, instead of failing every run.
    const parsed = CachedJudgment.safeParse(raw);
    return parsed.success ? parsed.data : undefined;
  }
  async putMany(entries: ReadonlyArray<{ key: string; value: CachedJudgment }>) {
    await Promise.all(entries.map((e) => putJson(cacheObjectKey(e.key), e.value)));
  }
}

export interface JudgeResponsesInput {
  /** For progress and messages only: nothing is written at these coordinates. */
  stageId: string;
  step: number;
  generationKey: string;
  generations: ArtifactRef;
  evalSet: ArtifactRef;
  topics: Record<string, string>;
  judge: EvaluationSpec['judge'];
}
export interface JudgeResponsesResult {
  judgmentKey: string;
  judgments: ArtifactRef;
  judgeModel: string;
  calls: number;
  cacheHits: number;
  unlabelled: number;
  /** Tokens billed by this call (absent in results recorded before tokens were counted). */
  usage?: JudgeUsage;
}

/** The API key for the configured endpoint: the judge's own, or OpenAI's only when the endpoint is OpenAI's. */
function judgeApiKey(env: ReturnType<typeof workerEnv>): string | undefined {
  if (env.VALUEDRIFT_JUDGE_API_KEY) return env.VALUEDRIFT_JUDGE_API_KEY;
  return env.VALUEDRIFT_JUDGE_BASE_URL ? undefined : env.OPENAI_API_KEY;
}

/**
 * A judge failure as the activity reports it. A refusal no retry can fix (HTTP 400/401/403/404, a
 * model that returns no logprobs) is non-retryable: the activity fails at once instead of backing
 * off for hours. Retries exhausted on a transient failure stay retryable (the activity's own policy
 * tries again later). The provider's text goes into workflow history, so every credential value of
 * this worker is scrubbed from it. Anything else (cancellation, a store error) passes unchanged.
 */
export function judgeFailure(err: unknown): unknown {
  if (err instanceof JudgeRequestError) {
    const status = err.status === undefined ? {} : { status: err.status };
    return ApplicationFailure.create({ message: scrubSecrets(err.message), type: 'JudgeRequestRefused', nonRetryable: true, details: [status] });
  }
  if (err instanceof JudgeRetriesExhaustedError) {
    return ApplicationFailure.create({ message: scrubSecrets(err.message), type: 'JudgeUnavailable', nonRetryable: false, details: [{ attempts: err.attempts }] });
  }
  return err;
}

/** The judge endpoint this worker asks, or a non-retryable failure when none is configured. */
export function judgeEndpoint(): { env: ReturnType<typeof workerEnv>; apiKey: string | undefined } {
  const env = workerEnv();
  const apiKey = judgeApiKey(env);
  if (!env.VALUEDRIFT_JUDGE_BASE_URL && !apiKey) {
    // A worker without a judge endpoint cannot judge until it is reconfigured.
    throw ApplicationFailure.nonRetryable('no judge endpoint: set VALUEDRIFT_JUDGE_BASE_URL (and VALUEDRIFT_JUDGE_API_KEY), or OPENAI_API_KEY, on the cpu worker', 'JudgeNotConfigured');
  }
  return { env, apiKey };
}

/** The judgment key of a judging request, checking that the generations lie under their key. */
export function judgingKeys(input: JudgeResponsesInput, env: ReturnType<typeof workerEnv>): { judge: ReturnType<typeof judgeIdentity>; key: string; outKey: string } {
  if (input.generations.uri !== uriOf(storeKeys.generations(input.generationKey))) {
    throw ApplicationFailure.nonRetryable(`generations ${input.generations.uri} are not stored under their key ${input.generationKey}`, 'EvaluationKeyMismatch');
  }
  const judge = judgeIdentity(env, input.judge);
  const key = judgmentKey({ generationKey: input.generationKey, judge, topics: input.topics });
  return { judge, key, outKey: storeKeys.judgments(key) };
}

/** One judge item per stored generation, in file order. */
export async function loadJudgeItems(input: JudgeResponsesInput): Promise<JudgeItem[]> {
  const questions = new Map((await loadEvalRows(input.evalSet)).map((r) => [r.id, r] as const));
  const rows = (await getVerified(input.generations))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => GenerationRow.parse(JSON.parse(l)));
  return rows.map((r) => {
    const q = questions.get(r.prompt_id);
    const topic = input.topics[r.category];
    if (!q || !topic) throw ApplicationFailure.nonRetryable(`generation for ${r.prompt_id} (${r.category}) has no question or topic`, 'EvalSetMismatch');
    return { promptId: r.prompt_id, category: r.category, sample: r.sample, question: q.question, response: r.text, topic };
  });
}

/** `budgets`: the judge budget shared by the cpu workers (activities/judge/budget.ts), when the worker sets one. */
export async function judgeResponses(input: JudgeResponsesInput, budgets?: JudgeBudgets): Promise<JudgeResponsesResult> {
  const { env, apiKey } = judgeEndpoint();
  const { judge, key, outKey } = judgingKeys(input, env);
  const mode = input.judge.mode;
  const existing = await getRefIfExists(outKey);
  if (existing) {
    const usage: JudgeUsage = { judgeModel: judge.judgeModel, mode, online: NO_COUNTS, batch: NO_COUNTS, batchIds: [] };
    return { judgmentKey: key, judgments: existing, judgeModel: judge.judgeModel, calls: 0, cacheHits: 0, unlabelled: 0, usage };
  }

  const items = await loadJudgeItems(input);
  const c = activityContext();
  // Every online call's `usage` is counted as its response arrives (usage.ts).
  const tally = new UsageTally();
  const base = createJudgeClient({ baseURL: env.VALUEDRIFT_JUDGE_BASE_URL, apiKey: apiKey ?? 'unset' });
  const budget = budgets?.(base.baseURL, judge.judgeModel);
  // A 429 the provider sends anyway is reported to the shared budget, which pauses every worker's grants.
  const client = base.withOptions({ fetch: budget ? budget.watch(tally.fetch) : tally.fetch });
  let done = 0;
  let total = items.length;
  const beat = setInterval(() => c?.heartbeat({ done, total }), 10_000);
  const result = await judgeAll({
    items,
    client,
    model: judge.judgeModel,
    topLogprobs: judge.topLogprobs,
    concurrency: input.judge.concurrency,
    cache: new StoreJudgeCache(),
    cacheFlushEvery: env.VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY,
    cacheFlushMs: env.VALUEDRIFT_JUDGE_CACHE_FLUSH_MS,
    maxRetries: 8,
    beforeAttempt: budget
      ? async (body, signal) => {
          await budget.acquire({ requests: 1, tokens: estimateTokens(body) }, signal);
        }
      : undefined,
    onProgress: (d, t) => {
      done = d;
      total = t;
    },
    signal: c?.cancellationSignal,
  })
    .catch((err: unknown) => {
      throw judgeFailure(err);
    })
    .finally(() => clearInterval(beat));
  const body = result.judgments.map((j) => JSON.stringify(j)).join('\n') + '\n';
  const judgments = await putBytesOnce(outKey, body, 'application/x-ndjson');
  return {
    judgmentKey: key,
    judgments,
    judgeModel: judge.judgeModel,
    calls: result.calls,
    cacheHits: result.cacheHits,
    unlabelled: result.judgments.filter((j) => j.probs === null).length,
    usage: { judgeModel: judge.judgeModel, mode, online: await tally.counts(), batch: NO_COUNTS, batchIds: [] },
  };
}
