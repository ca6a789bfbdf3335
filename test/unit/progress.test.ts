/**
 * The watch's pieces without a server: step runs and the one-shot `status` summary of long stages,
 * the ETA from steps seen across polls, the terminal renderer (cursor movement, one line per stage)
 * and the plain one (a line only for what changed).
 */
import { describe, expect, it } from 'vitest';
import { progressView, renderProgressView, type LiveStage } from '../../worker/lineageClient';
import {
  CLEAR_BELOW,
  CLEAR_LINE,
  cursorUp,
  EtaEstimator,
  formatDuration,
  PlainProgress,
  type ProgressSnapshot,
  type ProgressStage,
  stepRuns,
  summariseEvaluations,
  summariseSteps,
  TerminalProgress,
} from '../../worker/progress';
import type { LineageProgress } from '../../workflows';

const range = (from: number, to: number, by: number): number[] => Array.from({ length: Math.floor((to - from) / by) + 1 }, (_, i) => from + i * by);

describe('step runs', () => {
  it('60 checkpoints every 100, 57 evaluated: two runs, with their counts', () => {
    const checkpoints = range(100, 6000, 100);
    const evaluated = range(100, 5700, 100);
    expect(summariseSteps(checkpoints)).toBe('100–6000 every 100 (60)');
    expect(summariseEvaluations(checkpoints, evaluated)).toBe('evaluated 100–5700 every 100 (57); pending 5800–6000 every 100 (3)');
  });

  it('an off-stride final step, a gap, unsorted and repeated input', () => {
    const steps = [...range(50, 1000, 50), 1037];
    expect(summariseSteps([...steps].reverse().concat(steps))).toBe('50–1000 every 50, 1037 (21)');
    // A failed evaluation in the middle shows as a gap in one list and a lone step in the other.
    const evaluated = range(50, 1000, 50).filter((s) => s !== 450);
    expect(summariseEvaluations(steps, evaluated)).toBe('evaluated 50–400 every 50, 500–1000 every 50 (19); pending 450, 1037 (2)');
    expect(summariseSteps([1, 2, 3, 4, 10])).toBe('1–4, 10 (5)');
    expect(summariseSteps([7, 9])).toBe('7, 9 (2)');
    expect(summariseSteps([])).toBe('none');
    expect(summariseEvaluations([10, 20], [])).toBe('evaluated none; pending 10, 20 (2)');
  });

  it('runs cover every step exactly once (1000 random steps)', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const steps = [...new Set(Array.from({ length: 1000 }, () => Math.floor(rnd() * 5000)))];
    const expanded = stepRuns(steps).flatMap((r) => (r.count === 1 ? [r.first] : range(r.first, r.last, r.stride)));
    expect(expanded).toEqual([...steps].sort((a, b) => a - b));
  });

  it('many irregular runs are elided in the middle; the count stays exact', () => {
    const steps = [1, 2, 3, 10, 20, 30, 100, 200, 300, 1000, 1001, 1002, 5000, 6000, 7000, 9000, 9500, 9999];
    expect(summariseSteps(steps)).toBe('1–3, 10–30 every 10, 100–300 every 100, …, 9500, 9999 (18)');
  });
});

describe('status (one-shot) of a long stage', () => {
  const progress: LineageProgress = {
    lineage: 'long',
    status: 'running',
    base: { evaluated: true },
    stages: [
      { id: 'sft', kind: 'sft', parent: 'base', status: 'running', workflowId: 'valuedrift/long/sft', totalSteps: 6000, checkpoints: [], evaluated: [], latestLoss: null, drift: false },
      { id: 'dpo', kind: 'dpo', parent: 'sft', status: 'waiting', workflowId: 'valuedrift/long/dpo', totalSteps: 0, checkpoints: [], evaluated: [], latestLoss: null, drift: false },
    ],
  };
  const live = new Map<string, LiveStage>([
    ['sft', { stage: { stageId: 'sft', kind: 'sft', status: 'evaluating', totalSteps: 6000, checkpoints: range(100, 6000, 100), evaluated: range(100, 5700, 100), latestLoss: 0.5 } }],
  ]);

  it('shows ranges instead of 60 steps, one line per stage', () => {
    const text = renderProgressView(progressView('valuedrift/long', progress, live));
    const lines = text.split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/^ {2}sft\s+sft\s+evaluating\s+-\/6000\s+0\.5000\s+100–6000 every 100 \(60\) evaluated 100–5700 every 100 \(57\); pending 5800–6000 every 100 \(3\)$/);
    expect(text).not.toContain('200,300');
    expect(lines[3]).toMatch(/^ {2}dpo\s+dpo\s+waiting\s+-\s+-\s+-\s+-$/);
  });
});

