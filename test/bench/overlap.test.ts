/**
 * The overlap and scheduling-latency computations (bench/overlapHistory.ts) on histories recorded
 * from the real demo lineage (test/replay/histories). The expected figures are read here from the
 * raw JSON by event ID (the events were picked out by reading the history), so the test checks that
 * the computation takes the right events, not only that it returns something.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { describe, expect, it } from 'vitest';
import { summariseOverlap } from '../../bench/overlap';
import { announcements, eventMs, evaluationChildren, firstActivityStart, OVERLAP_GOAL, percentiles, stageChildren, stageOverlap, type History } from '../../bench/overlapHistory';

const DIR = path.join(__dirname, '..', 'replay', 'histories');
type RawEvent = { eventId: string; eventTime: string } & Record<string, unknown>;
const raw = (file: string) => JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8')) as { events: RawEvent[] };
const load = (file: string): History => historyFromJSON(raw(file)) as History;

/** An event's time (ms) straight from the JSON's RFC 3339 string, nanoseconds kept. */
function rawMs(file: string, id: number): number {
  const e = raw(file).events.find((x) => Number(x.eventId) === id);
  if (!e) throw new Error(`${file} has no event ${id}`);
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(e.eventTime);
  if (!m) throw new Error(`unexpected time ${e.eventTime}`);
  return Date.parse(`${m[1]}Z`) + Number(`0.${m[2] ?? '0'}`) * 1000;
}

describe('overlap from recorded histories', () => {
  it('the demo SFT stage: wall = started→completed, training = trainStage started→completed, last evaluation = step 12 initiated→completed', () => {
    const f = 'stage--demo-sft.json';
    const o = stageOverlap('valuedrift/demo/sft', load(f));
    // Events: 1 started, 46 completed; trainStage scheduled 11, started 28, completed 29;
    // eval/step-6 initiated 16, completed 38; eval/step-12 initiated 25, completed 42.
    const wall = (rawMs(f, 46) - rawMs(f, 1)) / 1000;
    const training = (rawMs(f, 29) - rawMs(f, 28)) / 1000;
    const lastEval = (rawMs(f, 42) - rawMs(f, 25)) / 1000;
    expect(o.status).toBe('measured');
    expect(o.wallSeconds).toBeCloseTo(wall, 6);
    expect(o.trainingSeconds).toBeCloseTo(training, 6);
    expect(o.lastStep).toBe(12);
    expect(o.lastEvaluationSeconds).toBeCloseTo(lastEval, 6);
    expect(o.ratio).toBeCloseTo(wall / (training + lastEval), 9);
    expect(o.ok).toBe(wall / (training + lastEval) <= OVERLAP_GOAL);
    // The wait before training (scheduled 11 → started 28 includes the slot queue) is reported apart.
    const wait = (rawMs(f, 28) - rawMs(f, 1)) / 1000;
    expect(o.waitSeconds).toBeCloseTo(wait, 6);
    expect(o.ratioAfterWait).toBeCloseTo((wall - wait) / (training + lastEval), 9);
    expect(o.okAfterWait).toBe((wall - wait) / (training + lastEval) <= OVERLAP_GOAL);
    // Minutes of training and evaluation, not milliseconds: the times are in seconds.
    expect(training).toBeGreaterThan(60);
  });

  it('the demo DPO stage: the last evaluation is the highest step, whatever order the children completed in', () => {
    const f = 'stage--demo-dpo-support.json';
    const h = load(f);
    const children = evaluationChildren(h);
    expect(children.length).toBeGreaterThan(1);
    const steps = children.map((c) => c.step);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    const o = stageOverlap('valuedrift/demo/dpo-support', h);
    expect(o.status).toBe('measured');
    expect(o.lastStep).toBe(Math.max(...steps));
    const last = children.at(-1) as (typeof children)[number];
    expect(o.lastEvaluationSeconds).toBeCloseTo(((last.completed as number) - last.initiated) / 1000, 9);
    const events = raw(f).events;
    expect(o.wallSeconds).toBeCloseTo((rawMs(f, Number(events.at(-1)?.eventId)) - rawMs(f, 1)) / 1000, 6);
  });

  it('a stage with no trainStage is cached; one without its completion event is unfinished', () => {
    const f = 'stage--demo-sft.json';
    const r = raw(f);
    const trainScheduled = 11;
    const noTraining = {
      events: r.events.filter((e) => {
        const a = (e.activityTaskScheduledEventAttributes ?? e.activityTaskStartedEventAttributes ?? e.activityTaskCompletedEventAttributes) as { scheduledEventId?: string } | undefined;
        return Number(e.eventId) !== trainScheduled && Number(a?.scheduledEventId) !== trainScheduled;
      }),
    };
    const cached = stageOverlap('x', historyFromJSON(noTraining) as History);
    expect(cached.status).toBe('cached');
    expect(cached.ratio).toBeNull();
    expect(cached.wallSeconds).toBeCloseTo((rawMs(f, 46) - rawMs(f, 1)) / 1000, 6);
    const running = stageOverlap('x', historyFromJSON({ events: r.events.slice(0, -1) }) as History);
    expect(running).toMatchObject({ status: 'unfinished', wallSeconds: null, ratio: null, ok: null });
  });

  it('the lineage history names its stage workflows (not the base evaluation)', () => {
    expect(stageChildren(load('lineage--demo.json'))).toEqual(['valuedrift/demo/sft', 'valuedrift/demo/dpo-support', 'valuedrift/demo/dpo-oppose']);
  });

  it('summariseOverlap counts the measured stages, the passing ones and the worst ratio', () => {
    const a = stageOverlap('valuedrift/demo/sft', load('stage--demo-sft.json'));
    const b = stageOverlap('valuedrift/demo/dpo-support', load('stage--demo-dpo-support.json'));
    const s = summariseOverlap('demo', [a, b, { ...a, workflowId: 'c', status: 'cached', ratio: null, ok: null }]);
    expect(s.measured).toBe(2);
    expect(s.passing).toBe([a, b].filter((x) => x.ok).length);
    expect(s.worstRatio).toBe(Math.max(a.ratio as number, b.ratio as number));
    expect(s.passingAfterWait).toBe([a, b].filter((x) => x.okAfterWait).length);
    expect(s.worstRatioAfterWait).toBe(Math.max(a.ratioAfterWait as number, b.ratioAfterWait as number));
  });
});

