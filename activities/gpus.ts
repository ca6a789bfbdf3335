/**
 * Which GPUs of this node a training or generation job may use.
 *
 * A gpu worker runs as many jobs at once as its GPUs fit (GpuSlots below); without this pool every job would see every GPU
 * and start on cuda:0. Each job leases the devices it needs and gets them through
 * `CUDA_VISIBLE_DEVICES`, so concurrent jobs never share a GPU; a job that needs more than are free
 * waits (heartbeating) for a lease to end. Jobs that need none are hidden from the GPUs on a GPU node.
 */
import { spawnSync } from 'node:child_process';
import type { ActivitySlotInfo, CustomSlotSupplier, SlotPermit } from '@temporalio/worker';
import { workerEnv, type WorkerEnv } from './env';

export interface GpuLease {
  /** Device ids as CUDA_VISIBLE_DEVICES names them on this node. */
  readonly devices: readonly string[];
  /** What the child process's environment gets. */
  readonly env: Record<string, string>;
  release(): void;
}

interface Waiter {
  n: number;
  grant: (lease: GpuLease) => void;
}

export class GpuPool {
  private readonly free: string[];
  private readonly waiters: Waiter[] = [];

  constructor(readonly devices: readonly string[]) {
    this.free = [...devices];
  }

  get size(): number {
    return this.devices.length;
  }

  get available(): number {
    return this.free.length;
  }

