/**
 * Names that must agree between workflows, workers, the CLI and tests: task queues (versioned, so a
 * breaking change can run beside the old workers), workflow-ID builders and search attributes.
 * Pure module: imported by workflow code.
 */

/** Bump the suffix when an incompatible worker build must not pick up old tasks. */
export const TASK_QUEUES = {
  /** Workflow tasks only; served by the cpu role. */
  workflows: 'valuedrift-workflows-v1',
  /** Training and generation: one GPU job per slot. */
  gpu: 'valuedrift-gpu-v1',
  /** Judge calls, store work, metrics and reports. */
  cpu: 'valuedrift-cpu-v1',
} as const;

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

/** Store layout (DESIGN §4). Keys, not URIs: the bucket comes from worker env. */
export const storeKeys = {
  lineageRoot: (lineage: string) => `lineages/${lineage}`,
  checkpoint: (lineage: string, stageId: string, step: number) =>
    `lineages/${lineage}/${stageId}/checkpoints/step-${step}`,
  evalDir: (lineage: string, stageId: string, step: number) => `lineages/${lineage}/${stageId}/evals/step-${step}`,
  drift: (lineage: string, stageId: string) => `lineages/${lineage}/${stageId}/drift.json`,
  report: (lineage: string) => `lineages/${lineage}/report`,
  spec: (lineage: string) => `lineages/${lineage}/spec.json`,
  dataset: (sha256: string) => `datasets/${sha256}.jsonl`,
  stageCache: (stageKey: string) => `cache/stages/${stageKey}.json`,
  evalCache: (evalKey: string) => `cache/evals/${evalKey}.json`,
  judgeCache: (key: string) => `cache/judge/${key.slice(0, 2)}/${key}.json`,
};

/** Signal and query names shared by workflows and the activities/CLI that address them by name. */
export const SIGNALS = {
  /** activity → stage workflow: a checkpoint is uploaded completely. */
  checkpointReady: 'checkpointReady',
  /** lineage → stage workflow: the evaluation of the stage's starting point is done. */
  startEvaluated: 'startEvaluated',
  /** stage → lineage workflow: progress worth showing (checkpoint, evaluation). */
  stageEvent: 'stageEvent',
} as const;
export const QUERIES = { progress: 'progress' } as const;
