/**
 * Timings read from workflow histories (server event times, so two histories compare on one clock):
 *   - a stage's overlap figure: its wall time against its training plus its last checkpoint's
 *     evaluation (goal: wall ≤ 1.05 × (training + last evaluation): evaluation overlaps training);
 *   - a checkpoint's scheduling latency: the stage's `checkpointReady` signal to the first activity
 *     of that checkpoint's evaluation workflow starting.
 * Pure functions of `History` objects (from `fetchHistory()` or a recorded JSON history).
 */
import type { WorkflowHandle } from '@temporalio/client';
import { z } from 'zod';
import { SIGNALS } from '../common/config';

export type History = Awaited<ReturnType<WorkflowHandle['fetchHistory']>>;
type HistoryEvent = NonNullable<History['events']>[number];

/** The overlap goal: a stage's wall time within this factor of its training plus its last evaluation. */
export const OVERLAP_GOAL = 1.05;

type TimeValue = number | string | { toNumber(): number } | null | undefined;
const toNumber = (v: TimeValue): number => (v === null || v === undefined ? 0 : typeof v === 'object' ? v.toNumber() : Number(v));

/** An event's server time in milliseconds since the epoch. */
export function eventMs(e: HistoryEvent): number {
  const t = e.eventTime;
  if (!t) throw new Error(`history event ${toNumber(e.eventId as TimeValue)} has no time`);
  return toNumber(t.seconds as TimeValue) * 1000 + (t.nanos ?? 0) / 1e6;
}

const eventId = (e: HistoryEvent): number => toNumber(e.eventId as TimeValue);
const events = (h: History): HistoryEvent[] => h.events ?? [];

const EVAL_WORKFLOW = /\/eval\/step-(\d+)$/;

/** One activity's scheduled, started and closed times (ms), by its scheduled event. */
export interface ActivitySpan {
  type: string;
  scheduled: number;
  started: number | null;
  completed: number | null;
}

export function activitySpans(h: History): ActivitySpan[] {
  const spans = new Map<number, ActivitySpan>();
  for (const e of events(h)) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) spans.set(eventId(e), { type: s.activityType?.name ?? '', scheduled: eventMs(e), started: null, completed: null });
    const st = e.activityTaskStartedEventAttributes;
    if (st) {
      const span = spans.get(toNumber(st.scheduledEventId as TimeValue));
      if (span) span.started = eventMs(e);
    }
    const c = e.activityTaskCompletedEventAttributes;
    if (c) {
      const span = spans.get(toNumber(c.scheduledEventId as TimeValue));
      if (span) span.completed = eventMs(e);
    }
  }
  return [...spans.values()];
}

/** The evaluation child workflows a stage started: step, initiated and completed times (ms). */
export function evaluationChildren(h: History): Array<{ step: number; workflowId: string; initiated: number; completed: number | null }> {
  const byInitiated = new Map<number, { step: number; workflowId: string; initiated: number; completed: number | null }>();
  for (const e of events(h)) {
    const i = e.startChildWorkflowExecutionInitiatedEventAttributes;
    const m = i?.workflowId ? EVAL_WORKFLOW.exec(i.workflowId) : null;
    if (i?.workflowId && m) byInitiated.set(eventId(e), { step: Number(m[1]), workflowId: i.workflowId, initiated: eventMs(e), completed: null });
    const c = e.childWorkflowExecutionCompletedEventAttributes;
    if (c) {
      const child = byInitiated.get(toNumber(c.initiatedEventId as TimeValue));
      if (child) child.completed = eventMs(e);
    }
  }
  return [...byInitiated.values()].sort((a, b) => a.step - b.step);
}

