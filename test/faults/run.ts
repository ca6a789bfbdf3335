/**
 * The fault matrix: `npx tsx test/faults/run.ts [--trials 3] [--lanes 3] [--faults a,b] [--out file]`
 * (`npm run test:faults`). Needs the local stack's judge (`npx tsx infra/dev.ts up --no-workers`);
 * everything else (Temporal servers, S3 servers, workers) each lane starts and stops itself.
 * Writes the results table as JSON (default .data/faults/results.json), prints it, and exits 1 if
 * any trial failed.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadStackEnv } from '../support/workflowEnv';
import { Lane } from './lane';
import { FAULTS, runTrial, type TrialResult } from './trial';

const ROOT = path.resolve(__dirname, '..', '..');

export interface FaultRow {
  fault: string;
  what: string;
  trials: number;
  passed: number;
  outcome: string;
  maxLostSteps: number;
  maxJudgeRepeated: number;
  detectionS: { min: number; max: number } | null;
  wallS: { min: number; max: number };
}

export interface MatrixOptions {
  trials: number;
  lanes: number;
  faults: string[];
  log?: (line: string) => void;
  /** Called after every trial with all results so far (the runner rewrites its JSON file). */
  onTrial?: (results: TrialResult[]) => Promise<void>;
}

export function summarise(results: TrialResult[]): FaultRow[] {
  const rows: FaultRow[] = [];
  for (const f of FAULTS) {
    const rs = results.filter((r) => r.fault === f.id);
    if (rs.length === 0) continue;
    const det = rs.map((r) => r.detectionS).filter((d): d is number => d !== null);
    const passed = rs.filter((r) => r.ok).length;
    rows.push({
      fault: f.id,
      what: f.what,
      trials: rs.length,
      passed,
      outcome: passed === rs.length ? 'completed, all checks' : `${rs.length - passed} failed`,
      maxLostSteps: Math.max(...rs.map((r) => r.lostSteps)),
      maxJudgeRepeated: Math.max(...rs.map((r) => r.judgeRepeated)),
      detectionS: det.length ? { min: Math.min(...det), max: Math.max(...det) } : null,
      wallS: { min: Math.min(...rs.map((r) => r.wallS)), max: Math.max(...rs.map((r) => r.wallS)) },
    });
  }
  return rows;
}

export function formatTable(rows: FaultRow[]): string {
  const head = '| fault | trials | passed | lost steps (max) | judge calls repeated (max) | detection s (min–max) | trial wall s (min–max) |';
  const sep = '|---|---|---|---|---|---|---|';
  const lines = rows.map(
    (r) => `| ${r.fault} | ${r.trials} | ${r.passed} | ${r.maxLostSteps} | ${r.maxJudgeRepeated} | ${r.detectionS ? `${r.detectionS.min}–${r.detectionS.max}` : '–'} | ${r.wallS.min}–${r.wallS.max} |`,
  );
  return [head, sep, ...lines].join('\n');
}

/** Runs `trials` trials of each fault over `lanes` lanes (trials of one lane one after the other). */
export async function runMatrix(opts: MatrixOptions): Promise<TrialResult[]> {
  const log = opts.log ?? ((l: string) => console.error(l));
  loadStackEnv();
  const judge = process.env.VALUEDRIFT_JUDGE_BASE_URL;
  if (!judge) throw new Error('no local judge: start the stack with `npx tsx infra/dev.ts up --no-workers`');
  const faults = FAULTS.filter((f) => opts.faults.length === 0 || opts.faults.includes(f.id));
  const unknown = opts.faults.filter((id) => !FAULTS.some((f) => f.id === id));
  if (unknown.length) throw new Error(`unknown faults: ${unknown.join(', ')} (known: ${FAULTS.map((f) => f.id).join(', ')})`);
  // Trial i of every fault before trial i+1 of any, so a short run still covers every fault.
  const queue = Array.from({ length: opts.trials }, (_, i) => faults.map((f) => ({ fault: f, index: i + 1 }))).flat();
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-faults-'));
  const results: TrialResult[] = [];
  const lanes = Array.from({ length: Math.max(1, Math.min(opts.lanes, queue.length)) }, (_, i) => new Lane(String(i + 1), path.join(base, `lane-${i + 1}`), new URL(judge).origin));
  // Interrupted: stop every lane's servers and workers (they run in process groups of their own).
  const onSignal = () => void Promise.all(lanes.map((l) => l.stop().catch(() => undefined))).finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await Promise.all(
      lanes.map(async (lane) => {
        await lane.start();
        log(`[lane ${lane.id}] up: temporal :${lane.temporalPort}, s3 :${lane.s3Port}, dir ${lane.dir}`);
        for (let job = queue.shift(); job; job = queue.shift()) {
          log(`[lane ${lane.id}] ${job.fault.id} #${job.index} …`);
          const r = await runTrial(lane, job.fault, job.index);
          results.push(r);
          await opts.onTrial?.(results);
          log(`[lane ${lane.id}] ${job.fault.id} #${job.index}: ${r.ok ? 'ok' : 'FAILED'} in ${r.wallS} s (detection ${r.detectionS ?? '–'} s, lost ${r.lostSteps} steps, judge ${r.judgeCalls} paid / ${r.judgeRepeated} repeated, train attempts ${r.trainAttempts}, resumed from ${r.resumedFrom}; ${r.detail})${r.ok ? '' : `\n  ${r.failures.join('\n  ')}`}`);
        }
      }),
    );
  } finally {
    await Promise.all(lanes.map((l) => l.stop().catch(() => undefined)));
    if (results.every((r) => r.ok)) await fs.rm(base, { recursive: true, force: true });
    else log(`lane folders (logs, store) kept under ${base}`);
  }
  return results;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const started = new Date();
  const opts: MatrixOptions = {
    trials: Number(arg('trials') ?? 3),
    lanes: Number(arg('lanes') ?? 3),
    faults: (arg('faults') ?? '').split(',').filter(Boolean),
  };
  const out = path.resolve(arg('out') ?? path.join(ROOT, '.data', 'faults', 'results.json'));
  const loads: number[] = [];
  const sampler = setInterval(() => loads.push(os.loadavg()[0] ?? 0), 30_000);
  const write = async (results: TrialResult[], done: boolean) => {
    const record = {
      started: started.toISOString(),
      [done ? 'finished' : 'updated']: new Date().toISOString(),
      machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.platform()} ${os.release()}, Node ${process.version}`,
      load1m: loads.length ? { min: Math.min(...loads), mean: loads.reduce((a, b) => a + b, 0) / loads.length, max: Math.max(...loads) } : null,
      command: `npx tsx test/faults/run.ts ${process.argv.slice(2).join(' ')}`.trim(),
      options: { trials: opts.trials, lanes: opts.lanes, faults: opts.faults },
      rows: summarise(results),
      trials: results,
    };
    await fs.mkdir(path.dirname(out), { recursive: true });
    await fs.writeFile(out, JSON.stringify(record, null, 2) + '\n');
  };
  opts.onTrial = (r) => write(r, false);
  const results = await runMatrix(opts).finally(() => clearInterval(sampler));
  await write(results, true);
  const rows = summarise(results);
  console.log(formatTable(rows));
  console.log(`\n${results.filter((r) => r.ok).length}/${results.length} trials passed; results in ${out}`);
  process.exitCode = results.every((r) => r.ok) ? 0 : 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