describe('scheduling latency from recorded histories', () => {
  it('announcements: each step’s first checkpointReady signal time', () => {
    const f = 'stage--demo-sft.json';
    const a = announcements(load(f));
    expect([...a.keys()]).toEqual([6, 12]);
    expect(a.get(6)).toBeCloseTo(rawMs(f, 12), 3);
    expect(a.get(12)).toBeCloseTo(rawMs(f, 21), 3);
  });

  it('firstActivityStart: the evaluation’s lookupEvaluation start; latency = that − the announcement', () => {
    const f = 'evaluate--demo-sft-step-12.json';
    const h = load(f);
    const lookup = raw(f).events.find((e) => (e.activityTaskScheduledEventAttributes as { activityType?: { name?: string } } | undefined)?.activityType?.name === 'lookupEvaluation');
    const started = raw(f).events.find((e) => (e.activityTaskStartedEventAttributes as { scheduledEventId?: string } | undefined)?.scheduledEventId === lookup?.eventId);
    expect(started).toBeDefined();
    expect(firstActivityStart(h)).toBeCloseTo(rawMs(f, Number(started?.eventId)), 3);
    const latency = (firstActivityStart(h) as number) - (announcements(load('stage--demo-sft.json')).get(12) as number);
    // Signal at 18:56:05.906, lookupEvaluation started about a second later on the loaded demo machine.
    expect(latency).toBeGreaterThan(0);
    expect(latency).toBeLessThan(60_000);
    expect(eventMs(h.events?.[0] as NonNullable<History['events']>[number])).toBeGreaterThan(rawMs('stage--demo-sft.json', 21));
  });

  it('percentiles: nearest rank', () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
    expect(percentiles(xs)).toEqual({ n: 100, p50: 50, p95: 95, max: 100 });
    expect(percentiles([7])).toEqual({ n: 1, p50: 7, p95: 7, max: 7 });
    expect(percentiles([])).toEqual({ n: 0, p50: null, p95: null, max: null });
  });
});
