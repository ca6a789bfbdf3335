/**
 * `npm run bench`: the speed goals, measured on this machine (not asserted by tests).
 *   - judge throughput against a 300 ms endpoint at concurrency 32 (goal ≥ 90 % of 32/0.3 s);
 *   - training through the activity vs the trainer run directly (goal ≥ 0.97×);
 *   - batched vs one-prompt-at-a-time generation on CPU.
 * Each bench prints one JSON line; they are collected into .data/bench/results.json. BENCHMARKS.md
 * records the figures with date, machine and method.
 *
 *   npm run bench                 # all
 *   npm run bench -- judge        # one (judge | training | generation)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DATA_DIR, REPO_ROOT } from './paths';
import { runCommand } from './proc';
import { ensurePythonEnv } from './python';
import { loadStackEnv, stackUp } from './stack';

const BENCHES = {
  judge: 'bench/judge.ts',
  training: 'bench/training.ts',
  generation: 'bench/generation.ts',
} as const;
type BenchName = keyof typeof BENCHES;

async function main(): Promise<void> {
  const wanted = (process.argv.slice(2).filter((a) => a in BENCHES) as BenchName[]);
  const names = wanted.length ? wanted : (Object.keys(BENCHES) as BenchName[]);
  const log = (l: string) => console.error(`[bench] ${l}`);
  await ensurePythonEnv({ log });
  if (names.includes('training')) await stackUp({ workers: false, judge: false, log });
  const env = { ...process.env, ...loadStackEnv(), AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', HF_HUB_OFFLINE: '1' };
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const results: unknown[] = [];
  for (const name of names) {
    log(`running ${name} (${BENCHES[name]}) on ${machine}`);
    const r = await runCommand(path.join(REPO_ROOT, 'node_modules', '.bin', 'tsx'), [BENCHES[name]], {
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
