/**
 * Measure a judge against the hand-labelled stance set and print the Markdown report.
 *
 *   npx tsx infra/judge/check.ts                         # starts the local SmolLM2 judge (llama.cpp)
 *   npx tsx infra/judge/check.ts --local minilm          # starts the local minilm-stance judge instead
 *   npx tsx infra/judge/check.ts --base-url http://127.0.0.1:8765/v1 --model smollm2-judge
 *   VALUEDRIFT_JUDGE_API_KEY=… npx tsx infra/judge/check.ts --base-url https://api.openai.com/v1 --model gpt-4o
 *
 * --json also prints the full result as one JSON line (for README figures).
 */
import { parseArgs } from 'node:util';
import { formatJudgeCheck, runJudgeCheck } from '../../activities/judge/check';
import { createJudgeClient } from '../../activities/judge/client';
import { settings } from '../settings';
import { parseLocalJudgeKind } from './kinds';
import { startLocalJudge, type LocalJudge } from './serve';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'base-url': { type: 'string' },
      model: { type: 'string' },
      // Which local judge to start when no --base-url is given. smollm2 by default: the
      // figures in infra/judge/README.md's first table were measured this way.
      local: { type: 'string', default: 'smollm2' },
      file: { type: 'string', default: 'data/stance/labelled.jsonl' },
      concurrency: { type: 'string', default: '2' },
      json: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const concurrency = Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error(`--concurrency must be an integer ≥ 1, got ${values.concurrency}`);
  let local: LocalJudge | undefined;
  try {
    let baseURL = values['base-url'];
    let model = values.model;
    if (baseURL === undefined) {
      local = await startLocalJudge({ kind: parseLocalJudgeKind(values.local, '--local') });
      baseURL = local.baseURL;
      model ??= local.model;
    }
    if (model === undefined) throw new Error('--model is required with --base-url');
    // The key is a secret: from the environment of this process only, never a flag (shell history).
    const client = createJudgeClient({ baseURL, apiKey: settings.judgeApiKey, timeoutMs: 120_000 });
    const result = await runJudgeCheck({ client, model, file: values.file, concurrency });
    process.stdout.write(`${formatJudgeCheck(result)}\n\n_${result.calls} judge calls in ${result.seconds.toFixed(1)} s (${(result.n / result.seconds).toFixed(2)} rows/s)._\n`);
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await local?.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
