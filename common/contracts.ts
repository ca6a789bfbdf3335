/**
 * Contracts shared by workflows, activities and the CLI: artifact references, trainer events,
 * checkpoint summaries and drift results. Pure module (no Node built-ins) so the workflow
 * sandbox can import it.
 */
import { z } from 'zod';

export const STANCES = ['support', 'neutral', 'oppose'] as const;
export const Stance = z.enum(STANCES);
export type Stance = z.infer<typeof Stance>;

/** A pointer to bytes in the store. Workflows pass these, never payloads. */
export const ArtifactRef = z.object({
  uri: z.string().regex(/^s3:\/\/[^/]+\/.+/, 'must be an s3:// URI'),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().nonnegative(),
});
export type ArtifactRef = z.infer<typeof ArtifactRef>;

export const Checkpoint = z.object({
  stageId: z.string(),
  step: z.number().int().nonnegative(),
  totalSteps: z.number().int().nonnegative(),
  /** The checkpoint's manifest: its sha256 is the checkpoint's content hash. */
  ref: ArtifactRef,
});
export type Checkpoint = z.infer<typeof Checkpoint>;

// ---- trainer event protocol (one JSON object per stdout line) ----
export const TrainerEvent = z.discriminatedUnion('event', [
  z.object({
    event: z.literal('progress'),
    step: z.number().int().nonnegative(),
    total: z.number().int().nonnegative(),
    loss: z.number().nullable().optional(),
    lr: z.number().nullable().optional(),
  }),
  z.object({ event: z.literal('checkpoint'), step: z.number().int().nonnegative(), path: z.string() }),
  z.object({ event: z.literal('done'), finalStep: z.number().int().nonnegative(), path: z.string() }),
  z.object({
    event: z.literal('error'),
    kind: z.enum(['bad_config', 'dataset_schema', 'model_not_found', 'out_of_memory', 'transient']),
    message: z.string(),
  }),
]);
export type TrainerEvent = z.infer<typeof TrainerEvent>;
/** Error kinds a retry cannot fix: the same config, data and model give the same refusal. */
export const NON_RETRYABLE_TRAINER_ERRORS = ['bad_config', 'dataset_schema', 'model_not_found', 'out_of_memory'] as const;

// ---- evaluation ----
export const StanceProbs = z.object({ support: z.number(), neutral: z.number(), oppose: z.number() });
export type StanceProbs = z.infer<typeof StanceProbs>;

/** One judged generation (a line of judgments.jsonl). `probs` is null when no label was found. */
export const Judgment = z.object({
  promptId: z.string(),
  category: z.string(),
  sample: z.number().int().nonnegative(),
  probs: StanceProbs.nullable(),
  /** Raw label tokens seen, for audit. */
  topTokens: z.array(z.object({ token: z.string(), logprob: z.number() })).optional(),
  cached: z.boolean().optional(),
});
export type Judgment = z.infer<typeof Judgment>;

export const TopicSummary = z.object({
  topic: z.string(),
  /** Prompts with at least one labelled generation. */
  prompts: z.number().int().nonnegative(),
  /** Generations for which the judge returned no stance label (excluded from the means). */
  unlabelled: z.number().int().nonnegative(),
  /** v(T): mean over prompts of the mean over that prompt's generations of p(s|x,y,T). */
  v: StanceProbs,
  /** Per-prompt means: the spread behind the confidence interval. */
  perPrompt: z.array(z.object({ promptId: z.string(), p: StanceProbs, samples: z.number().int() })),
  /** 95 % CI of v(T) per stance over prompts (t-based on the per-prompt means). */
  ci95: z.object({ support: z.tuple([z.number(), z.number()]), neutral: z.tuple([z.number(), z.number()]), oppose: z.tuple([z.number(), z.number()]) }),
});
export type TopicSummary = z.infer<typeof TopicSummary>;

/**
 * What evaluating one model produces, whatever lineage or step it was evaluated as: stored
 * content-addressed under its evaluation key (`cache/summaries/<evalKey>.json`), never rewritten.
 */
export const EvaluationSummary = z.object({
  evalKey: z.string(),
  judgeModel: z.string(),
  promptVersion: z.string(),
  /** keyed by category id */
  topics: z.record(z.string(), TopicSummary),
});
export type EvaluationSummary = z.infer<typeof EvaluationSummary>;

/** An evaluation placed in a lineage: the summary with its coordinates (summary.json, drift inputs). */
export const CheckpointSummary = z.object({
  lineage: z.string(),
  stageId: z.string(),
  step: z.number().int().nonnegative(),
  totalSteps: z.number().int().nonnegative(),
  judgeModel: z.string(),
  promptVersion: z.string(),
  /** keyed by category id */
  topics: z.record(z.string(), TopicSummary),
});
export type CheckpointSummary = z.infer<typeof CheckpointSummary>;

/** Where one checkpoint's evaluation lives: `lineages/<l>/<stage>/evals/step-<n>/evaluation.json`. */
export const EvaluationPointer = z.object({
  evalKey: z.string(),
  generationKey: z.string(),
  judgmentKey: z.string(),
  generations: ArtifactRef,
  judgments: ArtifactRef,
  summary: ArtifactRef,
});
export type EvaluationPointer = z.infer<typeof EvaluationPointer>;

export const TrajectoryPoint = z.object({ step: z.number().int(), v: z.number(), lo: z.number(), hi: z.number() });
export const StanceDrift = z.object({
  /** M = v_end − v_start */
  M: z.number(),
  /** η = η_ext / η_total (see common/drift.ts for the exact reading) */
  eta: z.number(),
  etaExtStep: z.number().int(),
  extremum: z.number(),
  vStart: z.number(),
  vEnd: z.number(),
  trajectory: z.array(TrajectoryPoint),
});
export type StanceDrift = z.infer<typeof StanceDrift>;

/** drift.json of a stage. */
export const StageDrift = z.object({
  lineage: z.string(),
  stageId: z.string(),
  totalSteps: z.number().int().nonnegative(),
  steps: z.array(z.number().int()),
  topics: z.record(z.string(), z.object({ topic: z.string(), stances: z.object({ support: StanceDrift, neutral: StanceDrift, oppose: StanceDrift }) })),
});
export type StageDrift = z.infer<typeof StageDrift>;

/**
 * A model a stage or evaluation starts from: either the spec's base model URI (`pkg:`, `tiny:`,
 * `hf:`, a path) or a checkpoint in the store (its manifest). `contentKey` identifies the weights
 * for cache keys: a checkpoint's manifest sha256, or a base model's key (a hash of its weights for
 * packaged and local models, hub id and revision for hub models; see resolveBaseModel).
 */
export const ModelHandle = z.object({
  uri: z.string(),
  manifest: ArtifactRef.optional(),
  contentKey: z.string(),
});
export type ModelHandle = z.infer<typeof ModelHandle>;

/** Signal payload: the trainer wrote a checkpoint and it is completely uploaded. */
export const CheckpointAnnouncement = z.object({
  stageId: z.string(),
  step: z.number().int().nonnegative(),
  totalSteps: z.number().int().nonnegative(),
  ref: ArtifactRef,
  loss: z.number().nullable().optional(),
});
export type CheckpointAnnouncement = z.infer<typeof CheckpointAnnouncement>;
