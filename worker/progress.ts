/**
 * Live progress for `lineage start --watch` and `lineage status --watch` (text; `--json` prints the
 * view itself), and the step summaries of the one-shot `status`:
 *
 *  - `summariseSteps`: a list of steps as arithmetic runs ("100–5700 every 100 (57)"), so a stage
 *    with thousands of checkpoints stays one short cell;
 *  - `EtaEstimator`: a stage's remaining training time from the rate at which its step moved between
 *    polls (unknown until the step has been seen to move twice);
 *  - `TerminalProgress`: on a terminal, one line per stage redrawn in place (cursor up, clear line);
 *  - `PlainProgress`: elsewhere (pipes, CI logs), plain lines, and only for what changed.
 *
 * Pure: no I/O, the clock is passed in. The views are described structurally here so this module
 * does not import lineageClient.ts (which imports this one).
 */

/** One stage as the watcher needs it (a subset of lineageClient's StageView). */
export interface ProgressStage {
  id: string;
  kind: string;
  /** The lineage's status of the stage, or while it runs its own phase (training, evaluating, …). */
  status: string;
  /** The training heartbeat's step; null when not training. */
  step: number | null;
  totalSteps: number;
  latestLoss: number | null;
  checkpoints: number[];
  evaluated: number[];
  error?: string;
}

/** The lineage as the watcher needs it (a subset of lineageClient's ProgressView). */
export interface ProgressSnapshot {
  lineage: string;
  status: string;
  base: { evaluated: boolean };
  stages: ProgressStage[];
  report?: string;
}

/** Lists longer than this are shown as runs by the one-shot `status`. */
export const LIST_LIMIT = 8;
/** Runs shown before the middle ones are elided ("…"); the count stays exact. */
const MAX_RUNS = 6;

interface Run {
  first: number;
  last: number;
  stride: number;
  count: number;
}

/**
 * Splits steps (sorted and deduplicated here) into maximal arithmetic runs, greedily from the left:
 * three or more equally spaced steps make a run; a lone step is a run of one.
 */
export function stepRuns(steps: readonly number[]): Run[] {
  const s = [...new Set(steps)].sort((a, b) => a - b);
  const runs: Run[] = [];
  let i = 0;
  while (i < s.length) {
    const first = s[i] as number;
    const second = s[i + 1];
    const third = s[i + 2];
    if (second !== undefined && third !== undefined && third - second === second - first) {
      const stride = second - first;
      let j = i + 2;
      while (j + 1 < s.length && (s[j + 1] as number) - (s[j] as number) === stride) j++;
      runs.push({ first, last: s[j] as number, stride, count: j - i + 1 });
      i = j + 1;
    } else {
      runs.push({ first, last: first, stride: 0, count: 1 });
      i++;
    }
  }
  return runs;
}

function formatRun(r: Run): string {
  if (r.count === 1) return String(r.first);
  return r.stride === 1 ? `${r.first}–${r.last}` : `${r.first}–${r.last} every ${r.stride}`;
}

/** "100–5700 every 100 (57)", "20, 40, 50–90 every 10 (7)"; "none" for no steps. */
export function summariseSteps(steps: readonly number[]): string {
  const runs = stepRuns(steps);
  if (runs.length === 0) return 'none';
  const count = runs.reduce((n, r) => n + r.count, 0);
  const shown = runs.length <= MAX_RUNS ? runs.map(formatRun) : [...runs.slice(0, 3).map(formatRun), '…', ...runs.slice(-2).map(formatRun)];
  return `${shown.join(', ')} (${count})`;
}

/** Checkpoints not evaluated yet, in step order. */
export function pendingSteps(checkpoints: readonly number[], evaluated: readonly number[]): number[] {
  const done = new Set(evaluated);
  return [...new Set(checkpoints)].filter((s) => !done.has(s)).sort((a, b) => a - b);
}

