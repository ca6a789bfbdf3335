/**
 * Client-side helpers shared by the CLI and the demo: start a lineage, read its progress (with live
 * step/loss from the training activity's heartbeat), render it as text or as JSON, and fetch results.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { type Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { getVerified, s3ClientFor } from '../activities/store';
import { TASK_QUEUES, workflowIds } from '../common/config';
import { formatSigned } from '../common/drift';
import { searchAttributePairs } from '../common/searchAttributes';
import { validateLineageSpec, type LineageSpec } from '../common/spec';
import { lineageProgressQuery, lineageWorkflow, stageProgressQuery, type LineageProgress, type LineageResult, type StageProgress } from '../workflows';
import { CliError } from './cliArgs';
import { cliSettings, type CliSettings } from './cliSettings';
import { LIST_LIMIT, summariseEvaluations, summariseSteps } from './progress';


export function uiLink(
  workflowId: string,
  settings: Pick<CliSettings, 'TEMPORAL_UI_URL' | 'TEMPORAL_NAMESPACE'> = cliSettings(),
): string {
  return `${settings.TEMPORAL_UI_URL.replace(/\/$/, '')}/namespaces/${encodeURIComponent(settings.TEMPORAL_NAMESPACE)}/workflows/${encodeURIComponent(workflowId)}`;
}

export { readSpecFile } from './specFile';

/**
 * Starts a lineage. When its workflow is already running, the running one's spec (the input of its
 * first history event) is compared with this one, both with defaults filled in: the same spec
 * attaches (deterministic IDs make a repeated start harmless); a different spec is refused, naming
 * where it differs, since starting it would silently keep the old one.
 */
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
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
  const running = await runningLineageSpec(client, workflowId);
  const differences = running === undefined ? ['(its input is not a readable lineage spec)'] : specDifferences(running, spec);
  if (differences.length > 0) {
    throw new CliError(
      `lineage ${spec.name} is already running (${workflowId}) with a different spec; the new spec was not started. ` +
        `It differs at: ${differences.join(', ')}. Wait for the running lineage to finish, cancel it (${uiLink(workflowId)}), or give the new spec another name`,
    );
  }
  return { workflowId, alreadyRunning: true };
}

/** The spec a lineage workflow was started with, validated (defaults filled in); undefined when its input is not a valid spec. */
export async function runningLineageSpec(client: Client, workflowId: string): Promise<LineageSpec | undefined> {
  // Only the first event: a long lineage's history can be tens of megabytes.
  const res = await client.workflowService.getWorkflowExecutionHistory({
    namespace: client.options.namespace,
    execution: { workflowId },
    maximumPageSize: 1,
  });
  const first = res.history?.events?.[0]?.workflowExecutionStartedEventAttributes;
  let payloads = first?.input?.payloads ?? [];
  if (payloads.length === 0) return undefined;
  const converter = client.options.loadedDataConverter;
  for (const codec of [...converter.payloadCodecs].reverse()) payloads = await codec.decode(payloads);
  const input: unknown = converter.payloadConverter.fromPayload(payloads[0] as (typeof payloads)[number]);
  const v = validateLineageSpec(input);
  return v.ok ? v.spec : undefined;
}

/** Where two specs differ, as dotted paths (at most `limit`; objects compared key by key, arrays index by index). */
export function specDifferences(a: unknown, b: unknown, limit = 8): string[] {
  const out: string[] = [];
  const walk = (x: unknown, y: unknown, at: string): void => {
    if (out.length >= limit) return;
    if (x !== null && y !== null && typeof x === 'object' && typeof y === 'object' && Array.isArray(x) === Array.isArray(y)) {
      if (Array.isArray(x) && Array.isArray(y)) {
        if (x.length !== y.length) {
          out.push(`${at || '(root)'} (${x.length} vs ${y.length} entries)`);
          return;
        }
        x.forEach((v, i) => walk(v, y[i], `${at}[${i}]`));
        return;
      }
      const xo = x as Record<string, unknown>;
      const yo = y as Record<string, unknown>;
      for (const k of [...new Set([...Object.keys(xo), ...Object.keys(yo)])].sort()) walk(xo[k], yo[k], at ? `${at}.${k}` : k);
      return;
    }
    if (!Object.is(x, y)) out.push(at || '(root)');
  };
  walk(a, b, '');
  return out;
}

/** Accepts a workflow ID or a lineage name. */
export function resolveWorkflowId(idOrName: string): string {
  return idOrName.startsWith('valuedrift/') ? idOrName : workflowIds.lineage(idOrName);
}

/** What the lineage's own progress does not carry about a running stage (data flows one way). */
export interface LiveStage {
  /** The stage workflow's `progress` query: its phase, checkpoints and evaluations so far. */
  stage?: StageProgress;
  /** The training activity's last heartbeat. */
  training?: { step?: number; total?: number; loss?: number | null };
}

