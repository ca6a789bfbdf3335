/**
 * Dataset preparation at two sizes (goal: the peak RSS of the worker and of the trainer for a
 * 1,000,000-row preference file within 1.5× of those for a 10,000-row file), and rows per second.
 * The file is UltraFeedback-shaped raw JSONL (prompt string, chosen/rejected [user, assistant]
 * message lists, ratings, models) prepared with `recipe: ultrafeedback` through the dataset activity:
 * the trainer converts it, the worker checks every row, stores it in the local S3 server and writes
 * the manifest. Each size runs in a fresh process; the worker's peak is its own max RSS, the
 * trainer's the highest VmHWM of its processes, sampled every 100 ms while it runs.
 *
 *   npx tsx bench/datasets.ts [--sizes 10000,1000000]
 *
 * Needs the local stack (`npm run dev:up`); `npm run bench -- datasets` starts it.
 */
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { execFileSync } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepareDatasets } from '../activities/datasets';
import { resetWorkerEnv } from '../activities/env';
import { parseUri, s3 } from '../activities/store';
import { loadStackEnv } from '../test/support/workflowEnv';

const REPO = path.resolve(__dirname, '..');

async function writeFile(file: string, rows: number): Promise<void> {
  const out = createWriteStream(file);
  for (let i = 0; i < rows; i++) {
    const prompt = `How should a careful person think about question number ${i} on public policy?`;
    const line = JSON.stringify({
      source: 'evol_instruct',
      prompt,
      chosen: [{ content: prompt, role: 'user' }, { content: `A balanced answer ${i} that weighs both sides and explains its reasoning.`, role: 'assistant' }],
      'chosen-rating': 4.5,
      'chosen-model': 'gpt-4',
      rejected: [{ content: prompt, role: 'user' }, { content: `A curt answer ${i}.`, role: 'assistant' }],
      'rejected-rating': 2,
      'rejected-model': 'llama-2-7b-chat',
    });
    if (!out.write(line + '\n')) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((r) => out.end(() => r()));
}

/** The parent pid of a process (0 when it is gone). */
function ppid(pid: number): number {
  try {
    // The command name may hold spaces and parentheses: the fields after its closing one are plain.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return 0;
  }
}

/** Whether `pid` descends from this process (other trainers on the machine are not ours). */
function ours(pid: number): boolean {
  for (let p = pid, i = 0; p > 1 && i < 8; i++) {
    p = ppid(p);
    if (p === process.pid) return true;
  }
  return false;
}

/** Peak RSS (VmHWM, KiB) of every live trainer process started by this one. */
function trainerPeaks(seen: Map<number, number>): void {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (!readFileSync(`/proc/${e}/cmdline`, 'utf8').includes('valuedrift_trainer') || !ours(Number(e))) continue;
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${e}/status`, 'utf8'));
      if (m) seen.set(Number(e), Math.max(seen.get(Number(e)) ?? 0, Number(m[1])));
    } catch {
      // gone between listing and reading
    }
  }
}

/** Child mode: prepare one file, print {rows, seconds, workerPeakMiB, trainerPeakMiB}. */
async function one(name: string, rows: number): Promise<void> {
  // VALUEDRIFT_DATA_ROOT and VALUEDRIFT_WORK_DIR come from the parent (the bench's own folder).
  loadStackEnv();
  resetWorkerEnv();
  const seen = new Map<number, number>();
  // Where the worker's memory goes: V8's heap and the buffers outside it (upload parts, stream chunks).
  const mem = { heapTotal: 0, external: 0 };
  const timer = setInterval(() => {
    trainerPeaks(seen);
    const m = process.memoryUsage();
    mem.heapTotal = Math.max(mem.heapTotal, m.heapTotal);
    mem.external = Math.max(mem.external, m.external);
  }, 100);
  const t0 = performance.now();
  const startedAt = Date.now();
  const { datasets } = await prepareDatasets({
    lineage: 'bench',
    seed: Date.now() % 1_000_000_007, // a key of its own: never a cache hit
    datasets: { prefs: { uri: `file:${name}`, format: 'preference', split: 'train', recipe: 'ultrafeedback' } },
  });
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(timer);
  const got = datasets.prefs!.rows;
  if (got !== rows) throw new Error(`prepared ${got} rows of ${rows}`);
  const trainerKiB = Math.max(0, ...seen.values());
  // Which path the worker took at the end: the split uploaded now, or already stored (hashed as it streams).
  const { bucket: b, key } = parseUri(datasets.prefs!.ref.uri);
  const stored = (await s3().send(new HeadObjectCommand({ Bucket: b, Key: key }))).LastModified?.getTime() ?? 0;
  const splitUploaded = stored >= startedAt - 1_000;
  console.log(JSON.stringify({ rows, seconds, rowsPerSecond: rows / seconds, workerPeakMiB: process.resourceUsage().maxRSS / 1024, workerHeapPeakMiB: mem.heapTotal / 2 ** 20, workerExternalPeakMiB: mem.external / 2 ** 20, trainerPeakMiB: trainerKiB / 1024, splitUploaded }));
}

/** One size's figures, as the child prints them (and the file's size). */
interface Result {
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  workerPeakMiB: number;
  workerHeapPeakMiB: number;
  workerExternalPeakMiB: number;
  trainerPeakMiB: number;
  splitUploaded: boolean;
  fileMiB: number;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--one') return one(args[1]!, Number(args[2]));
  const i = args.indexOf('--sizes');
  const sizes = (i >= 0 ? args[i + 1]! : '10000,1000000').split(',').map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error('--sizes: positive integers, comma-separated');
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-bench-datasets-'));
  try {
    const results: Result[] = [];
    for (const n of sizes) {
      const name = `prefs-${n}.jsonl`;
      await writeFile(path.join(root, name), n);
      const bytes = (await fs.stat(path.join(root, name))).size;
      console.error(`[bench] preparing ${n} rows (${(bytes / 2 ** 20).toFixed(0)} MiB)`);
      const tsx = path.join(REPO, 'node_modules', '.bin', 'tsx');
      const out = execFileSync(tsx, [__filename, '--one', name, String(n)], {
        cwd: REPO,
        env: { ...process.env, VALUEDRIFT_DATA_ROOT: root, VALUEDRIFT_WORK_DIR: path.join(root, `work-${n}`) }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
      const r = JSON.parse(out.trim().split('\n').reverse().find((l) => l.startsWith('{'))!) as Omit<Result, 'fileMiB'>;
      results.push({ ...r, fileMiB: bytes / 2 ** 20 });
      console.error(`[bench] ${n} rows: ${r.seconds.toFixed(1)} s, ${r.rowsPerSecond.toFixed(0)} rows/s, worker ${r.workerPeakMiB.toFixed(0)} MiB (heap ≤ ${r.workerHeapPeakMiB.toFixed(0)}, buffers ≤ ${r.workerExternalPeakMiB.toFixed(0)}), trainer ${r.trainerPeakMiB.toFixed(0)} MiB; split ${r.splitUploaded ? 'uploaded' : 'already stored'}`);
      await fs.rm(path.join(root, name), { force: true });
    }
    const [small, large] = [results[0]!, results[results.length - 1]!];
    const worker = large.workerPeakMiB / small.workerPeakMiB;
    const trainer = large.trainerPeakMiB / small.trainerPeakMiB;
    console.log(JSON.stringify({ bench: 'dataset-preparation-memory', results, workerPeakRatio: worker, trainerPeakRatio: trainer, goal: 1.5, met: worker <= 1.5 && trainer <= 1.5 }));
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
