import type { ArtifactRef, ModelHandle, StanceProbs } from '../common/contracts';
import type { EvaluationSpec } from '../common/spec';
import { generation, judging, store } from './proxies';

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
  summary: ArtifactRef;
  /** v(T) per category: small enough to keep in history. */
  v: Record<string, StanceProbs>;
  cached: boolean;
}

/**
 * Evaluates one checkpoint: generate (GPU queue) → judge (CPU queue) → summarise. Safe to re-run: a
 * checkpoint already evaluated with the same settings is answered from the evaluation cache.
 * Writes generations.jsonl, judgments.jsonl and summary.json under the checkpoint's evals/ folder.
 */
export async function evaluateCheckpointWorkflow(input: EvaluateCheckpointInput): Promise<EvaluateCheckpointResult> {
  const { lineage, stageId, step, totalSteps } = input;
  const { evalKey, hit } = await store.lookupEvaluation({
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
  if (hit) return { stageId, step, summary: hit.summary, v: hit.v, cached: true };
  const gen = await generation.generateResponses({
    lineage,
    stageId,
    step,
    model: input.model,
    promptStyle: input.promptStyle,
    evaluation: input.evaluation,
    evalSet: input.evalSet,
    seed: input.seed,
  });
  const judged = await judging.judgeResponses({
    lineage,
    stageId,
    step,
    generations: gen.generations,
    evalSet: input.evalSet,
    topics: input.evaluation.topics,
    judge: input.evaluation.judge,
  });
  const s = await store.summariseEvaluation({
    lineage,
    stageId,
    step,
    totalSteps,
    judgments: judged.judgments,
    judgeModel: judged.judgeModel,
    topics: input.evaluation.topics,
    evalKey,
  });
  return { stageId, step, summary: s.summary, v: s.v, cached: false };
}
