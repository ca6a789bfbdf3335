/**
 * Content keys of a checkpoint's evaluation (DESIGN §2 "Evaluation keys"). Each object an evaluation
 * writes is stored under a hash of everything that determines its bytes, so an evaluation with other
 * settings can never be served another's numbers, and a cached object is never overwritten:
 *
 *   generation key = model content key, eval set sha256, prompt selection (per-category sample and
 *                    its seed), samples per prompt, temperature, max new tokens, generation seed,
 *                    prompt style (and the response suffix when it is used), generation version;
 *   judgment key   = generation key, judge endpoint, judge model, prompt version, top-logprobs,
 *                    the category → topic map;
 *   evaluation key = judgment key, summary version.
 *
 * Pure over its inputs (the judge identity is read from the worker's settings by the caller).
 */
import type { ArtifactRef, ModelHandle } from '../../common/contracts';
import type { EvaluationSpec } from '../../common/spec';
import { canonicalJson, endpointIdentity } from '../judge/cache';
import { DEFAULT_JUDGE_ENDPOINT } from '../judge/client';
import type { JudgeIdentity } from '../judge/judgeAll';
import { JUDGE_PROMPT_VERSION } from '../judge/prompt';
import { sha256Hex } from '../store';

/** Bump when generation changes what the same settings produce (prompt rendering, sampling code). */
export const GENERATION_VERSION = 'gen-v2';
/** Bump when summarising changes what the same judgments produce. */
export const SUMMARY_VERSION = 'summary-v2';

export type PromptStyle = 'chat' | 'response-suffix';

export interface GenerationKeyInput {
  model: ModelHandle;
  promptStyle: PromptStyle;
  evaluation: Pick<EvaluationSpec, 'generationsPerPrompt' | 'temperature' | 'maxNewTokens' | 'baseResponseSuffix' | 'promptsPerCategory'>;
  evalSet: ArtifactRef;
  /** The lineage seed: it selects the prompts (when sampled) and seeds sampling. */
  seed: number;
  step: number;
}

/** The seed the sampler gets for one checkpoint: the lineage seed offset by the step. */
export function generationSeed(seed: number, step: number): number {
  return seed + step;
}

export function generationKey(input: GenerationKeyInput): string {
  const e = input.evaluation;
  return sha256Hex(
    canonicalJson({
      v: GENERATION_VERSION,
      model: input.model.contentKey,
      evalSet: input.evalSet.sha256,
      prompts: { perCategory: e.promptsPerCategory ?? null, seed: input.seed },
      n: e.generationsPerPrompt,
      temperature: e.temperature,
      maxNewTokens: e.maxNewTokens,
      seed: generationSeed(input.seed, input.step),
      promptStyle: input.promptStyle,
      responseSuffix: input.promptStyle === 'response-suffix' ? e.baseResponseSuffix : null,
    }),
  );
}

/**
 * The judge a worker actually asks: its settings' endpoint, and the spec's model unless the worker
 * overrides it (VALUEDRIFT_JUDGE_MODEL). A model the endpoint serves under its own name
 * (VALUEDRIFT_JUDGE_SERVED_MODELS) is never overridden, so a spec may pick among them.
 */
export function judgeIdentity(
  settings: {
    VALUEDRIFT_JUDGE_BASE_URL?: string | undefined;
    VALUEDRIFT_JUDGE_MODEL?: string | undefined;
    VALUEDRIFT_JUDGE_SERVED_MODELS?: readonly string[] | undefined;
  },
  judge: Pick<EvaluationSpec['judge'], 'model' | 'topLogprobs'>,
): JudgeIdentity {
  const served = settings.VALUEDRIFT_JUDGE_SERVED_MODELS ?? [];
  return {
    endpoint: endpointIdentity(settings.VALUEDRIFT_JUDGE_BASE_URL ?? DEFAULT_JUDGE_ENDPOINT),
    judgeModel: served.includes(judge.model) ? judge.model : (settings.VALUEDRIFT_JUDGE_MODEL ?? judge.model),
    topLogprobs: judge.topLogprobs,
  };
}

export function judgmentKey(input: { generationKey: string; judge: JudgeIdentity; topics: Record<string, string> }): string {
  return sha256Hex(
    canonicalJson({
      generations: input.generationKey,
      endpoint: input.judge.endpoint,
      model: input.judge.judgeModel,
      topLogprobs: input.judge.topLogprobs,
      promptVersion: JUDGE_PROMPT_VERSION,
      topics: input.topics,
    }),
  );
}

export function evaluationKey(judgmentKeyHex: string): string {
  return sha256Hex(canonicalJson({ v: SUMMARY_VERSION, judgments: judgmentKeyHex }));
}

export interface EvaluationKeys {
  generationKey: string;
  judgmentKey: string;
  evalKey: string;
}

export function evaluationKeys(input: GenerationKeyInput & { judge: JudgeIdentity; topics: Record<string, string> }): EvaluationKeys {
  const g = generationKey(input);
  const j = judgmentKey({ generationKey: g, judge: input.judge, topics: input.topics });
  return { generationKey: g, judgmentKey: j, evalKey: evaluationKey(j) };
}