describe('ETA from the steps seen across polls', () => {
  it('unknown until the step has moved twice; then from the rate, counting down between heartbeats', () => {
    const eta = new EtaEstimator();
    eta.observe('sft', 10, 0);
    expect(eta.remainingMs('sft', 100, 0)).toBeUndefined();
    eta.observe('sft', 10, 3000);
    eta.observe('sft', 20, 6000);
    // One change: the first value may have been reached long before the watch began.
    expect(eta.remainingMs('sft', 100, 6000)).toBeUndefined();
    eta.observe('sft', 30, 9000);
    // 10 steps in 3 s; 70 left.
    expect(eta.remainingMs('sft', 100, 9000)).toBe(21_000);
    eta.observe('sft', 30, 12_000);
    expect(eta.remainingMs('sft', 100, 12_000)).toBe(18_000);
    eta.observe('sft', 60, 15_000);
    // From the first change: 40 steps in 9 s; 40 left.
    expect(eta.remainingMs('sft', 100, 15_000)).toBe(9000);
    expect(eta.remainingMs('sft', 100, 60_000)).toBe(0);
    expect(eta.remainingMs('other', 100, 15_000)).toBeUndefined();
    expect(eta.remainingMs('sft', 0, 15_000)).toBeUndefined();
  });

  it('a step that goes back (resumed training) starts afresh; old changes leave the window', () => {
    const eta = new EtaEstimator(60_000);
    eta.observe('s', 0, 0);
    eta.observe('s', 10, 1000);
    eta.observe('s', 20, 2000);
    expect(eta.remainingMs('s', 100, 2000)).toBe(8000);
    eta.observe('s', 5, 3000);
    expect(eta.remainingMs('s', 100, 3000)).toBeUndefined();
    eta.observe('s', 6, 4000);
    eta.observe('s', 7, 5000);
    expect(eta.remainingMs('s', 100, 5000)).toBe(93_000);
    // Much slower later: after the window only the recent changes count.
    eta.observe('s', 8, 105_000);
    eta.observe('s', 9, 205_000);
    expect(eta.remainingMs('s', 100, 205_000)).toBe(91 * 100_000);
  });

  it('durations', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(44_600)).toBe('45s');
    expect(formatDuration(245_000)).toBe('4m 05s');
    expect(formatDuration(3 * 3600_000 + 7 * 60_000)).toBe('3h 07m');
    expect(formatDuration(52 * 3600_000)).toBe('2d 04h');
  });
});

function stage(over: Partial<ProgressStage> & { id: string }): ProgressStage {
  return { kind: 'sft', status: 'waiting', step: null, totalSteps: 0, latestLoss: null, checkpoints: [], evaluated: [], ...over };
}
function snapshot(stages: ProgressStage[], over: Partial<ProgressSnapshot> = {}): ProgressSnapshot {
  return { lineage: 'demo', status: 'running', base: { evaluated: true }, stages, ...over };
}

