/**
 * Live progress through the CLI's entry point, against the real lineage and stage workflows on the
 * Temporal dev server, the real store activities on the stack's S3 server, and the workflow harness's
 * fake trainer, generator and judge (test/support/workflowEnv.ts). The trainer announces 101
 * checkpoints, heartbeats its step and holds; the judge holds every checkpoint after step 60.
 * While both hold:
 *  - `npm run lineage -- status` (spawned) shows the stage's 101 checkpoints and 6 evaluations as
 *    runs, and `status --json` still lists every step;
 *  - `status --watch` on a pipe prints the lineage's line and the stage's line once, then nothing
 *    while nothing changes;
 *  - `status --watch` on a terminal (a pseudo-terminal from Python's pty module) redraws one line per
 *    stage in place on every poll.
 * Then training goes on, a step every 400 ms: the terminal shows an ETA once the step has moved
 * twice, the pipe a line per change; the lineage is then terminated (the held judge would keep it
 * running) and both watchers end by themselves.
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { Context } from '@temporalio/activity';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Activities } from '../../activities';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { lineageWorkflow, stageProgressQuery, type StageProgress } from '../../workflows';
import type { ProgressView } from '../../worker/lineageClient';
import { cursorUp } from '../../worker/progress';
import { fakeActivities, loadStackEnv, recorder, stage, startTestServer, testSpec, uniqueName, workflowBundle, type FakeTrainingPlan } from '../support/workflowEnv';

const ROOT = path.resolve(__dirname, '..', '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
const PYTHON = path.join(ROOT, '.venv', 'bin', 'python');
/** Runs its arguments on a pseudo-terminal, copying what they print to stdout; exits with their status. */
const PTY_RUN = 'import os, pty, sys\nsys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))';

const range = (from: number, to: number, by: number): number[] => Array.from({ length: Math.floor((to - from) / by) + 1 }, (_, i) => from + i * by);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Announced before the hold (101 checkpoints), then the rest; the judge holds steps after JUDGED. */
const HELD_STEPS = range(10, 1010, 10);
const ALL_STEPS = range(10, 1200, 10);
const JUDGED = 60;

/** A promise with its resolver. */
function gate(): { open(): void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}

/** Waits for `g`, heartbeating meanwhile (the details unchanged), so a long hold is no timeout. */
async function holdAt(g: Promise<void>, details?: unknown): Promise<void> {
  let done = false;
  void g.then(() => (done = true));
  while (!done) {
    Context.current().heartbeat(details);
    await Promise.race([g, sleep(10_000)]);
  }
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let env: TestWorkflowEnvironment;
let workers: Worker[] = [];
let running: Promise<void>[] = [];
/** Training goes on past the hold. */
const release = gate();
/** The judge goes on (only when the test is over: the lineage never finishes). */
const judgeGate = gate();

function childEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    VALUEDRIFT_WATCH_INTERVAL_MS: '200',
    TEMPORAL_ADDRESS: env.connection.options.address,
    TEMPORAL_NAMESPACE: env.namespace ?? 'default',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
}

function spawnRun(file: string, args: readonly string[], onStdout?: (all: string) => void): Promise<Run> {
  return new Promise((resolve) => {
    let all = '';
    const child = execFile(file, args, { cwd: ROOT, env: childEnv(), timeout: 240_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }),
    );
    child.stdin?.end();
    child.stdout?.on('data', (chunk: Buffer | string) => {
      all += chunk.toString();
      onStdout?.(all);
    });
  });
}

/** `tsx worker/cli.ts …`, as `npm run lineage -- …` runs it. */
const lineage = (args: readonly string[], onStdout?: (all: string) => void) => spawnRun(TSX, ['worker/cli.ts', ...args], onStdout);