/** "evaluated 100–5700 every 100 (57); pending 5800–6000 every 100 (3)" (the pending part only when some are). */
export function summariseEvaluations(checkpoints: readonly number[], evaluated: readonly number[]): string {
  const pending = pendingSteps(checkpoints, evaluated);
  const done = `evaluated ${evaluated.length > 0 ? summariseSteps(evaluated) : 'none'}`;
  return pending.length > 0 ? `${done}; pending ${summariseSteps(pending)}` : done;
}

/** A duration for humans: "45s", "4m 05s", "3h 07m", "2d 04h". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const two = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m ${two(s % 60)}s`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)}h ${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${two(Math.floor((s % 86400) / 3600))}h`;
}

/**
 * Remaining training time per stage, from the steps seen across polls. The time a step value is
 * first seen stands for when it was reached (within one poll); the first value seen is not used, as
 * it may have been reached long before watching began. So the rate is known once the step has moved
 * twice. Only the changes of the last `windowMs` count (at least two), so the estimate follows a
 * rate that changes; a step that goes back (training resumed from a checkpoint) starts afresh.
 */
export class EtaEstimator {
  private readonly seen = new Map<string, { last: number; changes: Array<{ t: number; step: number }> }>();

  constructor(private readonly windowMs = 10 * 60_000) {}

  observe(stageId: string, step: number | null, nowMs: number): void {
    if (step === null) return;
    const s = this.seen.get(stageId);
    if (!s || step < s.last) {
      this.seen.set(stageId, { last: step, changes: [] });
      return;
    }
    if (step === s.last) return;
    s.last = step;
    s.changes.push({ t: nowMs, step });
    while (s.changes.length > 2 && nowMs - (s.changes[0] as { t: number }).t > this.windowMs) s.changes.shift();
  }

  /** Milliseconds left until `total`, or undefined while the rate is not known. */
  remainingMs(stageId: string, total: number, nowMs: number): number | undefined {
    const s = this.seen.get(stageId);
    if (!s || total <= 0) return undefined;
    if (s.last >= total) return 0;
    const first = s.changes[0];
    const last = s.changes.at(-1);
    if (!first || !last || last === first || last.t <= first.t) return undefined;
    const msPerStep = (last.t - first.t) / (last.step - first.step);
    return Math.max(0, (total - last.step) * msPerStep - (nowMs - last.t));
  }
}

/** Stage statuses after which nothing more happens. */
const FINISHED = new Set(['done', 'cached', 'failed', 'skipped']);

/** How far a stage is, as one line's cells: status, step/total, loss, evaluated/checkpoints, ETA. */
export function stageCells(s: ProgressStage, etaMs: number | undefined): string[] {
  const total = s.totalSteps > 0 ? String(s.totalSteps) : '-';
  const cells = [
    s.status,
    // A finished stage ran all its steps (the heartbeat is gone with the activity).
    s.step !== null ? `step ${s.step}/${total}` : (s.status === 'done' || s.status === 'cached') && s.totalSteps > 0 ? `step ${total}/${total}` : `step -/${total}`,
    `loss ${s.latestLoss === null ? '-' : s.latestLoss.toFixed(4)}`,
    // A reward stage is not evaluated for stance: only its checkpoints count.
    s.kind === 'reward'
      ? `checkpoints ${s.checkpoints.length}`
      : `evaluated ${s.checkpoints.length - pendingSteps(s.checkpoints, s.evaluated).length}/${s.checkpoints.length}`,
  ];
  if (!FINISHED.has(s.status)) cells.push(`ETA ${etaMs === undefined ? '—' : formatDuration(etaMs)}`);
  if (s.error) cells.push(`error: ${s.error.replace(/\s+/g, ' ')}`);
  return cells;
}

const WIDTHS = [10, 16, 12, 16];

function stageLine(s: ProgressStage, idWidth: number, etaMs: number | undefined): string {
  const cells = stageCells(s, etaMs).map((c, i) => (i < WIDTHS.length ? c.padEnd(WIDTHS[i] as number) : c));
  return `${s.id.padEnd(idWidth)}  ${cells.join('  ')}`.trimEnd();
}

function lineageLine(p: ProgressSnapshot): string {
  return `lineage ${p.lineage}: ${p.status} · base evaluated: ${p.base.evaluated ? 'yes' : 'no'}`;
}