/** Reads the heartbeat details of a stage's running training activity: step, total, loss. */
export async function liveTraining(client: Client, stageWorkflowId: string): Promise<LiveStage['training'] | undefined> {
  try {
    const d = await client.workflow.getHandle(stageWorkflowId).describe();
    for (const a of d.raw.pendingActivities ?? []) {
      if (a.activityType?.name !== 'trainStage') continue;
      const payload = a.heartbeatDetails?.payloads?.[0];
      if (!payload) return {};
      return (await client.options.loadedDataConverter.payloadConverter.fromPayload(payload)) as LiveStage['training'];
    }
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
  return undefined;
}

/** The stage workflow's own progress; undefined while it is not started yet (or already gone). */
async function stageProgress(client: Client, stageWorkflowId: string): Promise<StageProgress | undefined> {
  try {
    return await client.workflow.getHandle(stageWorkflowId).query(stageProgressQuery);
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return undefined;
    throw err;
  }
}

/** The lineage's progress plus, for each running stage, its own progress and training heartbeat. */
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
        const [stage, training] = await Promise.all([stageProgress(client, s.workflowId), liveTraining(client, s.workflowId)]);
        if (stage || training) live.set(s.id, { ...(stage && { stage }), ...(training && { training }) });
      }),
  );
  return { progress, live };
}

/**
 * One stage as `status` shows it: the lineage's entry, with what the running stage reports about
 * itself laid over it (its phase as status, checkpoints, evaluations, the heartbeat's step and loss).
 */
export type StageView = Omit<LineageProgress['stages'][number], 'status'> & {
  /** The lineage's status of the stage, or while it runs its own phase (training, evaluating, …). */
  status: string;
  /** Step the training has reached (heartbeat); null when not training. */
  step: number | null;
};

/** `status --json`: exactly what the text shows, one object; fields the workflow adds pass through. */
export type ProgressView = Omit<LineageProgress, 'stages'> & { workflowId: string; stages: StageView[] };

export function progressView(workflowId: string, p: LineageProgress, live: ReadonlyMap<string, LiveStage>): ProgressView {
  const stages = p.stages.map((s): StageView => {
    const l = live.get(s.id);
    const own = l?.stage;
    const hb = l?.training;
    return {
      ...s,
      status: own?.status ?? s.status,
      step: hb?.step ?? null,
      totalSteps: hb?.total ?? (own?.totalSteps || s.totalSteps),
      latestLoss: hb?.loss ?? own?.latestLoss ?? s.latestLoss,
      checkpoints: own?.checkpoints ?? s.checkpoints,
      evaluated: own?.evaluated ?? s.evaluated,
    };
  });
  return { workflowId, ...p, stages };
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));

/**
 * The one-shot `status` table. Short step lists are listed; a stage with more than LIST_LIMIT
 * checkpoints or evaluations shows them as runs instead ("100–6000 every 100 (60)" and "evaluated
 * 100–5700 every 100 (57); pending 5800–6000 every 100 (3)"), so the table stays one line per stage.
 */
export function renderProgressView(v: ProgressView): string {
  const lines = [`lineage ${v.lineage}: ${v.status}   base evaluated: ${v.base.evaluated ? 'yes' : 'no'}`];
  lines.push(`  ${pad('stage', 16)}${pad('kind', 8)}${pad('status', 12)}${pad('step/total', 12)}${pad('loss', 10)}${pad('checkpoints', 18)}evaluated`);
  // A cell longer than its column still gets a space after it.
  const cell = (s: string, n: number) => (s.length >= n ? `${s} ` : pad(s, n));
  for (const s of v.stages) {
    const step = s.step !== null ? `${s.step}/${s.totalSteps}` : s.totalSteps ? `-/${s.totalSteps}` : '-';
    const loss = s.latestLoss === null ? '-' : s.latestLoss.toFixed(4);
    const long = s.checkpoints.length > LIST_LIMIT || s.evaluated.length > LIST_LIMIT;
    const checkpoints = long ? summariseSteps(s.checkpoints) : s.checkpoints.join(',') || '-';
    const evaluated = long ? summariseEvaluations(s.checkpoints, s.evaluated) : s.evaluated.join(',') || '-';
    lines.push(
      `  ${cell(s.id, 16)}${cell(s.kind, 8)}${cell(s.status, 12)}${cell(step, 12)}${cell(loss, 10)}${cell(checkpoints, 18)}${evaluated}${s.error ? `  (${s.error.slice(0, 120)})` : ''}`,
    );
  }
  if (v.report) lines.push(`  report: ${v.report}`);
  return lines.join('\n');
}

export function renderDriftRows(result: LineageResult): string {
  const lines = [`${pad('stage', 14)}${pad('topic', 26)}${pad('stance', 9)}${pad('M', 8)}eta`];
  for (const s of result.stages) {
    for (const r of s.driftRows) {
      lines.push(`${pad(s.stageId, 14)}${pad(r.category, 26)}${pad(r.stance, 9)}${pad(formatSigned(r.M), 8)}${r.eta.toFixed(2)}`);
    }
  }
  return lines.join('\n');
}

/**
 * `report --json`: the lineage's result (per stage its drift rows and drift.json, the report's
 * reference) and where the local copy of the report went, i.e. what the text output shows.
 */
export type ReportJson = LineageResult & { workflowId: string; localCopy: string };
export function reportJson(workflowId: string, result: LineageResult, localCopy: string): ReportJson {
  return { workflowId, ...result, localCopy };
}

/**
 * Copies the report (HTML) from the store to a local folder and returns its path. The bytes are
 * checked against the result's sha256, so a report replaced in the store since is refused.
 */
export async function downloadReport(result: LineageResult, dir: string, settings: CliSettings = cliSettings()): Promise<string> {
  const s3 = s3ClientFor(settings);
  let html: Buffer;
  try {
    html = await getVerified(result.report, s3);
  } finally {
    s3.destroy();
  }
  const out = path.join(dir, result.lineage, 'index.html');
  await fs.mkdir(path.dirname(out), { recursive: true });
  await fs.writeFile(out, html);
  return out;
}
