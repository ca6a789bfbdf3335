/**
 * Multi-node training (a stage's `nodes`), the parts that need no cluster: the accelerate argv of each
 * machine rank, `lineage validate` through the CLI's entry point (what it accepts and the refusals,
 * naming each field), the workers' settings and queues, and the rendezvous record in a shared dir.
 * The whole path on real parts (two gpu workers, the trainer on the tiny model) is
 * test/multinode/multinode.slow.ts (`npm run test:multinode`).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateEditedDemo, type Stage } from '../support/validateCli';
import { parseWorkerEnv } from '../../activities/env';
import { accelerateLauncher, GpuPool, GpuSlots } from '../../activities/gpus';
import { awaitRendezvous, multiNodeSettings, publishRendezvous, rendezvousFile, sharedWorkDir, type Rendezvous } from '../../activities/multinode';
import { gpuMultiNodeTaskQueue, gpuTaskQueue, TASK_QUEUES } from '../../common/config';
import { gpuWorkerOptions } from '../../worker/main';

let dir: string;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-multinode-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const validate = validateEditedDemo;

const flag = (args: string[], name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);

describe('multi-node launch', () => {
  it('gives each machine rank the group world, its own rank and the leader address and port', () => {
    for (const rank of [0, 1, 2]) {
      const args = accelerateLauncher(4, 1111, { nodes: 3, rank, addr: '10.0.0.5', port: 29555 });
      expect(args.slice(0, 3)).toEqual(['-m', 'accelerate.commands.launch', '--multi_gpu']);
      expect(flag(args, '--num_processes')).toBe('12');
      expect(flag(args, '--num_machines')).toBe('3');
      expect(flag(args, '--machine_rank')).toBe(String(rank));
      expect(flag(args, '--main_process_ip')).toBe('10.0.0.5');
      // The leader's port, not this node's own pick.
      expect(flag(args, '--main_process_port')).toBe('29555');
      expect(args.slice(-2)).toEqual(['-m', 'valuedrift_trainer']);
    }
    // One node: unchanged (no rank, no address).
    const single = accelerateLauncher(2, 29600);
    expect([flag(single, '--num_processes'), flag(single, '--num_machines'), flag(single, '--main_process_port')]).toEqual(['2', '1', '29600']);
    expect(flag(single, '--machine_rank')).toBeUndefined();
    expect(flag(single, '--main_process_ip')).toBeUndefined();
  });

  const perDevice = (st: Stage, n: number) => Object.assign(st, { hyperparameters: { ...(st.hyperparameters as Stage), per_device_train_batch_size: n } });

  it('lineage validate accepts ddp and fsdp across nodes, and a 0-GPU group (CPU processes)', async () => {
    const r = await validate((s) => {
      // demo.json's stages: global batch 8; 2 nodes × 2 GPUs × 1 per device divide it.
      Object.assign(perDevice(s[0] as Stage, 1), { gpus: 2, nodes: 2 });
      Object.assign(perDevice(s[1] as Stage, 1), { gpus: 2, nodes: 2, parallelism: 'fsdp' });
      Object.assign(s[2] as Stage, { gpus: 0, nodes: 2 });
    });
    expect(r.out).toMatch(/^ok: lineage/);
    expect(r.code).toBe(0);
  }, 120_000);

  it('refuses zero3, lora and ppo across nodes, and a global batch the whole group does not divide', async () => {
    const r = await validate((s) => {
      Object.assign(perDevice(s[0] as Stage, 1), { gpus: 2, nodes: 2, parallelism: 'zero3' });
      Object.assign(perDevice(s[1] as Stage, 1), { gpus: 1, nodes: 2, lora: {} });
      Object.assign(perDevice(s[2] as Stage, 1), { gpus: 2, nodes: 3 });
      const hp = { max_steps: 2, per_device_train_batch_size: 1, global_batch_size: 2, max_length: 128 };
      s.push({ id: 'rm', parent: 'sft', kind: 'reward', dataset: 'demo-stance-pairs', alignment: 'support-aligned', gpus: 0, checkpointEvery: 2, hyperparameters: hp });
      s.push({ id: 'ppo', parent: 'sft', kind: 'ppo', dataset: 'demo-stance-pairs', rewardStage: 'rm', gpus: 0, nodes: 2, checkpointEvery: 2, hyperparameters: { ...hp, response_length: 16 } });
    });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/stages\[0\]\.nodes: zero3 across nodes is not supported; use ddp or fsdp for nodes 2/);
    expect(r.out).toMatch(/stages\[1\]\.nodes: multi-node training with lora is not supported/);
    expect(r.out).toMatch(/stages\[2\]\.hyperparameters\.global_batch_size: must be a multiple of per_device_train_batch_size × max\(1, gpus\) × nodes = 6/);
    expect(r.out).toMatch(/stages\[4\]\.nodes: multi-node training is not available for the ppo stage/);
    // Only these: the reward stage and the rest of each stage are fine.
    expect(r.out).not.toMatch(/stages\[3\]/);
    expect(r.out).not.toMatch(/multi-node training is not supported: a stage trains on one node/);
  }, 120_000);
});

describe('multi-node workers', () => {
  it('reads the shared dir, the node address (default the hostname) and the rendezvous bound from the worker env', () => {
    expect(multiNodeSettings(parseWorkerEnv({}))).toEqual({ sharedDir: undefined, nodeAddr: os.hostname(), rendezvousTimeoutMs: 900_000 });
    const set = parseWorkerEnv({ VALUEDRIFT_SHARED_DIR: '/mnt/shared', VALUEDRIFT_NODE_ADDR: '10.1.2.3', VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS: '30' });
    expect(multiNodeSettings(set)).toEqual({ sharedDir: '/mnt/shared', nodeAddr: '10.1.2.3', rendezvousTimeoutMs: 30_000 });
    expect(() => parseWorkerEnv({ VALUEDRIFT_SHARED_DIR: 'shared' })).toThrow(/VALUEDRIFT_SHARED_DIR="shared": must be an absolute path/);
    expect(() => parseWorkerEnv({ VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS: '0' })).toThrow(/VALUEDRIFT_RENDEZVOUS_TIMEOUT_SECONDS/);
  });

  it('polls the multi-node queues of the sizes it fits only with a shared dir, from the same GPU slots', () => {
    const slots = new GpuSlots(new GpuPool(['0', '1']));
    const base = { namespace: 'default' };
    const plain = gpuWorkerOptions(slots, {}, base).map((o) => o.taskQueue);
    expect(plain).toEqual([TASK_QUEUES.gpu, gpuTaskQueue(1), gpuTaskQueue(2)]);
    const multi = gpuWorkerOptions(slots, {}, base, { multiNode: true });
    expect(multi.map((o) => o.taskQueue)).toEqual([...plain, gpuMultiNodeTaskQueue(0), gpuMultiNodeTaskQueue(1), gpuMultiNodeTaskQueue(2)]);
    expect(new Set(multi.map((o) => o.taskQueue)).size).toBe(multi.length);
  });

  it('a 1-GPU node that runs one member takes no second member of the group (nor any other job) until it ends', async () => {
    const slots = new GpuSlots(new GpuPool(['0']));
    const [leaderQueue, followerQueue] = [slots.supplier(1), slots.supplier(1)];
    const ctx = { slotType: 'activity', taskQueue: gpuMultiNodeTaskQueue(1), workerIdentity: 'w', workerBuildId: '', isSticky: false } as never;
    const permit = leaderQueue.tryReserveSlot(ctx);
    expect(permit).not.toBeNull();
    leaderQueue.markSlotUsed({ permit: permit!, slotInfo: {} as never });
    expect(followerQueue.tryReserveSlot(ctx)).toBeNull();
    leaderQueue.releaseSlot({ permit: permit! });
    expect(followerQueue.tryReserveSlot(ctx)).not.toBeNull();
  });

  it('publishes the rendezvous whole under the token; a follower waits for it, or fails retryably after its bound', async () => {
    const shared = path.join(dir, 'shared');
    const token = '0f8e2a4c-1b3d-4e5f-8a7b-9c0d1e2f3a4b';
    const record: Rendezvous = { token, nodes: 2, addr: '127.0.0.1', port: 29511, attempt: 3, config: { output_dir: path.join(shared, 'out') } };
    let beats = 0;
    const waiting = awaitRendezvous(shared, token, { timeoutMs: 10_000, pollMs: 20, whileWaiting: () => beats++ });
    await new Promise((r) => setTimeout(r, 120));
    const file = await publishRendezvous(shared, record);
    expect(file).toBe(rendezvousFile(shared, token));
    await expect(waiting).resolves.toEqual(record);
    expect(beats).toBeGreaterThan(0);
    expect((await fs.readdir(path.dirname(file))).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    const late = await awaitRendezvous(shared, '11111111-2222-4333-8444-555555555555', { timeoutMs: 100, pollMs: 20 }).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(ApplicationFailure);
    expect((late as ApplicationFailure).type).toBe('RendezvousTimeout');
    expect((late as ApplicationFailure).nonRetryable).toBe(false);
    expect(() => rendezvousFile(shared, '../../etc/passwd')).toThrow(/invalid rendezvous token/);
    expect(sharedWorkDir('/mnt/s', 'lin', 'sft', 'abcdef0123456789ffff')).toBe('/mnt/s/valuedrift/train/lin/sft/abcdef0123456789');
  });
});
