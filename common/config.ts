/**
 * Names that must agree between workflows, workers, the CLI and tests: task queues (versioned, so a
 * breaking change can run beside the old workers), workflow-ID builders and search attributes.
 * Pure module: imported by workflow code.
 */

/**
 * Bump the suffix when an incompatible worker build must not pick up old tasks. v2: one-way workflows
 * and content-addressed evaluations (activity inputs and results changed shape).
 */
export const TASK_QUEUES = {
  /** Workflow tasks only; served by the cpu role. */
  workflows: 'valuedrift-workflows-v2',
  /** Training and generation: one GPU job per slot. */
  gpu: 'valuedrift-gpu-v2',
  /** Judge calls, store work, metrics and reports. */
  cpu: 'valuedrift-cpu-v2',
} as const;

/**
 * The queue of jobs that train on `gpus` GPUs: polled only by gpu workers with at least that many
 * (worker/main.ts), so a job is never taken by a node too small for it. 0-GPU jobs, generation and
 * model hashing use the plain gpu queue.
 */
export function gpuTaskQueue(gpus: number): string {
  return gpus > 0 ? `${TASK_QUEUES.gpu}-x${gpus}` : TASK_QUEUES.gpu;
}

/**
 * The queue of one member (leader or follower) of a multi-node training group whose nodes each train
 * on `gpus` GPUs (0: CPU processes). Polled only by gpu workers that can take part in multi-node jobs
 * (VALUEDRIFT_SHARED_DIR set, the same mount on every node) and have at least that many GPUs, with the
 * same GPU slots as `gpuTaskQueue`: a member holding a node's GPUs keeps other jobs, and the other
 * members of its group, off them.
 */
export function gpuMultiNodeTaskQueue(gpus: number): string {
  return `${TASK_QUEUES.gpu}-multinode-x${Math.max(0, gpus)}`;
}

export const BASE_STAGE_ID = 'base';

/**
 * Deterministic workflow IDs: the lineage name plus stage plus step. Starting the same lineage twice
 * while it runs is refused by the server instead of training twice.
 */
export const workflowIds = {
  lineage: (lineage: string): string => `valuedrift/${lineage}`,
  stage: (lineage: string, stageId: string): string => `valuedrift/${lineage}/${stageId}`,
  evaluation: (lineage: string, stageId: string, step: number): string =>
    `valuedrift/${lineage}/${stageId}/eval/step-${step}`,
};

/** Search attributes set on lineage and stage workflows (all Keyword). */
export const SEARCH_ATTRIBUTES = ['Lineage', 'BaseModel', 'SftDataset', 'Algorithm', 'PreferenceDataset'] as const;
export type SearchAttributeName = (typeof SEARCH_ATTRIBUTES)[number];

/**
 * Store layout (DESIGN §4). Keys, not URIs: the bucket comes from worker env. The only place store
 * paths are built.
 *
 * Two kinds of place: content-addressed objects under `cache/` and `datasets/` (the key is a hash
 * of everything that determines the bytes, so an object there is written once and never replaced),
 * and a lineage's own layout under `lineages/<lineage>/…`, which holds checkpoints, pointers to the
 * content-addressed evaluation objects and copies made for people to browse. Cache records only
 * ever reference content-addressed objects or checkpoints (whose stage the lineage claims for good),
 * never a browsing copy that a later run may rewrite.
 */
export const storeKeys = {
  lineageRoot: (lineage: string) => `lineages/${lineage}`,
  /** What the lineage was first started with (base model, datasets, stage configs): later runs must match. */
  lineageRecord: (lineage: string) => `lineages/${lineage}/lineage.json`,
  /** The stage key that owns this lineage's checkpoints of a stage id. */
  stageMarker: (lineage: string, stageId: string) => `lineages/${lineage}/${stageId}/stage.json`,
  checkpoint: (lineage: string, stageId: string, step: number) =>
    `lineages/${lineage}/${stageId}/checkpoints/step-${step}`,
  checkpointsPrefix: (lineage: string, stageId: string) => `lineages/${lineage}/${stageId}/checkpoints/`,
  /**
   * One training attempt's TensorBoard event files and scalars.jsonl. Attempts are numbered per stage
   * (1, 2, … across retries and re-runs), so an attempt only ever writes its own objects.
   */
  tensorboard: (lineage: string, stageId: string, attempt: number) => `lineages/${lineage}/${stageId}/tensorboard/attempt-${attempt}`,
  tensorboardPrefix: (lineage: string, stageId: string) => `lineages/${lineage}/${stageId}/tensorboard/`,
  /** One training attempt's full trainer stdout and stderr. */
  trainerLog: (lineage: string, stageId: string, attempt: number) => `lineages/${lineage}/${stageId}/logs/attempt-${attempt}.log`,
  trainerLogsPrefix: (lineage: string, stageId: string) => `lineages/${lineage}/${stageId}/logs/`,
  evalDir: (lineage: string, stageId: string, step: number) => `lineages/${lineage}/${stageId}/evals/step-${step}`,
  /** Pointer to the content-addressed generations, judgments and summary of one checkpoint's evaluation. */
  evalPointer: (lineage: string, stageId: string, step: number) => `lineages/${lineage}/${stageId}/evals/step-${step}/evaluation.json`,
  /** The summary with this lineage's coordinates (stage, step), for people and for drift. */
  evalSummaryCopy: (lineage: string, stageId: string, step: number) => `lineages/${lineage}/${stageId}/evals/step-${step}/summary.json`,
  drift: (lineage: string, stageId: string) => `lineages/${lineage}/${stageId}/drift.json`,
  /** The exact drift inputs beside drift.json (`lineage drift` reproduces it). */
  driftInputs: (lineage: string, stageId: string) => `lineages/${lineage}/${stageId}/summaries.jsonl`,
  report: (lineage: string) => `lineages/${lineage}/report`,
  reportPage: (lineage: string) => `lineages/${lineage}/report/index.html`,
  reportFigure: (lineage: string, name: string) => `lineages/${lineage}/report/figures/${name}.svg`,
  spec: (lineage: string) => `lineages/${lineage}/spec.json`,
  dataset: (sha256: string) => `datasets/${sha256}.jsonl`,
  stageCache: (stageKey: string) => `cache/stages/${stageKey}.json`,
  evalCache: (evalKey: string) => `cache/evals/${evalKey}.json`,
  judgeCache: (key: string) => `cache/judge/${key.slice(0, 2)}/${key}.json`,
  /** Content-addressed evaluation objects (write-once). */
  generations: (generationKey: string) => `cache/generations/${generationKey}.jsonl`,
  judgments: (judgmentKey: string) => `cache/judgments/${judgmentKey}.jsonl`,
  summary: (evalKey: string) => `cache/summaries/${evalKey}.json`,
};

/** A checkpoint's folder URI from its manifest's URI (`…/step-N/manifest.json` → `…/step-N`). */
export function checkpointDirUri(manifestUri: string): string {
  const suffix = '/manifest.json';
  if (!manifestUri.endsWith(suffix)) throw new Error(`not a checkpoint manifest URI: ${manifestUri}`);
  return manifestUri.slice(0, -suffix.length);
}

/**
 * Signal and query names shared by workflows and the activities/CLI that address them by name. Data
 * flows one way (children return results to parents); the one signal is the training activity's
 * checkpoint announcement to its stage workflow.
 */
export const SIGNALS = {
  /** activity → stage workflow: a checkpoint is uploaded completely. */
  checkpointReady: 'checkpointReady',
} as const;
export const QUERIES = { progress: 'progress' } as const;
