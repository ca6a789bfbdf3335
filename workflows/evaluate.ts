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
    : await generation.generateResponses({
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
    stageId,
    step,
    generationKey: gen.generationKey,
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
    generationKey: gen.generationKey,
    generations: gen.generations,
    judgmentKey: judged.judgmentKey,
    judgments: judged.judgments,
    judgeModel: judged.judgeModel,
    topics: input.evaluation.topics,
  });
  return { stageId, step, evalKey: s.evalKey, summary: s.summary, v: s.v, cached: false };
}
