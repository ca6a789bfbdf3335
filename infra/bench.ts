/**
 * `npm run bench`: the speed goals, measured on this machine (not asserted by tests).
 *   - judge throughput against a 300 ms endpoint at concurrency 32 (goal ≥ 90 % of 32/0.3 s);
 *   - training through the activity vs the trainer run directly (goal ≥ 0.97×);
 *   - batched vs one-prompt-at-a-time generation on CPU.
 * Each bench prints one JSON line; they are collected into .data/bench/results.json. BENCHMARKS.md
 * records the figures with date, machine and method.
 *
 *   npm run bench                      # all
 *   npm run bench -- judge training    # some (judge | training | generation)
 * An unknown bench name or option is refused before anything starts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defineCommand, parseScriptArgs, UsageError } from '../worker/cliArgs';
import { DATA_DIR, REPO_ROOT, TSX_BIN } from './paths';
import { runCommand } from './proc';
import { ensurePythonEnv } from './python';
import { stackUp } from './stack';

const BENCHES = {
  judge: 'bench/judge.ts',
  training: 'bench/training.ts',
  generation: 'bench/generation.ts',
} as const;
type BenchName = keyof typeof BENCHES;
const isBench = (name: string): name is BenchName => Object.hasOwn(BENCHES, name);

const CLI = defineCommand({
  name: 'npm run bench',
  helpCommand: 'npm run bench -- --help',
  summary: 'Runs the speed benches and collects their JSON lines into .data/bench/results.json (BENCHMARKS.md has the method and figures).',
  args: [{ name: 'bench', optional: true, variadic: true, description: `which benches (${Object.keys(BENCHES).join(', ')}); default: all` }],
  options: {},
});

async function main(): Promise<void> {
  const names = parseScriptArgs(CLI, ({ args }) => {
    const unknown = args.bench.find((n) => !isBench(n));
    if (unknown !== undefined) throw new UsageError(`${CLI.name}: unknown bench "${unknown}" (benches: ${Object.keys(BENCHES).join(', ')})`);
    return args.bench.length > 0 ? [...new Set(args.bench as BenchName[])] : (Object.keys(BENCHES) as BenchName[]);
  });
  const log = (l: string) => console.error(`[bench] ${l}`);
  await ensurePythonEnv({ log });
  // Only the training bench uses the store (its activity uploads checkpoints to the local S3 server).
  const stackEnv = names.includes('training') ? (await stackUp({ workers: false, judge: false, log })).env : {};
  // Offline: the benches' models are local files, and a hub lookup would be timed as work.
  const env = { ...process.env, ...stackEnv, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', HF_HUB_OFFLINE: '1' };
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const results: unknown[] = [];
  for (const name of names) {
    log(`running ${name} (${BENCHES[name]}) on ${machine}`);
    const r = await runCommand(TSX_BIN, [BENCHES[name]], {
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
