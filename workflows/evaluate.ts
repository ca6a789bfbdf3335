import { patched, proxyActivities, sleep } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { JudgeResponsesInput, JudgeResponsesResult } from '../activities/evaluation/judge';
import type { JudgeUsage } from '../activities/evaluation/usage';
import type { ArtifactRef, ModelHandle, StanceProbs } from '../common/contracts';
import { TASK_QUEUES } from '../common/config';
import type { EvaluationSpec } from '../common/spec';
import { generationOn, judging, store } from './proxies';

/**
 * Batch mode: submitting uploads a JSONL file and collecting downloads one (seconds to minutes);
 * both heartbeat, and a retried submit resumes the batch its earlier attempt created.
 */
const batchJudging = proxyActivities<Pick<Activities, 'submitJudgeBatch' | 'collectJudgeBatch'>>({
  taskQueue: TASK_QUEUES.cpu,
  startToCloseTimeout: '1 hour',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '30s', backoffCoefficient: 2, maximumInterval: '30 minutes', maximumAttempts: 20 },
});
/** One look at a batch: a single request, so a lost worker is noticed within the minute. */
const batchPolling = proxyActivities<Pick<Activities, 'pollJudgeBatch'>>({
  taskQueue: TASK_QUEUES.cpu,
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '10 minutes', maximumAttempts: 30 },
});
/** Polls after the poll budget is spent, waiting for a cancelled batch to settle before judging the rest online. */
const CANCEL_GRACE_POLLS = 10;

/**
 * Judges through the Batch API: submit, then durable timers with one short poll after each (the
 * wait doubling from the worker's VALUEDRIFT_JUDGE_BATCH_POLL_MS to its ..._MAX_POLL_MS, at most
 * ..._MAX_POLLS polls: a bounded history however long the provider takes), collect the answers
 * into the judge cache, and let judgeResponses write the judgments, judging online whatever the
 * batch did not serve. A batch's status counts are not kept in history beyond each poll's result.
 */
async function judgeInBatch(judgeInput: JudgeResponsesInput): Promise<JudgeResponsesResult> {
  const sub = await batchJudging.submitJudgeBatch(judgeInput);
  let collected: { batchId: string; calls: number; promptTokens: number; completionTokens: number } | undefined;
  if (sub.batchId !== null) {
    let wait = sub.pollMs;
    let terminal = false;
    for (let polls = 1; !terminal && polls <= sub.maxPolls + CANCEL_GRACE_POLLS; polls++) {
      await sleep(wait);
      const p = await batchPolling.pollJudgeBatch({ batchId: sub.batchId, cancel: polls >= sub.maxPolls });
      terminal = p.terminal;
      wait = Math.min(wait * 2, sub.maxPollMs);
    }
    // A batch that never settled is left to the provider; its requests are judged online below.
    if (terminal) {
      const c = await batchJudging.collectJudgeBatch({ ...judgeInput, batchId: sub.batchId });
      collected = { batchId: c.batchId, ...c.batch };
    }
  }
  const online = await judging.judgeResponses(judgeInput);
  if (!online.usage) return online;
  const usage: JudgeUsage = {
    ...online.usage,
    mode: 'batch',
    batch: collected ? { calls: collected.calls, promptTokens: collected.promptTokens, completionTokens: collected.completionTokens } : online.usage.batch,
    batchIds: sub.batchId === null ? [] : [sub.batchId],
  };
  return { ...online, calls: online.calls + (collected?.calls ?? 0), usage };
}

export interface EvaluateCheckpointInput {
  lineage: string;
  stageId: string;
  step: number;
  totalSteps: number;
  model: ModelHandle;
  promptStyle: 'chat' | 'response-suffix';
  evaluation: EvaluationSpec;
  evalSet: ArtifactRef;
  seed: number;
}

export interface EvaluateCheckpointResult {
  stageId: string;
  step: number;
  /** The evaluation's content key (model, eval set, prompts, generation settings, seed, judge). */
  evalKey: string;
  /** The content-addressed summary (`cache/summaries/<evalKey>.json`); never rewritten. */
  summary: ArtifactRef;
  /** v(T) per category: small enough to keep in history. */
  v: Record<string, StanceProbs>;
  cached: boolean;
}

/**
 * Evaluates one checkpoint: generate (GPU queue) → judge (CPU queue) → summarise. Every output is
 * stored under a key derived from everything that determines it, so a checkpoint already evaluated
 * with the same settings is answered from the evaluation cache, and one evaluated with other
 * settings is evaluated afresh. The lineage's evals/step-<n>/ folder gets a pointer to the result.
 */
export async function evaluateCheckpointWorkflow(input: EvaluateCheckpointInput): Promise<EvaluateCheckpointResult> {
  const { lineage, stageId, step, totalSteps } = input;
  const { keys, hit, generations } = await store.lookupEvaluation({
    lineage,
    stageId,
    step,
    totalSteps,
    model: input.model,
    promptStyle: input.promptStyle,
    evaluation: input.evaluation,
    evalSet: input.evalSet,
    seed: input.seed,
  });
  if (hit) return { stageId, step, evalKey: keys.evalKey, summary: hit.summary, v: hit.v, cached: true };
  // Samples already stored under their key (e.g. the same checkpoint judged by another judge) are not generated again.
  const gen = generations
    ? { generationKey: keys.generationKey, generations }
    : await generationOn(input.evaluation.generationGpus).generateResponses({
        lineage,
        stageId,
        step,
        model: input.model,
        promptStyle: input.promptStyle,
        evaluation: input.evaluation,
        evalSet: input.evalSet,
        seed: input.seed,
      });
  const judgeInput: JudgeResponsesInput = {
    stageId,
    step,
    generationKey: gen.generationKey,
    generations: gen.generations,
    evalSet: input.evalSet,
    topics: input.evaluation.topics,
    judge: input.evaluation.judge,
  };
  // Histories from before batch mode judged online whatever the mode said: they replay that way.
  const judged = input.evaluation.judge.mode === 'batch' && patched('judge-batch-mode') ? await judgeInBatch(judgeInput) : await judging.judgeResponses(judgeInput);
  const s = await store.summariseEvaluation({
    lineage,
    stageId,
    step,
    totalSteps,
    generationKey: gen.generationKey,
    generations: gen.generations,
    judgmentKey: judged.judgmentKey,
    judgments: judged.judgments,
    judgeModel: judged.judgeModel,
    topics: input.evaluation.topics,
    ...(judged.usage && { judgeUsage: judged.usage }),
  });
  return { stageId, step, evalKey: s.evalKey, summary: s.summary, v: s.v, cached: false };
}