async function waitFor<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, ms = 200_000): Promise<T> {
  const until = Date.now() + ms;
  let last: T | undefined;
  while (Date.now() < until) {
    last = await read().catch(() => undefined);
    if (last !== undefined && ok(last)) return last;
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

beforeAll(async () => {
  loadStackEnv();
  // The test ends its lineage mid-flight on purpose: the worker's warnings about that are expected noise.
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  env = await startTestServer();
  const rec = recorder();
  const plan = (): FakeTrainingPlan => ({
    steps: ALL_STEPS,
    after: async (_stageId, step) => {
      const details = { step, total: ALL_STEPS.at(-1), loss: 1 / step };
      Context.current().heartbeat(details);
      if (step === HELD_STEPS.at(-1)) await holdAt(release.opened, details);
      else if (step > (HELD_STEPS.at(-1) as number)) await sleep(400);
    },
  });
  const fakes = fakeActivities(env, rec, plan);
  const judgeResponses: Activities['judgeResponses'] = async (input) => {
    if (input.stageId === 'sft' && input.step > JUDGED) await holdAt(judgeGate.opened);
    return fakes.judgeResponses(input);
  };
  const activities = { ...fakes, judgeResponses };
  const common = { connection: env.nativeConnection, namespace: env.namespace ?? 'default' };
  workers = [
    await Worker.create({ ...common, taskQueue: TASK_QUEUES.workflows, workflowBundle: await workflowBundle() }),
    // Room for every held judge call beside the store activities.
    await Worker.create({ ...common, taskQueue: TASK_QUEUES.cpu, activities, maxConcurrentActivityTaskExecutions: 200 }),
    // Heartbeats reach the server at once, so each poll sees the step the trainer is at.
    await Worker.create({
      ...common,
      taskQueue: TASK_QUEUES.gpu,
      activities,
      maxConcurrentActivityTaskExecutions: 4,
      maxHeartbeatThrottleInterval: '50 ms',
      defaultHeartbeatThrottleInterval: '50 ms',
    }),
  ];
  running = workers.map((w) => w.run());
});

afterAll(async () => {
  release.open();
  judgeGate.open();
  workers.forEach((w) => w.shutdown());
  await Promise.all(running);
  await env?.teardown();
});

/** A terminal's output as frames: the text between cursor-up moves, with how far each move went up. */
function frames(tty: string): Array<{ up: number; lines: string[] }> {
  const text = tty.replace(/\r\n/g, '\n');
  const parts = text.split(/(?=\u001b\[\d+A)/);
  return parts.map((p) => {
    const m = /^\u001b\[(\d+)A/.exec(p);
    const body = m ? p.slice(m[0].length) : p;
    const lines = body
      .replace(/\u001b\[J/g, '')
      .split('\n')
      .slice(0, -1)
      .map((l) => l.replace(/^\r\u001b\[2K/, ''));
    return { up: m ? Number(m[1]) : 0, lines };
  });
}

describe('live progress through the CLI (real workflows, 100+ checkpoints)', () => {
  it('status summarises, --watch prints on change on a pipe and redraws in place on a terminal, with an ETA', async () => {
    const name = uniqueName('cli-progress');
    const workflowId = workflowIds.lineage(name);
    await env.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId, args: [testSpec(name, [stage.sft()])] });

    const stageHandle = env.client.workflow.getHandle(workflowIds.stage(name, 'sft'));
    const evaluated = range(10, JUDGED, 10);
    await waitFor<StageProgress>(
      `${HELD_STEPS.length} checkpoints, ${evaluated.length} evaluated`,
      () => stageHandle.query(stageProgressQuery),
      (p) => p.checkpoints.length === HELD_STEPS.length && p.evaluated.length === evaluated.length,
    );
    // The heartbeat of the held step has reached the server.
    await waitFor('the step of the hold', async () => (await stageHandle.describe()).raw.pendingActivities?.[0]?.heartbeatDetails, (d) => d !== undefined && d !== null);

    // One-shot status, through npm as a user types it: runs, not 101 steps.
    const shot = await spawnRun('npm', ['run', '--silent', 'lineage', '--', 'status', name]);
    expect(shot.stderr).toBe('');
    expect(shot.code).toBe(0);
    expect(shot.stdout.split('\n')).toEqual([
      `lineage ${name}: running   base evaluated: yes`,
      expect.stringMatching(/^ {2}stage\s+kind\s+status\s+step\/total\s+loss\s+checkpoints\s+evaluated$/),
      expect.stringMatching(/^ {2}sft\s+sft\s+training\s+1010\/1200\s+0\.0010\s+10–1010 every 10 \(101\) evaluated 10–60 every 10 \(6\); pending 70–1010 every 10 \(95\)$/),
      '',
    ]);
    // --json is unchanged: every step.
    const asJson = await lineage(['status', name, '--json']);
    const view = JSON.parse(asJson.stdout) as ProgressView;
    expect(view.stages[0]).toMatchObject({ id: 'sft', status: 'training', step: 1010, totalSteps: 1200, checkpoints: HELD_STEPS, evaluated });

    // Both watchers, while nothing moves.
    let plainSoFar = '';
    let ttySoFar = '';
    const plain = lineage(['status', name, '--watch'], (all) => (plainSoFar = all));
    const tty = spawnRun(PYTHON, ['-c', PTY_RUN, TSX, 'worker/cli.ts', 'status', name, '--watch'], (all) => (ttySoFar = all));
    await waitFor('both watchers to print', async () => [plainSoFar, ttySoFar], ([p, t]) => /sft/.test(p ?? '') && (t?.split(cursorUp(2)).length ?? 0) >= 2);
    // Several polls of each while nothing changes: the terminal redraws every poll; the pipe has
    // printed two lines and no more.
    await waitFor('five redraws', async () => ttySoFar, (t) => t.split(cursorUp(2)).length >= 6);
    await sleep(1500);
    expect(plainSoFar.split('\n').slice(0, -1)).toEqual([
      expect.stringMatching(new RegExp(`^\\[[^\\]]+\\] lineage ${name}: running · base evaluated: yes$`)),
      expect.stringMatching(/^\[[^\]]+\] {3}sft\s+training\s+step 1010\/1200\s+loss 0\.0010\s+evaluated 6\/101\s+ETA —$/),
    ]);

    // Training goes on; once the terminal shows an ETA, the lineage is ended and both watchers stop by themselves.
    release.open();
    const eta = /^\r?\u001b\[2K {2}sft\s+training\s+step \d+\/1200 .* ETA (\d+m )?\d+s\r?$/m;
    await waitFor('an ETA on the terminal', async () => ttySoFar, (t) => eta.test(t));
    await env.client.workflow.getHandle(workflowId).terminate('test over');
    const [p, t] = await Promise.all([plain, tty]);
    expect(p.stderr).toBe('');
    expect(p.code).toBe(0);
    expect(t.code).toBe(0);

    // The pipe: plain lines, each one a change of its subject; the step moved.
    expect(p.stdout).not.toContain('\u001b');
    const plainLines = p.stdout.split('\n').slice(0, -1).map((l) => l.replace(/^\[[^\]]+\] /, ''));
    const sftLines = plainLines.filter((l) => l.startsWith('  sft ')).map((l) => l.replace(/\s+ETA .*$/, ''));
    for (let i = 1; i < sftLines.length; i++) expect(sftLines[i], `line ${i}`).not.toBe(sftLines[i - 1]);
    expect(sftLines.filter((l) => /step (10[2-9]\d|11\d\d|1200)\/1200/.test(l)).length).toBeGreaterThan(0);

    // The terminal: each redraw goes up over exactly the lines of the frame before it; one line per stage.
    const fs = frames(t.stdout);
    expect(fs.length).toBeGreaterThan(6);
    expect(fs[0]?.up).toBe(0);
    for (let i = 1; i < fs.length; i++) expect(fs[i]?.up, `frame ${i}`).toBe(fs[i - 1]?.lines.length);
    for (const f of fs) {
      expect(f.lines).toHaveLength(2);
      expect(f.lines[0]).toMatch(new RegExp(`^lineage ${name}: running · base evaluated: yes · \\d\\d:\\d\\d:\\d\\d$`));
      expect(f.lines[1]).toMatch(/^ {2}sft\s+\S+\s+step \S+\s+loss \S+\s+evaluated \d+\/\d+/);
    }
    // ETA: unknown while the step stands still, known once it has moved twice.
    expect(fs[0]?.lines[1]).toMatch(/step 1010\/1200 .*ETA —$/);
    expect(fs.some((f) => /ETA (\d+m )?\d+s$/.test(f.lines[1] as string))).toBe(true);
  }, 400_000);
});
