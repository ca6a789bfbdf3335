/**
 * `summariseEvaluation`: v(T) per topic with the per-prompt spread and 95 % CI, from one checkpoint's
 * judgments. The summary is content-addressed by the evaluation key and written once; the evaluation
 * record then points at it, and the lineage's evals/step-<n>/ folder at both.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { ArtifactRef, EvaluationSummary, Judgment, StanceProbs } from '../../common/contracts';
import { Judgment as JudgmentSchema } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import { summariseCheckpoint } from '../../common/drift';
import { JUDGE_PROMPT_VERSION } from '../judge/prompt';
import { getVerified, putBytesOnce, sha256Hex, uriOf } from '../store';
import { workerEnv } from '../env';
import { evaluationKey } from './keys';
import { costOf, JudgeUsage, loadPriceTable, type JudgeUsageRecord } from './usage';
import { loadEvaluationSummary, placeEvaluation, recordEvaluation, type EvaluationPlace } from './lookup';

export interface SummariseEvaluationInput extends EvaluationPlace {
  generationKey: string;
  generations: ArtifactRef;
  judgmentKey: string;
  judgments: ArtifactRef;
  judgeModel: string;
  topics: Record<string, string>;
  /** The tokens judging billed (written into the summary with their cost; absent in old histories). */
  judgeUsage?: JudgeUsage;
}
export interface SummariseEvaluationResult {
  evalKey: string;
  summary: ArtifactRef;
  v: Record<string, StanceProbs>;
}

export async function summariseEvaluation(input: SummariseEvaluationInput): Promise<SummariseEvaluationResult> {
  if (input.judgments.uri !== uriOf(storeKeys.judgments(input.judgmentKey))) {
    throw ApplicationFailure.nonRetryable(`judgments ${input.judgments.uri} are not stored under their key ${input.judgmentKey}`, 'EvaluationKeyMismatch');
  }
  const evalKey = evaluationKey(input.judgmentKey);
  const judgments: Judgment[] = (await getVerified(input.judgments))
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JudgmentSchema.parse(JSON.parse(l)));
  const placed = summariseCheckpoint({
    lineage: input.lineage,
    stageId: input.stageId,
    step: input.step,
    totalSteps: input.totalSteps,
    judgeModel: input.judgeModel,
    promptVersion: JUDGE_PROMPT_VERSION,
    topics: input.topics,
    judgments,
  });
  const content: EvaluationSummary & { judgeUsage?: JudgeUsageRecord } = { evalKey, judgeModel: placed.judgeModel, promptVersion: placed.promptVersion, topics: placed.topics };
  if (input.judgeUsage) {
    const usage = JudgeUsage.parse(input.judgeUsage);
    const prices = await loadPriceTable(workerEnv().VALUEDRIFT_PRICES_FILE).catch((err: unknown) => {
      throw ApplicationFailure.nonRetryable((err as Error).message, 'BadPriceTable');
    });
    content.judgeUsage = { ...usage, cost: costOf(usage.judgeModel, usage.online, usage.batch, prices) };
  }
  const body = JSON.stringify(content, null, 2) + '\n';
  const summary = await putBytesOnce(storeKeys.summary(evalKey), body, 'application/json');
  // A summary already there (written by an earlier attempt or another lineage) is the one recorded;
  // it is read back only when its bytes differ from the ones just computed.
  const stored = summary.sha256 === sha256Hex(body) ? content : await loadEvaluationSummary(summary);
  const v = Object.fromEntries(Object.entries(stored.topics).map(([k, t]) => [k, t.v]));
  const record = { evalKey, generations: input.generations, judgments: input.judgments, summary, v };
  await recordEvaluation(record);
  await placeEvaluation(input, record, { generationKey: input.generationKey, judgmentKey: input.judgmentKey, evalKey }, stored);
  return { evalKey, summary, v };
}
