/**
 * Client-side helpers shared by the CLI and the demo: start a lineage, read its progress (with live
 * step/loss from the training activity's heartbeat), render it as text or as JSON, and fetch results.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { type Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { getBytes } from '../activities/store';
import { TASK_QUEUES, workflowIds } from '../common/config';
import { searchAttributePairs } from '../common/searchAttributes';
import { formatSpecIssues, validateLineageSpec, type LineageSpec } from '../common/spec';
import { lineageProgressQuery, lineageWorkflow, type LineageProgress, type LineageResult } from '../workflows';
import { CliError } from './cliArgs';
import { cliSettings, type CliSettings } from './cliSettings';


export function uiLink(
  workflowId: string,
  settings: Pick<CliSettings, 'TEMPORAL_UI_URL' | 'TEMPORAL_NAMESPACE'> = cliSettings(),
): string {
  return `${settings.TEMPORAL_UI_URL.replace(/\/$/, '')}/namespaces/${encodeURIComponent(settings.TEMPORAL_NAMESPACE)}/workflows/${encodeURIComponent(workflowId)}`;
}

export async function readSpecFile(file: string): Promise<LineageSpec> {
  let raw: string;
  try {
    raw = await fs.readFile(file, 'utf8');
  } catch {
    throw new CliError(`cannot read spec file ${file}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new CliError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  const v = validateLineageSpec(json);
  if (!v.ok) throw new CliError(`invalid lineage spec ${file}: ${formatSpecIssues(v.issues)}`);
  return v.spec;
}

/** Starts a lineage; an identical ID already running counts as success (deterministic IDs). */
export async function startLineage(client: Client, spec: LineageSpec, rawSpec?: unknown): Promise<{ workflowId: string; alreadyRunning: boolean }> {
  const workflowId = workflowIds.lineage(spec.name);
  try {
    await client.workflow.start(lineageWorkflow, {
      taskQueue: TASK_QUEUES.workflows,
      workflowId,
      args: [rawSpec ?? spec],
      typedSearchAttributes: searchAttributePairs({ Lineage: spec.name, BaseModel: spec.base.name ?? spec.base.model }),
    });
    return { workflowId, alreadyRunning: false };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { workflowId, alreadyRunning: true };
    throw err;
  }
}

/** Accepts a workflow ID or a lineage name. */
export function resolveWorkflowId(idOrName: string): string {
  return idOrName.startsWith('valuedrift/') ? idOrName : workflowIds.lineage(idOrName);
}

export interface LiveStage {
  step?: number;
  total?: number;
  loss?: number | null;
}

/** Reads the heartbeat details of a stage's running training activity: step, total, loss. */
export async function liveTraining(client: Client, stageWorkflowId: string): Promise<LiveStage | undefined> {
  try {
    const d = await client.workflow.getHandle(stageWorkflowId).describe();
    for (const a of d.raw.pendingActivities ?? []) {
      if (a.activityType?.name !== 'trainStage') continue;
      const payload = a.heartbeatDetails?.payloads?.[0];
      if (!payload) return {};
      const value = (await client.options.loadedDataConverter.payloadConverter.fromPayload(payload)) as LiveStage;
      return value;
    }
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
  return undefined;
}

export async function getProgress(client: Client, workflowId: string): Promise<{ progress: LineageProgress; live: Map<string, LiveStage> }> {
  const handle = client.workflow.getHandle(workflowId);
  let progress: LineageProgress;
  try {
    progress = await handle.query(lineageProgressQuery);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new CliError(`no lineage workflow ${workflowId}`);
    throw err;
  }
  const live = new Map<string, LiveStage>();
  await Promise.all(
    progress.stages
      .filter((s) => s.status === 'running')
      .map(async (s) => {
        const l = await liveTraining(client, s.workflowId);
        if (l) live.set(s.id, l);
      }),
  );
  return { progress, live };
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));

export function renderProgress(p: LineageProgress, live: Map<string, LiveStage>): string {
  const lines = [`lineage ${p.lineage}: ${p.status}   base evaluated: ${p.base.evaluated ? 'yes' : 'no'}`];
  lines.push(`  ${pad('stage', 16)}${pad('kind', 8)}${pad('status', 10)}${pad('step/total', 12)}${pad('loss', 10)}${pad('checkpoints', 18)}evaluated`);
  for (const s of p.stages) {
    const l = live.get(s.id);
    const step = l?.step !== undefined ? `${l.step}/${l.total ?? s.totalSteps}` : s.totalSteps ? `-/${s.totalSteps}` : '-';
    const loss = l?.loss ?? s.latestLoss;
    lines.push(
      `  ${pad(s.id, 16)}${pad(s.kind, 8)}${pad(s.status, 10)}${pad(step, 12)}${pad(loss === null || loss === undefined ? '-' : loss.toFixed(4), 10)}${pad(s.checkpoints.join(',') || '-', 18)}${s.evaluated.join(',') || '-'}${s.error ? `  (${s.error.slice(0, 120)})` : ''}`,
    );
  }
  if (p.report) lines.push(`  report: ${p.report}`);
  return lines.join('\n');
}

export function renderDriftRows(result: LineageResult): string {
  const lines = [`${pad('stage', 14)}${pad('topic', 26)}${pad('stance', 9)}${pad('M', 8)}eta`];
  for (const s of result.stages) {
    for (const r of s.driftRows) {
      const m = (r.M >= 0 ? '+' : '') + r.M.toFixed(2);
      lines.push(`${pad(s.stageId, 14)}${pad(r.category, 26)}${pad(r.stance, 9)}${pad(m, 8)}${r.eta.toFixed(2)}`);
    }
  }
  return lines.join('\n');
}

/**
 * `status --json`: the progress query's answer with each running stage's live step/total/loss (null
 * when the stage has no running training activity), i.e. what renderProgress shows. Fields the
 * workflow adds to its progress pass through.
 */
export type ProgressJson = LineageProgress & {
  workflowId: string;
  stages: Array<LineageProgress['stages'][number] & { live: LiveStage | null }>;
};
export function progressJson(workflowId: string, p: LineageProgress, live: ReadonlyMap<string, LiveStage>): ProgressJson {
  return { workflowId, ...p, stages: p.stages.map((s) => ({ ...s, live: live.get(s.id) ?? null })) };
}

/**
 * `report --json`: the lineage's result (per stage its drift rows and drift.json, the report's
 * reference) and where the local copy of the report went, i.e. what the text output shows.
 */
export type ReportJson = LineageResult & { workflowId: string; localCopy: string };
export function reportJson(workflowId: string, result: LineageResult, localCopy: string): ReportJson {
  return { workflowId, ...result, localCopy };
}

/** Copies the report (HTML) from the store to a local folder and returns its path. */
export async function downloadReport(result: LineageResult, dir: string): Promise<string> {
  const out = path.join(dir, result.lineage, 'index.html');
  await fs.mkdir(path.dirname(out), { recursive: true });
  await fs.writeFile(out, await getBytes(result.report.uri));
  return out;
}
