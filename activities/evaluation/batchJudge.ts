/**
 * Batch-mode judging (`evaluation.judge.mode: "batch"`) as three short activities the evaluation
 * workflow drives, so the wait for a batch (minutes to a day and more) is a series of durable timers
 * in the workflow, not an activity held open:
 *
 *   submitJudgeBatch   uncached judge requests → one JSONL file → one batch; returns its id and the
 *                      poll schedule (from this worker's settings, so the workflow stays deterministic);
 *   pollJudgeBatch     one look at the batch (and, past the poll budget, a cancel request);
 *   collectJudgeBatch  the batch's answers into the judge cache, with the tokens it billed.
 *
 * The workflow then runs the ordinary judgeResponses, which finds the batch's answers in the cache,
 * judges what the batch did not serve (failed lines, an expired or cancelled batch) online, and
 * writes the judgments file. A submit retried after the batch was created — a worker killed between
 * creating it and reporting it — resumes that batch: its id is in the attempt's heartbeat details
 * and in a small marker object under the judgment key (`cache/judge-batches/<judgmentKey>.json`),
 * which also lets a re-run of the same judgments (another lineage, a reset workflow) join it.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Batch } from 'openai/resources/batches';
import { z } from 'zod';
import { activityContext } from '../context';
import { collectBatchOutput, failedBatchError, isTerminal, lookUpBatchItems, pollBatchOnce, submitBatchRequests, type BatchRetry } from '../judge/batch';
import type { JudgeBudgets } from '../judge/budget';
import { createJudgeClient } from '../judge/client';
import { groupByCacheKey } from '../judge/judgeAll';
import { DEFAULT_BACKOFF } from '../judge/retry';
import { getJsonIfExists, getRefIfExists, putJson, uriOf } from '../store';
import { judgeEndpoint, judgeFailure, judgingKeys, loadJudgeItems, StoreJudgeCache, type JudgeResponsesInput } from './judge';
import type { UsageCounts } from './usage';

/** Where a judgment key's batch id is remembered. */
export const batchMarkerKey = (judgmentKey: string): string => `cache/judge-batches/${judgmentKey}.json`;
const BatchMarker = z.object({ batchId: z.string().min(1), endpoint: z.string(), createdAt: z.string() });
const BatchBeat = z.object({ batchId: z.string().min(1) });

export interface SubmitJudgeBatchResult {
  /** Null when there is nothing to send (judgments stored, or every answer cached): judge online at once. */
  batchId: string | null;
  /** True when an earlier attempt's or run's batch was found instead of a new one created. */
  resumed: boolean;
  /** Requests in the batch (distinct uncached items). */
  requests: number;
  /** Poll schedule (worker settings): first wait, longest wait, most polls before cancelling. */
  pollMs: number;
  maxPollMs: number;
  maxPolls: number;
}

export interface PollJudgeBatchInput {
  batchId: string;
  /** Ask the provider to cancel (the poll budget is spent); the batch ends `cancelled` with what it finished. */
  cancel?: boolean;
}
export interface PollJudgeBatchResult {
  batchId: string;
  status: Batch['status'];
  terminal: boolean;
  completed: number;
  failed: number;
  total: number;
}

export interface CollectJudgeBatchResult {
  batchId: string;
  status: Batch['status'];
  /** Answers the batch served (written to the cache) and the tokens billed for them. */
  batch: UsageCounts;
}

const RETRY = { maxRetries: 8, backoff: DEFAULT_BACKOFF };

function batchClient() {
  const { env, apiKey } = judgeEndpoint();
  return { env, client: createJudgeClient({ baseURL: env.VALUEDRIFT_JUDGE_BASE_URL, apiKey: apiKey ?? 'unset' }) };
}

function retryOptions(): BatchRetry {
  return { ...RETRY, signal: activityContext()?.cancellationSignal ?? new AbortController().signal };
}

/**
 * Requests the batch endpoints are about to get, taken from the shared judge budget (when the worker
 * sets one): counted as requests with no tokens, since a batch's tokens count against the provider's
 * separate batch queue limit, not the per-minute one. Polls (a few per batch, minutes apart) are not counted.
 */
async function spendBatchRequests(budgets: JudgeBudgets | undefined, endpoint: string, model: string, requests: number, signal: AbortSignal): Promise<void> {
  await budgets?.(endpoint, model)?.acquire({ requests, tokens: 0 }, signal);
}