describe('terminal renderer', () => {
  const ESC = '\u001b';
  it('redraws in place: the first frame plain, then cursor up over it and each line cleared; one line per stage', () => {
    const t = new TerminalProgress();
    const frames: string[] = [];
    const poll = (step: number, now: number, report?: string) =>
      frames.push(
        t.update(
          snapshot(
            [
              stage({ id: 'sft', status: 'training', step, totalSteps: 600, latestLoss: 1.5, checkpoints: range(100, 6000, 100), evaluated: range(100, 5000, 100) }),
              stage({ id: 'dpo-support', kind: 'dpo' }),
              stage({ id: 'rm', kind: 'reward', status: 'done', totalSteps: 8, checkpoints: [4, 8] }),
            ],
            report ? { report } : {},
          ),
          now,
        ),
      );
    poll(100, 0);
    poll(110, 3000);
    poll(120, 6000);
    poll(130, 9000, 's3://b/report/index.html');

    // First frame: no cursor movement; a header and exactly one line per stage.
    expect(frames[0]).not.toContain(`${ESC}[`.concat('4A'));
    const lines0 = (frames[0] as string).split('\n').slice(0, -1);
    expect(lines0).toHaveLength(4);
    for (const l of lines0) expect(l.startsWith(CLEAR_LINE)).toBe(true);
    // Later frames go up over the previous frame's lines, then rewrite each.
    expect(frames[1]?.startsWith(cursorUp(4))).toBe(true);
    expect(frames[3]?.startsWith(cursorUp(4))).toBe(true);
    const plain = (f: string) => f.replace(/\u001b\[\d*[AJ]/g, '').split('\n').slice(0, -1).map((l) => l.replace(CLEAR_LINE, ''));
    const last = plain(frames[3] as string);
    expect(last).toHaveLength(5);
    expect(last.filter((l) => /^ {2}(sft|dpo-support|rm) /.test(l))).toHaveLength(3);
    expect(last[0]).toMatch(/^lineage demo: running · base evaluated: yes · 00:00:09$/);
    // The ETA is unknown until the step has moved twice, then 470 steps at 10 per 3 s.
    expect(plain(frames[1] as string)[1]).toMatch(/ETA —$/);
    expect(last[1]).toMatch(/^ {2}sft\s+training\s+step 130\/600\s+loss 1\.5000\s+evaluated 50\/60\s+ETA 2m 21s$/);
    expect(last[2]).toMatch(/^ {2}dpo-support\s+waiting\s+step -\/-\s+loss -\s+evaluated 0\/0\s+ETA —$/);
    expect(last[3]).toMatch(/^ {2}rm\s+done\s+step 8\/8\s+loss -\s+checkpoints 2$/);
    expect(last[4]).toBe('  report: s3://b/report/index.html');
  });

  it('a shorter frame clears what is left below it; lines are cut to the terminal width', () => {
    const t = new TerminalProgress(() => 40);
    t.update(snapshot([stage({ id: 'a' }), stage({ id: 'b' })], { report: 's3://x' }), 0);
    const next = t.update(snapshot([stage({ id: 'a', status: 'failed', error: 'x'.repeat(200) })]), 1000);
    expect(next.startsWith(cursorUp(4))).toBe(true);
    expect(next.endsWith(CLEAR_BELOW)).toBe(true);
    const lines = next.slice(cursorUp(4).length, -CLEAR_BELOW.length).split('\n').slice(0, -1);
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l.replace(CLEAR_LINE, '').length).toBeLessThan(40);
    expect(lines[1]).toMatch(/…$/);
  });
});

describe('plain renderer (not a terminal)', () => {
  it('prints a line only for what changed; nothing when nothing did', () => {
    const p = new PlainProgress();
    const view = (step: number | null, status = 'training', evaluated: number[] = [100], over: Partial<ProgressSnapshot> = {}) =>
      snapshot([stage({ id: 'sft', status, step, totalSteps: 300, latestLoss: 0.5, checkpoints: [100, 200], evaluated }), stage({ id: 'dpo', kind: 'dpo' })], over);
    const first = p.update(view(150), 0);
    expect(first.split('\n').slice(0, -1)).toEqual([
      expect.stringMatching(/^\[1970-01-01T00:00:00\.000Z\] lineage demo: running · base evaluated: yes$/),
      expect.stringMatching(/^\[[^\]]+\] {3}sft\s+training\s+step 150\/300\s+loss 0\.5000\s+evaluated 1\/2\s+ETA —$/),
      expect.stringMatching(/^\[[^\]]+\] {3}dpo\s+waiting\s+step -\/-/),
    ]);
    expect(first).not.toContain('\u001b');
    // The same progress again, later: nothing (the clock and the ETA alone are no change).
    expect(p.update(view(150), 3000)).toBe('');
    expect(p.update(view(150), 6000)).toBe('');
    // The step moves: sft's line only.
    const moved = p.update(view(160), 9000).split('\n').slice(0, -1);
    expect(moved).toHaveLength(1);
    expect(moved[0]).toMatch(/ {3}sft\s+training\s+step 160\/300/);
    // An evaluation lands: sft's line again.
    expect(p.update(view(160, 'training', [100, 200]), 12_000)).toMatch(/evaluated 2\/2/);
    expect(p.update(view(160, 'training', [100, 200]), 15_000)).toBe('');
    // The lineage finishes: its line (with the report) and the changed stage.
    const done = p.update(view(null, 'done', [100, 200], { status: 'done', report: 's3://b/r.html' }), 18_000).split('\n').slice(0, -1);
    expect(done).toHaveLength(2);
    expect(done[0]).toMatch(/lineage demo: done · base evaluated: yes · report: s3:\/\/b\/r\.html$/);
    expect(done[1]).toMatch(/ {3}sft\s+done\s+step 300\/300\s+loss 0\.5000\s+evaluated 2\/2$/);
  });
});
