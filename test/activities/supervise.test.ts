/**
 * The trainer supervisor (runTrainerCommand) with a stand-in trainer (fixtures/fake-trainer.mjs): a
 * failed spawn, failure classification, heartbeats, cancellation and the GPU lease, without the
 * Python environment or the local stack.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { TrainerEvent } from '../../common/contracts';
import { resetWorkerEnv } from '../../activities/env';
import { GpuPool, setGpuPool } from '../../activities/gpus';
import { groupAlive } from '../../activities/processGroup';
import { runTrainerCommand, trainerPythonProblem, type TrainerCommandInput } from '../../activities/trainerCommand';

const FAKE = path.join(__dirname, 'fixtures', 'fake-trainer.mjs');
const saved = process.env.VALUEDRIFT_PYTHON;
let dir: string;
let pool: GpuPool;

function usePython(python: string): void {
  process.env.VALUEDRIFT_PYTHON = python;
  resetWorkerEnv();
}

beforeAll(async () => {
  await fs.chmod(FAKE, 0o755);
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-supervise-'));
});
afterEach(() => {
  setGpuPool(undefined);
  if (saved === undefined) delete process.env.VALUEDRIFT_PYTHON;
  else process.env.VALUEDRIFT_PYTHON = saved;
  resetWorkerEnv();
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** Runs the supervisor as an activity on a pretend 2-GPU node, leasing one GPU. */
function run(config: Record<string, unknown>, extra: Partial<TrainerCommandInput> = {}, env = new MockActivityEnvironment()) {
  pool = new GpuPool(['0', '1']);
  setGpuPool(pool);
  return env.run((i: TrainerCommandInput) => runTrainerCommand(i), { command: 'generate', what: 'fake job', gpus: 1, config, ...extra });
}

const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);

describe('trainer supervisor', () => {
  it('turns a trainer that cannot be started into a failed activity naming the setting, and returns the lease', async () => {
    usePython('/nonexistent/bin/python');
    const err = await failure(run({ fake: 'done' }));
    expect(err).toBeInstanceOf(ApplicationFailure);
    const f = err as ApplicationFailure;
    expect(f.type).toBe('TrainerSpawnFailed');
    expect(f.nonRetryable).toBeFalsy();
    expect(f.message).toMatch(/^fake job: could not start the trainer with \/nonexistent\/bin\/python: spawn \/nonexistent\/bin\/python ENOENT; check VALUEDRIFT_PYTHON=\/nonexistent\/bin\/python$/);
    expect(pool.available).toBe(2);
    // The worker's start-up check says the same before any job is taken.
    expect(trainerPythonProblem()).toMatch(/\/nonexistent\/bin\/python is not executable \(ENOENT\)/);
  });

  it('returns the done event, hands the leased GPU to the trainer, and gives it back', async () => {
    usePython(FAKE);
    const events: TrainerEvent[] = [];
    const pids = new Set<number>();
    const done = await run({ fake: 'done' }, { onEvent: (e, pid) => (events.push(e), pids.add(pid)) });
    expect(done).toEqual({ event: 'done', finalStep: 2, path: '/tmp/out' });
    expect(events.map((e) => e.event)).toEqual(['progress', 'progress', 'done']);
    expect(pids.size).toBe(1);
    expect(pool.available).toBe(2);
    expect(trainerPythonProblem()).toBeNull();
  });

  it('classifies failures: a refusal is non-retryable, anything else retryable with the evidence', async () => {
    usePython(FAKE);
    const refused = (await failure(run({ fake: 'error', kind: 'bad_config' }))) as ApplicationFailure;
    expect(refused).toBeInstanceOf(ApplicationFailure);
    expect(refused.nonRetryable).toBe(true);
    expect(refused.message).toBe('fake job: bad_config: refused by the fake trainer');

    const transient = (await failure(run({ fake: 'error', kind: 'transient' }))) as ApplicationFailure;
    expect(transient.nonRetryable).toBeFalsy();
    expect(transient.message).toContain('transient: refused by the fake trainer');
    expect(transient.message).toContain('Traceback: something the trainer refused');

    const silent = (await failure(run({ fake: 'nodone' }))) as ApplicationFailure;
    expect(silent.type).toBe('TrainerFailed');
    expect(silent.message).toContain('exited with code 0');
    expect(silent.message).toContain('unexpected stdout: this is not an event');
    expect(pool.available).toBe(2);
  });

  it('heartbeats the caller\'s details; cancellation kills the whole process group and returns the lease', async () => {
    usePython(FAKE);
    const pidFile = path.join(dir, 'grandchild.pid');
    const env = new MockActivityEnvironment();
    const beats: unknown[] = [];
    let pid = 0;
    let step = 0;
    env.on('heartbeat', (d: unknown) => {
      beats.push(d);
      env.cancel();
    });
    const err = await failure(
      run({ fake: 'hang', pidFile }, { heartbeat: () => ({ step }), onEvent: (e, p) => ((pid = p), e.event === 'progress' && (step = e.step)) }, env),
    );
    expect(err).toBeInstanceOf(CancelledFailure);
    expect(beats[0]).toEqual({ step: expect.any(Number) });
    expect((beats[0] as { step: number }).step).toBeGreaterThan(0);
    expect(pid).toBeGreaterThan(0);
    expect(groupAlive(pid)).toBe(false);
    const grandchild = Number(await fs.readFile(pidFile, 'utf8'));
    expect(() => process.kill(grandchild, 0)).toThrow();
    expect(pool.available).toBe(2);
  }, 30_000);

  it('stops the trainer and returns the lease when onSpawn fails; afterExit runs with the lease already returned', async () => {
    usePython(FAKE);
    let pid = 0;
    const err = await failure(
      run({ fake: 'hang', pidFile: path.join(dir, 'gc2.pid') }, {
        onSpawn: async (p) => {
          pid = p;
          throw new Error('cannot record the pid');
        },
      }),
    );
    expect((err as Error).message).toBe('cannot record the pid');
    expect(groupAlive(pid)).toBe(false);
    expect(pool.available).toBe(2);

    let availableAfterExit = -1;
    const late = await failure(
      run({ fake: 'done' }, {
        afterExit: async () => {
          availableAfterExit = pool.available;
          throw new Error('upload failed');
        },
      }),
    );
    expect((late as Error).message).toBe('upload failed');
    expect(availableAfterExit).toBe(2);
  });
});