/** `HH:MM:SS` (UTC) of a clock reading. */
function clock(nowMs: number): string {
  return new Date(nowMs).toISOString().slice(11, 19);
}

/** What a watcher prints for each poll ('' when it prints nothing). */
export interface ProgressPrinter {
  update(p: ProgressSnapshot, nowMs: number): string;
}

const ESC = '\u001b[';
/** Cursor up n lines. */
export const cursorUp = (n: number): string => `${ESC}${n}A`;
/** Back to column 1 and clear the line. */
export const CLEAR_LINE = `\r${ESC}2K`;
/** Clear from the cursor to the end of the screen. */
export const CLEAR_BELOW = `${ESC}J`;

/**
 * On a terminal: a header, one line per stage and (once written) the report, redrawn in place on
 * every poll. Lines are cut to the terminal's width, since a wrapped line would throw the cursor
 * arithmetic off by one.
 */
export class TerminalProgress implements ProgressPrinter {
  private drawn = 0;
  private readonly eta = new EtaEstimator();

  constructor(private readonly columns: () => number | undefined = () => undefined) {}

  update(p: ProgressSnapshot, nowMs: number): string {
    for (const s of p.stages) this.eta.observe(s.id, s.step, nowMs);
    const idWidth = Math.max(5, ...p.stages.map((s) => s.id.length));
    const lines = [
      `${lineageLine(p)} · ${clock(nowMs)}`,
      ...p.stages.map((s) => `  ${stageLine(s, idWidth, this.eta.remainingMs(s.id, s.totalSteps, nowMs))}`),
      ...(p.report ? [`  report: ${p.report}`] : []),
    ];
    const width = this.columns();
    const fit = (l: string) => (width !== undefined && width > 1 && l.length >= width ? `${l.slice(0, width - 2)}…` : l);
    let out = this.drawn > 0 ? cursorUp(this.drawn) : '';
    for (const l of lines) out += `${CLEAR_LINE}${fit(l)}\n`;
    if (lines.length < this.drawn) out += CLEAR_BELOW;
    this.drawn = lines.length;
    return out;
  }
}

/**
 * Elsewhere: plain lines, each stamped with the time, printed only when something changed: the
 * lineage's line when its status, base evaluation or report changes, a stage's line when its status,
 * step, loss, checkpoints, evaluations or error change (the ETA alone moves with the clock, so it
 * does not count as a change).
 */
export class PlainProgress implements ProgressPrinter {
  private lineageKey: string | undefined;
  private readonly stageKeys = new Map<string, string>();
  private readonly eta = new EtaEstimator();

  update(p: ProgressSnapshot, nowMs: number): string {
    const stamp = `[${new Date(nowMs).toISOString()}]`;
    const lines: string[] = [];
    const lk = JSON.stringify([p.lineage, p.status, p.base.evaluated, p.report ?? null]);
    if (lk !== this.lineageKey) {
      this.lineageKey = lk;
      lines.push(`${stamp} ${lineageLine(p)}${p.report ? ` · report: ${p.report}` : ''}`);
    }
    const idWidth = Math.max(5, ...p.stages.map((s) => s.id.length));
    for (const s of p.stages) {
      this.eta.observe(s.id, s.step, nowMs);
      const key = JSON.stringify([s.status, s.step, s.totalSteps, s.latestLoss, s.checkpoints, s.evaluated, s.error ?? null]);
      if (this.stageKeys.get(s.id) === key) continue;
      this.stageKeys.set(s.id, key);
      lines.push(`${stamp}   ${stageLine(s, idWidth, this.eta.remainingMs(s.id, s.totalSteps, nowMs))}`);
    }
    return lines.map((l) => `${l}\n`).join('');
  }
}

/** The printer for an output: redrawn in place on a terminal, plain lines on change elsewhere. */
export function progressPrinter(terminal: { columns(): number | undefined } | undefined): ProgressPrinter {
  return terminal ? new TerminalProgress(() => terminal.columns()) : new PlainProgress();
}