export interface StageOverlap {
  workflowId: string;
  status: 'measured' | 'cached' | 'unfinished';
  /** Stage workflow start to completion (s). */
  wallSeconds: number | null;
  /** trainStage: started to completed (s); its last attempt's start when it was retried. */
  trainingSeconds: number | null;
  /** The final checkpoint's step and its evaluation workflow, initiated to completed (s); null for a reward stage. */
  lastStep: number | null;
  lastEvaluationSeconds: number | null;
  /** wall / (training + last evaluation); the goal is ≤ OVERLAP_GOAL. */
  ratio: number | null;
  ok: boolean | null;
  /**
   * Stage start to the start of training's last attempt (s): waiting for a training slot and any
   * failed attempts (a worker that died, a demo restarted). Not overlap: reported apart.
   */
  waitSeconds?: number | null;
  /** (wall − wait) / (training + last evaluation): the overlap of evaluation with training alone. */
  ratioAfterWait?: number | null;
  okAfterWait?: boolean | null;
}

/** A finished stage workflow's overlap figure from its history. */
export function stageOverlap(workflowId: string, h: History): StageOverlap {
  const evs = events(h);
  const first = evs[0];
  const done = evs.find((e) => e.workflowExecutionCompletedEventAttributes);
  const none = { workflowId, wallSeconds: null, trainingSeconds: null, lastStep: null, lastEvaluationSeconds: null, ratio: null, ok: null };
  if (!first?.workflowExecutionStartedEventAttributes || !done) return { ...none, status: 'unfinished' };
  const wall = (eventMs(done) - eventMs(first)) / 1000;
  const train = activitySpans(h).find((a) => a.type === 'trainStage');
  if (!train) return { ...none, status: 'cached', wallSeconds: wall };
  if (train.started === null || train.completed === null) return { ...none, status: 'unfinished', wallSeconds: wall };
  const trainingSeconds = (train.completed - train.started) / 1000;
  const last = evaluationChildren(h).at(-1);
  const lastEvaluationSeconds = last ? (last.completed === null ? null : (last.completed - last.initiated) / 1000) : 0;
  if (lastEvaluationSeconds === null) return { ...none, status: 'unfinished', wallSeconds: wall, trainingSeconds };
  const ratio = wall / (trainingSeconds + lastEvaluationSeconds);
  const waitSeconds = (train.started - eventMs(first)) / 1000;
  const ratioAfterWait = (wall - waitSeconds) / (trainingSeconds + lastEvaluationSeconds);
  return {
    workflowId,
    status: 'measured',
    wallSeconds: wall,
    trainingSeconds,
    lastStep: last?.step ?? null,
    lastEvaluationSeconds: last ? lastEvaluationSeconds : null,
    ratio,
    ok: ratio <= OVERLAP_GOAL,
    waitSeconds,
    ratioAfterWait,
    okAfterWait: ratioAfterWait <= OVERLAP_GOAL,
  };
}

/** The stage workflows a lineage workflow started (its children that are not evaluations). */
export function stageChildren(h: History): string[] {
  return events(h)
    .map((e) => e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId)
    .filter((id): id is string => typeof id === 'string' && !EVAL_WORKFLOW.test(id));
}

const Announcement = z.object({ step: z.number().int().nonnegative() });

/** Each announced checkpoint's first `checkpointReady` signal time (ms), by step. */
export function announcements(h: History): Map<number, number> {
  const out = new Map<number, number>();
  for (const e of events(h)) {
    const s = e.workflowExecutionSignaledEventAttributes;
    if (!s || s.signalName !== SIGNALS.checkpointReady) continue;
    const data = s.input?.payloads?.[0]?.data;
    if (!data) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(data).toString('utf8'));
    } catch {
      continue; // not a JSON payload: the workflow ignores it too
    }
    const a = Announcement.safeParse(parsed);
    if (a.success && !out.has(a.data.step)) out.set(a.data.step, eventMs(e));
  }
  return out;
}

/** When a workflow's first activity started (ms), or null if none did. */
export function firstActivityStart(h: History): number | null {
  const starts = activitySpans(h)
    .map((a) => a.started)
    .filter((t): t is number => t !== null);
  return starts.length ? Math.min(...starts) : null;
}

/** p50/p95/max of a sample (nearest-rank), in the sample's unit. */
export function percentiles(xs: readonly number[]): { n: number; p50: number | null; p95: number | null; max: number | null } {
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p: number) => (s.length ? (s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] as number) : null);
  return { n: s.length, p50: rank(0.5), p95: rank(0.95), max: s.length ? (s[s.length - 1] as number) : null };
}
