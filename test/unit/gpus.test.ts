import { describe, expect, it } from 'vitest';
import { parseWorkerEnv } from '../../activities/env';
import { accelerateLauncher, GpuPool, nodeGpus } from '../../activities/gpus';

const settled = () => new Promise((r) => setTimeout(r, 0));

describe('GPU pool', () => {
  it('gives concurrent jobs disjoint devices through CUDA_VISIBLE_DEVICES', async () => {
    const pool = new GpuPool(['0', '1', '2', '3']);
    const a = await pool.acquire(2);
    const b = await pool.acquire(1);
    expect(a.env).toEqual({ CUDA_VISIBLE_DEVICES: '0,1' });
    expect(b.env).toEqual({ CUDA_VISIBLE_DEVICES: '2' });
    expect(pool.available).toBe(1);
    a.release();
    a.release(); // twice is harmless
    expect(pool.available).toBe(3);
    const c = await pool.acquire(3);
    expect(c.devices).toEqual(['0', '1', '3']);
  });

  it('makes a job wait, heartbeating, until enough devices are free, first come first served', async () => {
    const pool = new GpuPool(['0', '1']);
    const held = await pool.acquire(2);
    let beats = 0;
    const order: string[] = [];
    const big = pool.acquire(2, { whileWaiting: () => beats++, pollMs: 5 }).then((l) => (order.push('big'), l));
    const small = pool.acquire(1).then((l) => (order.push('small'), l));
    await new Promise((r) => setTimeout(r, 30));
    expect(order).toEqual([]);
    expect(beats).toBeGreaterThan(0);
    held.release();
    const bigLease = await big;
    await settled();
    expect(order).toEqual(['big']); // the 1-GPU job behind it does not overtake
    bigLease.release();
    expect((await small).devices).toEqual(['0']);
    expect(order).toEqual(['big', 'small']);
  });

  it('stops waiting when the job is cancelled, and serves the next in line', async () => {
    const pool = new GpuPool(['0', '1']);
    const held = await pool.acquire(1);
    const ctl = new AbortController();
    const big = pool.acquire(2, { signal: ctl.signal });
    const small = pool.acquire(1);
    ctl.abort(new Error('cancelled'));
    await expect(big).rejects.toThrow('cancelled');
    expect((await small).devices).toEqual(['1']);
    held.release();
    expect(pool.available).toBe(1);
  });

  it('hides GPUs from CPU jobs on a GPU node and leaves a node without GPUs alone', async () => {
    expect((await new GpuPool(['0']).acquire(0)).env).toEqual({ CUDA_VISIBLE_DEVICES: '' });
    expect((await new GpuPool([]).acquire(2)).env).toEqual({});
    // more than the node has: every device, and the trainer refuses naming the count
    expect((await new GpuPool(['0', '1']).acquire(8)).devices).toEqual(['0', '1']);
  });

  it("reads the node's devices from the worker's environment", () => {
    expect(nodeGpus({ CUDA_VISIBLE_DEVICES: '2, 3' }, () => 8)).toEqual(['2', '3']);
    expect(nodeGpus({ CUDA_VISIBLE_DEVICES: '' }, () => 8)).toEqual([]);
    expect(nodeGpus({ VALUEDRIFT_GPUS: 2 }, () => 8)).toEqual(['0', '1']);
    expect(nodeGpus({ VALUEDRIFT_GPUS: 0 }, () => 8)).toEqual([]);
    expect(nodeGpus({}, () => 3)).toEqual(['0', '1', '2']);
    // From the worker's settings: a malformed count stops the worker naming the variable.
    expect(nodeGpus(parseWorkerEnv({ VALUEDRIFT_GPUS: '3' }), () => 8)).toEqual(['0', '1', '2']);
    expect(nodeGpus(parseWorkerEnv({ CUDA_VISIBLE_DEVICES: '' }), () => 8)).toEqual([]);
    expect(() => parseWorkerEnv({ VALUEDRIFT_GPUS: 'two' })).toThrow(/VALUEDRIFT_GPUS="two"/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_GPUS: '-1' })).toThrow(/VALUEDRIFT_GPUS/);
  });

  it('launches several GPUs with explicit accelerate settings and a port of its own', () => {
    const args = accelerateLauncher(4, 31000);
    expect(args.slice(0, 2)).toEqual(['-m', 'accelerate.commands.launch']);
    expect(args.slice(-2)).toEqual(['-m', 'valuedrift_trainer']);
    const flag = (name: string) => args[args.indexOf(name) + 1];
    expect(args).toContain('--multi_gpu');
    expect([flag('--num_processes'), flag('--num_machines'), flag('--main_process_port')]).toEqual(['4', '1', '31000']);
    expect([flag('--mixed_precision'), flag('--dynamo_backend')]).toEqual(['no', 'no']);
  });
});
