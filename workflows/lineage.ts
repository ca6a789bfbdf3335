import { ActivityFailure, ApplicationFailure, defineQuery, executeChild, ParentClosePolicy, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type { ArtifactRef, ModelHandle } from '../common/contracts';
import { BASE_STAGE_ID, QUERIES, TASK_QUEUES, workflowIds } from '../common/config';
import { searchAttributePairs } from '../common/searchAttributes';
import { buildOrder, formatSpecIssues, stageDependencies, stageSearchAttributes, validateLineageSpec, type DatasetSpec, type StageSpec } from '../common/spec';
import type { DriftRow } from '../activities/evaluation/drift';
import { datasets as datasetActivities, models, store } from './proxies';
import { buildDatasets, sourceDatasets } from './dataset';
import { evaluateCheckpointWorkflow, type EvaluateCheckpointResult } from './evaluate';
import { stageWorkflow, type StageWorkflowResult } from './stage';

export type StageStatus = 'waiting' | 'running' | 'cached' | 'done' | 'failed' | 'skipped';

export interface LineageProgress {
  lineage: string;
  status: 'validating' | 'preparing' | 'running' | 'reporting' | 'done' | 'failed';
  base: { evaluated: boolean };
  /**
   * Stages as the lineage knows them: status, and once a stage is done its steps, checkpoints and
   * evaluations. A running stage's live progress is its own workflow's `progress` query (`workflowId`).
   */
  stages: Array<{
    id: string;
    kind: StageSpec['kind'];
    parent: string;
    status: StageStatus;
    workflowId: string;
    totalSteps: number;
    checkpoints: number[];
    evaluated: number[];
    latestLoss: number | null;
    /** Drift computed (policy stages; reward stages have none). */
    drift: boolean;
    error?: string;
  }>;
  report?: string;
}
export const lineageProgressQuery = defineQuery<LineageProgress>(QUERIES.progress);

export interface LineageResult {
  lineage: string;
  report: ArtifactRef;
  stages: Array<{
    stageId: string;
    kind: string;
    cached: boolean;
    totalSteps: number;
    finalCheckpoint: string;
    /** drift.json; null for a reward stage (a reward model has no stance to drift). */
    drift: ArtifactRef | null;
    driftRows: DriftRow[];
  }>;
}

interface StageDrift {
  drift: ArtifactRef;
  rows: DriftRow[];
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/**
 * Runs a whole lineage from one JSON object (so the Temporal UI's start form can start it): validates
 * the spec, prepares datasets, keys the base model by its weights, binds the lineage name to what it
 * trains, evaluates the base model, runs each stage as a child workflow as soon as its dependencies
 * are done (siblings in parallel), computes each policy stage's drift as soon as both of its ends are
 * evaluated, then writes the report. Data flows one way: children return results; nothing is
 * signalled down or up. An invalid spec fails at once, non-retryably, naming the field; nothing is
 * trained or written. Safe to re-run: finished stages and evaluations come from the store's caches.
 */
export async function lineageWorkflow(input: unknown): Promise<LineageResult> {
  const progress: LineageProgress = { lineage: '', status: 'validating', base: { evaluated: false }, stages: [] };
  setHandler(lineageProgressQuery, () => progress);
  const checked = validateLineageSpec(input);
  if (!checked.ok) {
    // The same spec gives the same refusal: retrying cannot help.
    throw ApplicationFailure.nonRetryable(`invalid lineage spec: ${formatSpecIssues(checked.issues)}`, 'InvalidLineageSpec', checked.issues);
  }
  const spec = checked.spec;
  const lineage = spec.name;
  progress.lineage = lineage;
  progress.stages = spec.stages.map((s) => ({
    id: s.id,
    kind: s.kind,
    parent: s.parent,
    status: 'waiting',
    workflowId: workflowIds.stage(lineage, s.id),
    totalSteps: 0,
    checkpoints: [],
    evaluated: [],
    latestLoss: null,
    drift: false,
  }));
  const stageProgress = (id: string) => progress.stages.find((s) => s.id === id) as LineageProgress['stages'][number];
  const baseAttrs = { Lineage: lineage, BaseModel: spec.base.name ?? spec.base.model };
  upsertSearchAttributes(searchAttributePairs(baseAttrs));

  progress.status = 'preparing';
  // Built datasets (nodes of the DAG) are children built from the prepared sources. A spec without
  // any schedules exactly what it always did (so older histories replay unchanged).
  const toBuild = buildOrder(spec);
  const sources = toBuild.length ? sourceDatasets(spec, Object.keys(spec.datasets)) : (spec.datasets as Record<string, DatasetSpec>);
  const { datasets } = await datasetActivities.prepareDatasets({ lineage, datasets: sources, seed: spec.seed });
  if (toBuild.length) {
    const built = await buildDatasets(spec, toBuild, datasets, workflowIds.lineage(lineage));
    // A stance analysis (format analysis) is a report, not training data: it is built (a child, after
    // its inputs) but binds nothing, so a new judge never conflicts with the lineage's training inputs.
    for (const [name, b] of Object.entries(built)) if ((b.dataset.format as string) !== 'analysis') datasets[name] = b.dataset;
  }
  const evalSet = (datasets[spec.evaluation.evalSet] as { ref: ArtifactRef }).ref;
  const base: ModelHandle = await models.resolveBaseModel({ uri: spec.base.model });
  await store
    .claimLineage({
      lineage,
      base,
      stages: spec.stages,
      datasets: Object.fromEntries(Object.entries(datasets).map(([name, d]) => [name, d.ref.sha256])),
      seed: spec.seed,
    })
    .catch((err: unknown) => {
      // A name bound to other training inputs fails the lineage itself with the activity's words.
      const cause = err instanceof ActivityFailure ? err.cause : undefined;
      if (cause instanceof ApplicationFailure && cause.type === 'LineageConflict') {
        progress.status = 'failed';
        throw ApplicationFailure.nonRetryable(cause.message, 'LineageConflict', ...(cause.details ?? []));
      }
      throw err;
    });

  progress.status = 'running';
  const failed = new Map<string, string>();
  const baseEval: Promise<EvaluateCheckpointResult> = executeChild(evaluateCheckpointWorkflow, {
    workflowId: workflowIds.evaluation(lineage, BASE_STAGE_ID, 0),
    taskQueue: TASK_QUEUES.workflows,
    parentClosePolicy: ParentClosePolicy.TERMINATE,
    typedSearchAttributes: searchAttributePairs(baseAttrs),
    args: [{ lineage, stageId: BASE_STAGE_ID, step: 0, totalSteps: 0, model: base, promptStyle: spec.base.promptStyle, evaluation: spec.evaluation, evalSet, seed: spec.seed }],
  });
  const baseSettled = baseEval.then(
    () => void (progress.base.evaluated = true),
    (err: unknown) => void failed.set(BASE_STAGE_ID, message(err)),
  );

  const done = new Map<string, StageWorkflowResult>();
  const drifts = new Map<string, StageDrift>();
  const drifting: Array<Promise<void>> = [];
  const running = new Map<string, Promise<void>>();
  const fail = (id: string, why: string) => {
    failed.set(id, why);
    const sp = stageProgress(id);
    sp.status = 'failed';
    sp.error = why;
  };

  /** Drift needs both ends: the stage's starting point (base or parent's final evaluation) and its checkpoints. */
  const computeDrift = async (s: StageSpec, r: StageWorkflowResult): Promise<void> => {
    const start = s.parent === BASE_STAGE_ID ? await baseEval : (done.get(s.parent) as StageWorkflowResult).finalEval;
    if (!start) throw new Error(`stage ${s.parent} has no final evaluation`);
    const d = await store.computeDrift({ lineage, stageId: s.id, totalSteps: r.totalSteps, start: start.summary, checkpoints: r.evaluations });
    drifts.set(s.id, d);
    stageProgress(s.id).drift = true;
  };

  const launch = (s: StageSpec) => {
    const parent: ModelHandle = s.parent === BASE_STAGE_ID ? base : (done.get(s.parent) as StageWorkflowResult).final;
    const rewardModel = s.kind === 'ppo' ? (done.get(s.rewardStage) as StageWorkflowResult).final : undefined;
    stageProgress(s.id).status = 'running';
    const p = executeChild(stageWorkflow, {
      workflowId: workflowIds.stage(lineage, s.id),
      taskQueue: TASK_QUEUES.workflows,
      parentClosePolicy: ParentClosePolicy.TERMINATE,
      typedSearchAttributes: searchAttributePairs(stageSearchAttributes(spec, s.id)),
      args: [{ lineage, stage: s, parent, rewardModel, dataset: datasets[s.dataset] as (typeof datasets)[string], evaluation: spec.evaluation, evalSet, seed: spec.seed }],
    })
      .then(
        (r) => {
          done.set(s.id, r);
          const sp = stageProgress(s.id);
          sp.status = r.cached ? 'cached' : 'done';
          sp.totalSteps = r.totalSteps;
          sp.checkpoints = r.checkpoints;
          sp.evaluated = r.evaluations.map((e) => e.step);
          // Children start now; the drift waits only for its other end (the base evaluation may still run).
          if (s.kind !== 'reward') drifting.push(computeDrift(s, r).catch((err: unknown) => fail(s.id, `drift: ${message(err)}`)));
        },
        (err: unknown) => fail(s.id, message(err)),
      );
    running.set(s.id, p.then(() => void running.delete(s.id)));
  };

  // Schedule: start every stage whose dependencies are done; siblings start together.
  for (;;) {
    for (const s of spec.stages) {
      const sp = stageProgress(s.id);
      if (sp.status !== 'waiting') continue;
      const deps = stageDependencies(s).filter((d) => d !== BASE_STAGE_ID);
      const blocked = deps.find((d) => failed.has(d) || stageProgress(d).status === 'skipped');
      if (blocked || failed.has(BASE_STAGE_ID)) {
        sp.status = 'skipped';
        sp.error = `not run: ${blocked ?? BASE_STAGE_ID} failed`;
        continue;
      }
      if (deps.every((d) => done.has(d))) launch(s);
    }
    if (running.size === 0) break;
    await Promise.race(running.values());
  }
  await baseSettled;
  await Promise.all(drifting);

  progress.status = 'reporting';
  const policy = spec.stages.filter((s) => drifts.has(s.id));
  const { report } = await store.writeReport({
    lineage,
    generatedAt: new Date().toISOString(), // workflow time: deterministic on replay
    stages: policy.map((s) => ({ stageId: s.id, kind: s.kind, parentId: s.parent, drift: (drifts.get(s.id) as StageDrift).drift })),
    // Only when set, so the activity input of every other lineage is unchanged.
    ...(spec.derivedFrom && { derivedFrom: spec.derivedFrom }),
  });
  progress.report = report.uri;
  if (failed.size) {
    progress.status = 'failed';
    const list = [...failed.entries()].map(([id, msg]) => `${id}: ${msg}`).join('; ');
    throw ApplicationFailure.nonRetryable(`lineage ${lineage}: ${failed.size} stage(s) failed (${list}); report of the rest at ${report.uri}`, 'StagesFailed');
  }
  progress.status = 'done';
  return {
    lineage,
    report,
    stages: spec.stages
      .filter((s) => done.has(s.id))
      .map((s) => {
        const r = done.get(s.id) as StageWorkflowResult;
        const d = drifts.get(s.id);
        return { stageId: s.id, kind: s.kind, cached: r.cached, totalSteps: r.totalSteps, finalCheckpoint: r.final.uri, drift: d?.drift ?? null, driftRows: d?.rows ?? [] };
      }),
  };
}
