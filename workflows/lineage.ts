import {
  ApplicationFailure,
  defineQuery,
  executeChild,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { ArtifactRef, ModelHandle } from '../common/contracts';
import { BASE_STAGE_ID, QUERIES, TASK_QUEUES, workflowIds } from '../common/config';
import { searchAttributePairs } from '../common/searchAttributes';
import { formatSpecIssues, stageDependencies, stageSearchAttributes, validateLineageSpec, type StageSpec } from '../common/spec';
import type { DriftRow } from '../activities/evaluation';
import { datasets as datasetActivities, store } from './proxies';
import { evaluateCheckpointWorkflow, type EvaluateCheckpointResult } from './evaluate';
import { stageEventSignal, startEvaluatedSignal, stageWorkflow, type StageWorkflowResult } from './stage';

export type StageStatus = 'waiting' | 'running' | 'cached' | 'done' | 'failed' | 'skipped';

export interface LineageProgress {
  lineage: string;
  status: 'validating' | 'preparing' | 'running' | 'reporting' | 'done' | 'failed';
  base: { evaluated: boolean };
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
    error?: string;
  }>;
  report?: string;
}
export const lineageProgressQuery = defineQuery<LineageProgress>(QUERIES.progress);

export interface LineageResult {
  lineage: string;
  report: ArtifactRef;
  stages: Array<{ stageId: string; kind: string; cached: boolean; totalSteps: number; finalCheckpoint: string; drift: ArtifactRef; driftRows: DriftRow[] }>;
}

/**
 * Runs a whole lineage from one JSON object (so the Temporal UI's start form can start it): validates
 * the spec, prepares datasets, evaluates the base model, runs each stage as a child workflow as soon
 * as its dependencies are done (siblings in parallel), then writes the report. An invalid spec fails
 * at once, non-retryably, naming the field; nothing is trained or written. Safe to re-run: finished
 * stages and evaluations are served from the store's caches.
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
  }));
  const stageProgress = (id: string) => progress.stages.find((s) => s.id === id) as LineageProgress['stages'][number];
  setHandler(stageEventSignal, (e) => {
    const p = progress.stages.find((s) => s.id === e.stageId);
    if (!p) return;
    p.totalSteps = Math.max(p.totalSteps, e.totalSteps);
    if (e.type === 'checkpoint' && !p.checkpoints.includes(e.step)) p.checkpoints = [...p.checkpoints, e.step].sort((a, b) => a - b);
    if (e.type === 'evaluated' && !p.evaluated.includes(e.step)) p.evaluated = [...p.evaluated, e.step].sort((a, b) => a - b);
    if (e.type === 'cached') p.status = 'cached';
    if (e.loss !== undefined && e.loss !== null) p.latestLoss = e.loss;
  });
  const baseAttrs = { Lineage: lineage, BaseModel: spec.base.name ?? spec.base.model };
  upsertSearchAttributes(searchAttributePairs(baseAttrs));

  progress.status = 'preparing';
  const { datasets } = await datasetActivities.prepareDatasets({ lineage, datasets: spec.datasets, seed: spec.seed });
  const evalSet = (datasets[spec.evaluation.evalSet] as { ref: ArtifactRef }).ref;

  progress.status = 'running';
  const base: ModelHandle = { uri: spec.base.model, contentKey: `model:${spec.base.model}` };
  let baseEval: EvaluateCheckpointResult | undefined;
  const baseEvalPromise = executeChild(evaluateCheckpointWorkflow, {
    workflowId: workflowIds.evaluation(lineage, BASE_STAGE_ID, 0),
    taskQueue: TASK_QUEUES.workflows,
    parentClosePolicy: ParentClosePolicy.TERMINATE,
    typedSearchAttributes: searchAttributePairs(baseAttrs),
    args: [{ lineage, stageId: BASE_STAGE_ID, step: 0, totalSteps: 0, model: base, promptStyle: spec.base.promptStyle, evaluation: spec.evaluation, evalSet, seed: spec.seed }],
  });

  const done = new Map<string, StageWorkflowResult>();
  const failed = new Map<string, string>();
  const running = new Map<string, Promise<void>>();
  const startedWithoutStartEval = new Set<string>();

  const launch = (s: StageSpec) => {
    const parent: ModelHandle = s.parent === BASE_STAGE_ID ? base : (done.get(s.parent) as StageWorkflowResult).final;
    const startEval = s.parent === BASE_STAGE_ID ? baseEval : (done.get(s.parent) as StageWorkflowResult).finalEval;
    if (!startEval) startedWithoutStartEval.add(s.id);
    const rewardModel = s.kind === 'ppo' ? (done.get(s.rewardStage) as StageWorkflowResult).final : undefined;
    stageProgress(s.id).status = 'running';
    const p = executeChild(stageWorkflow, {
      workflowId: workflowIds.stage(lineage, s.id),
      taskQueue: TASK_QUEUES.workflows,
      parentClosePolicy: ParentClosePolicy.TERMINATE,
      typedSearchAttributes: searchAttributePairs(stageSearchAttributes(spec, s.id)),
      args: [
        {
          lineage,
          stage: s,
          parent,
          rewardModel,
          dataset: datasets[s.dataset] as (typeof datasets)[string],
          evaluation: spec.evaluation,
          evalSet,
          seed: spec.seed,
          startEval,
        },
      ],
    }).then(
      (r) => {
        done.set(s.id, r);
        const sp = stageProgress(s.id);
        sp.status = r.cached ? 'cached' : 'done';
        sp.totalSteps = r.totalSteps;
        sp.checkpoints = r.checkpoints;
        sp.evaluated = r.checkpoints;
      },
      (err: unknown) => {
        failed.set(s.id, err instanceof Error ? err.message : String(err));
        const sp = stageProgress(s.id);
        sp.status = 'failed';
        sp.error = failed.get(s.id);
      },
    );
    running.set(s.id, p.then(() => void running.delete(s.id)));
  };

  const baseSettled = baseEvalPromise.then(
    async (r) => {
      baseEval = r;
      progress.base.evaluated = true;
      // First stages that started before the base was evaluated get it now (drift needs step 0).
      for (const id of startedWithoutStartEval) {
        if (running.has(id)) await getExternalWorkflowHandle(workflowIds.stage(lineage, id)).signal(startEvaluatedSignal, r);
      }
    },
    async (err: unknown) => {
      failed.set(BASE_STAGE_ID, err instanceof Error ? err.message : String(err));
      // Stages waiting for their step 0 must not wait forever: tell them it will not come.
      for (const id of startedWithoutStartEval) {
        if (running.has(id)) await getExternalWorkflowHandle(workflowIds.stage(lineage, id)).signal(startEvaluatedSignal, null);
      }
    },
  );

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

  progress.status = 'reporting';
  const finished = spec.stages.filter((s) => done.has(s.id));
  const { report } = await store.writeReport({
    lineage,
    generatedAt: new Date().toISOString(), // workflow time: deterministic on replay
    stages: finished.map((s) => ({
      stageId: s.id,
      kind: s.kind,
      parentId: s.parent,
      drift: (done.get(s.id) as StageWorkflowResult).drift,
    })),
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
    stages: finished.map((s) => {
      const r = done.get(s.id) as StageWorkflowResult;
      return { stageId: s.id, kind: s.kind, cached: r.cached, totalSteps: r.totalSteps, finalCheckpoint: r.final.uri, drift: r.drift, driftRows: r.driftRows };
    }),
  };
}