  /**
   * Leases `n` devices, first come first served. On a node without GPUs the lease is empty and leaves
   * the environment alone (the trainer refuses a job that asks for GPUs, naming the count). A job that
   * asks for more than the node has gets every device (runTrainerCommand refuses such a job first,
   * retryably: `gpuShortfall`).
   * While it waits, `whileWaiting` runs every `pollMs` (heartbeats); `signal` aborts the wait.
   */
  async acquire(n: number, opts: { whileWaiting?: () => void; signal?: AbortSignal; pollMs?: number } = {}): Promise<GpuLease> {
    if (this.size === 0) return { devices: [], env: {}, release: () => undefined };
    const want = Math.min(Math.max(0, n), this.size);
    if (want === 0) return { devices: [], env: { CUDA_VISIBLE_DEVICES: '' }, release: () => undefined };
    opts.signal?.throwIfAborted();
    if (this.waiters.length === 0 && this.free.length >= want) return this.take(want);
    return new Promise<GpuLease>((resolve, reject) => {
      const timer = opts.whileWaiting ? setInterval(opts.whileWaiting, opts.pollMs ?? 5_000) : undefined;
      const stop = () => {
        if (timer) clearInterval(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        n: want,
        grant: (lease) => {
          stop();
          resolve(lease);
        },
      };
      const onAbort = () => {
        stop();
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        this.serve(); // a smaller request behind this one may fit now
        reject(opts.signal?.reason ?? new Error('aborted'));
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private take(n: number): GpuLease {
    const devices = this.free.splice(0, n);
    let released = false;
    return {
      devices,
      env: { CUDA_VISIBLE_DEVICES: devices.join(',') },
      release: () => {
        if (released) return;
        released = true;
        this.free.push(...devices);
        this.free.sort((a, b) => this.devices.indexOf(a) - this.devices.indexOf(b));
        this.serve();
      },
    };
  }

  private serve(): void {
    while (this.waiters.length > 0 && this.free.length >= (this.waiters[0] as Waiter).n) {
      const w = this.waiters.shift() as Waiter;
      w.grant(this.take(w.n));
    }
  }
}

/**
 * This node's GPUs: the worker's own CUDA_VISIBLE_DEVICES when set (a worker confined to some GPUs
 * hands out only those), else VALUEDRIFT_GPUS, else what `nvidia-smi -L` lists, numbered from 0.
 */
export function nodeGpus(
  env: Pick<WorkerEnv, 'CUDA_VISIBLE_DEVICES' | 'VALUEDRIFT_GPUS'> = workerEnv(),
  smi: () => number = nvidiaSmiCount,
): string[] {
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined) return visible.split(',').map((d) => d.trim()).filter((d) => d !== '' && d !== '-1');
  const count = env.VALUEDRIFT_GPUS ?? smi();
  return Array.from({ length: count }, (_, i) => String(i));
}

function nvidiaSmiCount(): number {
  const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', shell: false });
  if (r.status !== 0 || !r.stdout) return 0;
  return r.stdout.split('\n').filter((l) => l.startsWith('GPU ')).length;
}

let pool: GpuPool | undefined;

/** The worker process's pool, built from `nodeGpus()` on first use. */
export function gpuPool(): GpuPool {
  pool ??= new GpuPool(nodeGpus());
  return pool;
}

/**
 * Why a job that needs `gpus` GPUs cannot run on a node with `pool`'s (more than it has; a node
 * without GPUs runs any job on CPU), or null. A job only lands on such a node through the plain gpu
 * queue (workflows from before per-size queues); refused retryably, so that a node that fits takes the
 * retry.
 */
export function gpuShortfall(gpus: number, pool: GpuPool): string | null {
  if (pool.size === 0 || gpus <= pool.size) return null;
  return `needs ${gpus} GPUs but this worker has ${pool.size} ([${pool.devices.join(', ')}]); left to a worker with enough`;
}

/** For tests and for a worker that knows better than detection. */
export function setGpuPool(p: GpuPool | undefined): void {
  pool = p;
}

/** This node's place in a multi-node group: its rank and where rank 0 listens (activities/multinode.ts). */
export interface MachineRank {
  /** Nodes in the group. */
  nodes: number;
  /** This node's rank, 0 (the leader) to nodes − 1. */
  rank: number;
  /** The leader's reachable address and its rendezvous port. */
  addr: string;
  port: number;
}

/**
 * accelerate's launcher for an `n`-GPU job, every setting explicit so that a default accelerate config
 * on the node (DeepSpeed, fp16, another port) cannot change what the stage asked for; precision is the
 * trainer's decision (bf16 when the GPU supports it). Each job gets its own rendezvous port, so
 * concurrent multi-GPU jobs on one node do not collide on accelerate's default 29500.
 *
 * The launch is the same for every stage `parallelism`: FSDP and DeepSpeed ZeRO-3 are the trainer's
 * decision too (its TrainingArguments, trainer/valuedrift_trainer/sharding.py), so no accelerate
 * sharding flag appears here.
 *
 * One node of a multi-node group (`machine`): `n` is this node's processes (its GPUs, or one CPU
 * process for a 0-GPU stage), the world is nodes × n, and every node connects to the leader's
 * address and port (torch's static rendezvous: rank 0 listens there).
 */
export function accelerateLauncher(n: number, port: number, machine?: MachineRank): string[] {
  const machines = machine
    ? ['--num_processes', String(n * machine.nodes), '--num_machines', String(machine.nodes), '--machine_rank', String(machine.rank), '--main_process_ip', machine.addr]
    : ['--num_processes', String(n), '--num_machines', '1'];
  return [
    '-m', 'accelerate.commands.launch',
    '--multi_gpu', ...machines,
    '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', String(machine ? machine.port : port),
    '-m', 'valuedrift_trainer',
  ];
}

/**
 * When a gpu worker polls its task queues (a Temporal worker tuner's activity slot supplier per
 * queue). A gpu node polls the plain gpu queue (generation, base-model hashing, 0-GPU stages: one GPU
 * each) and one queue per GPU count it can serve, `gpuTaskQueue(n)` for n = 1..its GPUs (stages that
 * train on n GPUs): a job that needs more GPUs than a node has is never polled by it, and stays queued
 * (its retries too) until a node that fits takes it.
 *
 * A queue's slot is reserved only while the GPUs of the jobs this node has started leave room for the
 * queue's job size, and each queue holds at most one reservation that is still polling: so a node
 * does not take work it has no GPUs for (it stays with the other nodes), small jobs go on taking free
 * GPUs beside a big one (a 1-GPU evaluation runs beside training on the rest), and an idle poll for a
 * big job never blocks the small ones (no GPUs are held by a poll). Two polls answered at the same time
 * can take the node past its GPUs by at most one job per queue; that job waits, heartbeating, for its
 * lease (GpuPool is first come first served, so no job starves).
 */
export class GpuSlots {
  /** GPUs of the jobs started on this node (slots in use); a node without GPUs counts one per job. */
  private promised = 0;
  private nextId = 1;
  private readonly permits = new Map<number, { cost: number; used: boolean }>();
  private readonly outstanding = new Map<number, number>();
  private readonly wake = new Set<() => void>();
  /** GPUs a node's jobs share; one job at a time on a node without GPUs (the trainer then runs on CPU). */
  readonly capacity: number;

  constructor(readonly pool: GpuPool) {
    this.capacity = Math.max(1, pool.size);
  }

  /** GPUs not taken by a started job. */
  get room(): number {
    return this.capacity - this.promised;
  }

  /**
   * The slot supplier of one queue whose jobs need `cost` GPUs (clamped to the node's, for a
   * 0-GPU job or a node without GPUs: one).
   */
  supplier(cost: number): CustomSlotSupplier<ActivitySlotInfo> {
    const c = Math.min(Math.max(1, cost), this.capacity);
    const queue = this.nextId++;
    this.outstanding.set(queue, 0);
    const free = () => (this.outstanding.get(queue) ?? 0) === 0 && this.room >= c;
    const issue = (): SlotPermit => {
      const id = this.nextId++;
      this.permits.set(id, { cost: c, used: false });
      this.outstanding.set(queue, (this.outstanding.get(queue) ?? 0) + 1);
      return { id } as SlotPermit;
    };
    const entry = (permit: SlotPermit) => this.permits.get((permit as { id?: number }).id ?? -1);
    return {
      type: 'custom',
      reserveSlot: (_ctx, signal) =>
        new Promise<SlotPermit>((resolve, reject) => {
          const check = () => {
            if (!free()) return false;
            this.wake.delete(check);
            signal.removeEventListener('abort', onAbort);
            resolve(issue());
            return true;
          };
          const onAbort = () => {
            this.wake.delete(check);
            const err = new Error('slot reservation aborted');
            err.name = 'AbortError';
            reject(err);
          };
          if (signal.aborted) return onAbort();
          if (check()) return;
          this.wake.add(check);
          signal.addEventListener('abort', onAbort, { once: true });
        }),
      tryReserveSlot: () => (free() ? issue() : null),
      markSlotUsed: ({ permit }) => {
        const p = entry(permit);
        if (!p || p.used) return;
        p.used = true;
        this.promised += p.cost;
        this.outstanding.set(queue, Math.max(0, (this.outstanding.get(queue) ?? 0) - 1));
        this.notify();
      },
      releaseSlot: ({ permit }) => {
        const id = (permit as { id?: number }).id ?? -1;
        const p = this.permits.get(id);
        if (!p) return;
        this.permits.delete(id);
        if (p.used) this.promised -= p.cost;
        else this.outstanding.set(queue, Math.max(0, (this.outstanding.get(queue) ?? 0) - 1));
        this.notify();
      },
    };
  }

  private notify(): void {
    for (const check of [...this.wake]) check();
  }
}
