/**
 * `npm run bench`: the speed goals, measured on this machine (not asserted by tests).
 *   - judge throughput against a 300 ms endpoint at concurrency 32 (goal ≥ 90 % of 32/0.3 s);
 *   - training through the activity vs the trainer run directly (goal ≥ 0.97×);
 *   - batched vs one-prompt-at-a-time generation on CPU;
 *   - scale (only when named): one base model's paper tree as a lineage with scripted training,
 *     generation and judging on the local stack: history sizes, scheduling latency, worker RSS;
 *   - datasets (only when named): peak RSS of worker and trainer preparing 1,000,000 vs 10,000
 *     preference rows (goal ≤ 1.5×), rows per second;
 *   - overlap <lineage> (only when named): a finished lineage's stages against the overlap goal;
 *   - budget (only when named): grants per second of one shared judge budget (per-Update vs blocks).
 * Each bench prints one JSON line; they are collected into .data/bench/results.json. BENCHMARKS.md
 * records the figures with date, machine and method.
 *
 *   npm run bench                      # all
 *   npm run bench -- judge training    # some (judge | training | generation)
 *   npm run bench -- scale [--scale F] # the paper tree simulated (F: fraction of each stage's steps)
 *   npm run bench -- overlap <lineage> # the overlap goal on a finished lineage of the running stack
 * An unknown bench name or option is refused before anything starts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defineCommand, parseScriptArgs, UsageError } from '../worker/cliArgs';
import { DATA, DATA_DIR, REPO_ROOT, TSX_BIN } from './paths';
import { runCommand } from './proc';
import { ensurePythonEnv } from './python';
import { stackUp } from './stack';
import { loadStackEnv } from './stackEnv';

const BENCHES = {
  judge: 'bench/judge.ts',
  training: 'bench/training.ts',
  generation: 'bench/generation.ts',
  scale: 'bench/scale.ts',
  overlap: 'bench/overlap.ts',
  datasets: 'bench/datasets.ts',
  budget: 'bench/judgeBudget.ts',
} as const;
type BenchName = keyof typeof BENCHES;
const isBench = (name: string): name is BenchName => Object.hasOwn(BENCHES, name);
/** What `npm run bench` runs with no names: the scale bench takes minutes, overlap needs a lineage. */
const DEFAULT_BENCHES: readonly BenchName[] = ['judge', 'training', 'generation'];

const CLI = defineCommand({
  name: 'npm run bench',
  helpCommand: 'npm run bench -- --help',
  summary: 'Runs the speed benches and collects their JSON lines into .data/bench/results.json (BENCHMARKS.md has the method and figures).',
  args: [
    {
      name: 'bench',
      optional: true,
      variadic: true,
      description: `which benches (${Object.keys(BENCHES).join(', ')}; overlap takes the lineage name after it); default: ${DEFAULT_BENCHES.join(', ')}`,
    },
  ],
  options: {
    scale: { type: 'string', value: 'F', description: "scale bench: fraction of each stage's planned steps, in (0, 1] (default 1: the whole tree)" },
  },
});

async function main(): Promise<void> {
  const { names, benchArgs } = parseScriptArgs(CLI, ({ args, options }) => {
    const picked: BenchName[] = [];
    let lineage: string | undefined;
    for (const [i, n] of args.bench.entries()) {
      if (isBench(n)) {
        if (!picked.includes(n)) picked.push(n);
      } else if (args.bench[i - 1] === 'overlap' && lineage === undefined) lineage = n;
      else throw new UsageError(`${CLI.name}: unknown bench "${n}" (benches: ${Object.keys(BENCHES).join(', ')})`);
    }
    if (picked.includes('overlap') && lineage === undefined) throw new UsageError(`${CLI.name}: overlap needs a lineage name (npm run bench -- overlap <lineage>)`);
    if (options.scale !== undefined) {
      const f = Number(options.scale);
      if (!(f > 0 && f <= 1)) throw new UsageError(`${CLI.name}: --scale must be a number in (0, 1] (got "${options.scale}")`);
      if (!picked.includes('scale')) throw new UsageError(`${CLI.name}: --scale is for the scale bench (npm run bench -- scale --scale F)`);
    }
    const argsOf: Record<BenchName, string[]> = {
      judge: [],
      training: [],
      generation: [],
      scale: options.scale === undefined ? [] : ['--scale', options.scale],
      overlap: lineage === undefined ? [] : [lineage],
      datasets: [],
      budget: [],
    };
    return { names: picked.length > 0 ? picked : [...DEFAULT_BENCHES], benchArgs: argsOf };
  });
  const log = (l: string) => console.error(`[bench] ${l}`);
  await ensurePythonEnv({ log });
  // The training bench's activity uploads checkpoints to the local S3 server; the scale bench runs a
  // lineage on the stack's Temporal and S3 servers. Overlap reads a lineage of the running stack.
  const childEnv = { ...process.env };
  let stackEnv: Record<string, string> = {};
  if (names.includes('training') || names.includes('scale') || names.includes('datasets') || names.includes('budget')) stackEnv = (await stackUp({ workers: false, judge: false, log })).env;
  // The running stack's addresses, unless this shell names another Temporal (a cluster).
  else if (fs.existsSync(DATA.stackEnvFile)) stackEnv = Object.fromEntries(Object.entries(loadStackEnv()).filter(([k]) => childEnv[k] === undefined));
  // Offline: the benches' models are local files, and a hub lookup would be timed as work.
  const env = { ...childEnv, ...stackEnv, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', HF_HUB_OFFLINE: '1' };
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const results: unknown[] = [];
  for (const name of names) {
    log(`running ${name} (${BENCHES[name]}) on ${machine}`);
    const r = await runCommand(TSX_BIN, [BENCHES[name], ...benchArgs[name]], {
      cwd: REPO_ROOT,
      env,
      onLine: (line, stream) => (stream === 'stdout' ? console.log(line) : console.error(line)),
    });
    if (r.code !== 0) throw new Error(`bench ${name} failed (exit ${r.code}): ${r.stderr.slice(-1500)}`);
    const line = r.stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
    if (line) results.push({ date: new Date().toISOString(), machine, ...(JSON.parse(line) as object) });
  }
  fs.mkdirSync(path.join(DATA_DIR, 'bench'), { recursive: true });
  const file = path.join(DATA_DIR, 'bench', 'results.json');
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  log(`results: ${file}`);
}

main().catch((err: unknown) => {
  console.error(`[bench] ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
