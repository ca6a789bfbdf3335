/**
 * The orchestration at the paper's size, simulated (bench/scaleHarness.ts): one base model's paper
 * tree as a lineage on the local stack's Temporal server and S3 server, with scripted training,
 * generation and judging. Prints progress on stderr and one JSON line on stdout.
 *
 *   npx tsx bench/scale.ts [--spec specs/paper/paper-llama3-3b.json] [--scale 1] [--stages N]
 *     [--prompts-per-category N] [--step-ms 10] [--generate-ms 200] [--judge-ms 200] [--gpu-slots 64]
 *     [--timeout-min 40]
 * `npm run bench -- scale [--scale F]` starts the stack and runs this.
 */
import * as path from 'node:path';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import { workerEnv } from '../activities/env';
import { nativeConnection, temporalClient } from '../worker/connection';
import { defineCommand, integerOption, parseScriptArgs, UsageError } from '../worker/cliArgs';
import { loadStackEnv } from '../test/support/workflowEnv';
import { HISTORY_WARN_BYTES, HISTORY_WARN_EVENTS, LATENCY_GOAL_MS, runScale } from './scaleHarness';

const CLI = defineCommand({
  name: 'bench/scale.ts',
  summary: "One base model's paper tree as a lineage with scripted training, generation and judging: history sizes, scheduling latency, worker RSS.",
  args: [],
  options: {
    spec: { type: 'string', value: 'FILE', description: 'the spec whose tree runs (default specs/paper/paper-llama3-3b.json)' },
    scale: { type: 'string', value: 'F', description: "fraction of each stage's planned steps, cadence kept (0 < F ≤ 1; default 1: the whole tree)" },
    stages: { type: 'string', value: 'N', description: 'only the first N stages of the spec (default: all)' },
    'prompts-per-category': { type: 'string', value: 'N', description: 'evaluation prompts per category (default: the whole eval set)' },
    'step-ms': { type: 'string', value: 'MS', description: 'scripted time of one optimizer step (default 10)' },
    'generate-ms': { type: 'string', value: 'MS', description: "scripted time of one checkpoint's generation (default 200)" },
    'judge-ms': { type: 'string', value: 'MS', description: "scripted time of one checkpoint's judging (default 200)" },
    'gpu-slots': { type: 'string', value: 'N', description: 'concurrent training/generation activities, the simulated GPUs (default 64)' },
    'timeout-min': { type: 'string', value: 'MIN', description: 'give up after this many minutes (default 40)' },
  },
});

const opts = parseScriptArgs(CLI, ({ options }) => {
  const scale = options.scale === undefined ? 1 : Number(options.scale);
  if (!(scale > 0 && scale <= 1)) throw new UsageError(`${CLI.name}: --scale must be a number in (0, 1] (got "${options.scale}")`);
  return {
    specFile: path.resolve(options.spec ?? 'specs/paper/paper-llama3-3b.json'),
    scale,
    maxStages: options.stages === undefined ? undefined : integerOption(CLI, 'stages', options.stages, 1),
    promptsPerCategory: options['prompts-per-category'] === undefined ? undefined : integerOption(CLI, 'prompts-per-category', options['prompts-per-category'], 1),
    stepMs: integerOption(CLI, 'step-ms', options['step-ms'], 10, 0),
    generateMs: integerOption(CLI, 'generate-ms', options['generate-ms'], 200, 0),
    judgeMs: integerOption(CLI, 'judge-ms', options['judge-ms'], 200, 0),
    gpuSlots: integerOption(CLI, 'gpu-slots', options['gpu-slots'], 64),
    timeoutMs: integerOption(CLI, 'timeout-min', options['timeout-min'], 40) * 60_000,
  };
});

async function main(): Promise<void> {
  loadStackEnv();
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const env = workerEnv();
  const connection = await nativeConnection(env);
  const client = await temporalClient(env);
  const log = (l: string) => console.error(`[scale] ${l}`);
  try {
    const r = await runScale({ client, connection, namespace: env.TEMPORAL_NAMESPACE }, { ...opts, log });
    const top = r.history.stages[0];
    log(`wall ${r.wallSeconds.toFixed(1)} s for ${r.tree.evaluations} evaluations over ${r.tree.stages} stages (${r.tree.checkpoints} checkpoints)`);
    log(`history: lineage ${r.history.lineage.events} events / ${r.history.lineage.bytes} B; largest stage ${top?.workflowId} ${top?.events} events / ${top?.bytes} B; evaluations ≤ ${r.history.evaluations.maxEvents} events / ${r.history.evaluations.maxBytes} B (warn: ${HISTORY_WARN_EVENTS} events, ${HISTORY_WARN_BYTES} B); over: ${r.history.overWarning.length}`);
    log(`scheduling latency (ms, goal ≤ ${LATENCY_GOAL_MS}): p50 ${r.latencyMs.p50} p95 ${r.latencyMs.p95} max ${r.latencyMs.max} over ${r.latencyMs.n} checkpoints (${r.latencyMs.missing} unmatched)`);
    log(`rss peak ${r.rss.peakMiB} MiB (start ${r.rss.startMiB}); load ${r.loadAverage.before.join(' ')} → ${r.loadAverage.after.join(' ')}`);
    console.log(JSON.stringify(r));
  } finally {
    await client.connection.close();
    await connection.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