/** Resumes a batch whose id an earlier attempt heartbeated or an earlier run recorded; else creates one. */
export async function submitJudgeBatch(input: JudgeResponsesInput, budgets?: JudgeBudgets): Promise<SubmitJudgeBatchResult> {
  const { env, client } = batchClient();
  const schedule = { pollMs: env.VALUEDRIFT_JUDGE_BATCH_POLL_MS, maxPollMs: Math.max(env.VALUEDRIFT_JUDGE_BATCH_POLL_MS, env.VALUEDRIFT_JUDGE_BATCH_MAX_POLL_MS), maxPolls: env.VALUEDRIFT_JUDGE_BATCH_MAX_POLLS };
  const { judge, key, outKey } = judgingKeys(input, env);
  if (await getRefIfExists(outKey)) return { batchId: null, resumed: false, requests: 0, ...schedule };
  const retry = retryOptions();
  try {
    // 1. This activity's earlier attempt created a batch (its heartbeat says which).
    const ctx = activityContext();
    const beat = BatchBeat.safeParse(ctx?.info.heartbeatDetails);
    if (beat.success) return { batchId: beat.data.batchId, resumed: true, requests: 0, ...schedule };
    // 2. An earlier run created one for the same judgments and it can still deliver.
    const marker = await getJsonIfExists(uriOf(batchMarkerKey(key)), BatchMarker);
    if (marker && marker.endpoint === client.baseURL) {
      const known = await pollBatchOnce(client, marker.batchId, retry).catch(() => undefined);
      if (known && known.status !== 'cancelled' && known.status !== 'cancelling' && known.status !== 'failed') {
        ctx?.heartbeat({ batchId: marker.batchId });
        return { batchId: marker.batchId, resumed: true, requests: known.request_counts?.total ?? 0, ...schedule };
      }
    }
    // 3. A new batch of what the cache does not hold.
    const items = await loadJudgeItems(input);
    const plan = await lookUpBatchItems({ items, client, model: judge.judgeModel, topLogprobs: judge.topLogprobs, cache: new StoreJudgeCache(), concurrency: input.judge.concurrency });
    if (plan.missing.length === 0) return { batchId: null, resumed: false, requests: 0, ...schedule };
    // The upload and the batch's creation; heartbeats (no batch id yet) while the budget makes it wait.
    const waiting = setInterval(() => ctx?.heartbeat(), 10_000);
    await spendBatchRequests(budgets, client.baseURL, judge.judgeModel, 2, retry.signal).finally(() => clearInterval(waiting));
    const batchId = await submitBatchRequests({ client, model: judge.judgeModel, topLogprobs: judge.topLogprobs }, plan.items, plan.groups, plan.missing, retry);
    // Recorded before anything else can fail: a retry (heartbeat) or a re-run (marker) resumes it.
    ctx?.heartbeat({ batchId });
    await putJson(batchMarkerKey(key), { batchId, endpoint: client.baseURL, createdAt: new Date().toISOString() });
    return { batchId, resumed: false, requests: plan.missing.length, ...schedule };
  } catch (err) {
    throw judgeFailure(err);
  }
}

export async function pollJudgeBatch(input: PollJudgeBatchInput): Promise<PollJudgeBatchResult> {
  const { client } = batchClient();
  try {
    let batch = await pollBatchOnce(client, input.batchId, retryOptions());
    if (input.cancel && !isTerminal(batch.status) && batch.status !== 'cancelling') batch = await client.batches.cancel(input.batchId);
    // A rejected input file: resubmitting it would get the same verdict.
    if (batch.status === 'failed') throw failedBatchError(batch);
    const counts = batch.request_counts ?? { completed: 0, failed: 0, total: 0 };
    return { batchId: input.batchId, status: batch.status, terminal: isTerminal(batch.status), completed: counts.completed, failed: counts.failed, total: counts.total };
  } catch (err) {
    throw judgeFailure(err);
  }
}

export async function collectJudgeBatch(input: JudgeResponsesInput & { batchId: string }, budgets?: JudgeBudgets): Promise<CollectJudgeBatchResult> {
  const { env, client } = batchClient();
  const { judge } = judgingKeys(input, env);
  const c = activityContext();
  const beat = setInterval(() => c?.heartbeat({ batchId: input.batchId }), 10_000);
  try {
    const retry = retryOptions();
    // One look at the batch, then its output and error files.
    await spendBatchRequests(budgets, client.baseURL, judge.judgeModel, 3, retry.signal);
    const batch = await pollBatchOnce(client, input.batchId, retry);
    if (!isTerminal(batch.status)) {
      throw ApplicationFailure.retryable(`judge batch ${input.batchId} is ${batch.status}, not finished`, 'JudgeBatchNotFinished');
    }
    const items = await loadJudgeItems(input);
    const wanted = new Set(groupByCacheKey(items, { endpoint: client.baseURL, judgeModel: judge.judgeModel, topLogprobs: judge.topLogprobs }).keys());
    const out = await collectBatchOutput({ client, model: judge.judgeModel, cache: new StoreJudgeCache(), cacheFlushEvery: env.VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY }, batch, wanted, retry);
    return { batchId: input.batchId, status: batch.status, batch: { calls: out.served.size, ...out.usage } };
  } catch (err) {
    throw judgeFailure(err);
  } finally {
    clearInterval(beat);
  }
}
