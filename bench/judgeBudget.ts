/**
 * How many grants per second one judge budget (workflows/judgeBudget.ts) gives: `--clients` concurrent
 * callers, each asking `--asks` times in a row, against limits far above what they ask, on the local
 * stack's Temporal server with one workflow worker in this process. Each Update of the one workflow
 * grants `--block` requests, which the caller's process hands out itself: with `--block 1` this is
 * the ceiling of one Update per request.
 *
 *   npx tsx bench/judgeBudget.ts [--clients 32] [--asks 20] [--rpm 10000] [--block N]
 * `npm run bench -- budget` starts the stack and runs this.
 */
import * as path from 'node:path';
import * as os from 'node:os';
import { DefaultLogger, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { createJudgeBudget, defaultGrantBlock } from '../activities/judge/budget';
import { workerEnv } from '../activities/env';
import { nativeConnection, temporalClient } from '../worker/connection';
import { defineCommand, integerOption, parseScriptArgs } from '../worker/cliArgs';
import { loadStackEnv } from '../test/support/workflowEnv';

const CLI = defineCommand({
  name: 'bench/judgeBudget.ts',
  summary: 'Grants per second of one shared judge budget (one workflow, one Update per grant).',
  args: [],
  options: {
    clients: { type: 'string', value: 'N', description: 'concurrent callers (default 32)' },
    asks: { type: 'string', value: 'N', description: 'grants each caller asks for in a row (default 20)' },
    rpm: { type: 'string', value: 'N', description: 'the budget\'s request limit per minute (default 10000, a large provider tier)' },
    block: { type: 'string', value: 'N', description: 'requests granted per Update (default: defaultGrantBlock(rpm); 1 = one Update per request)' },
  },
});

async function main(): Promise<void> {
  const { clients, asks, rpm, block } = parseScriptArgs(CLI, ({ options }) => {
    const rpm = integerOption(CLI, 'rpm', options.rpm, 10_000);
    return {
      clients: integerOption(CLI, 'clients', options.clients, 32),
      asks: integerOption(CLI, 'asks', options.asks, 20),
      rpm,
      block: integerOption(CLI, 'block', options.block, defaultGrantBlock(rpm)),
    };
  });
  loadStackEnv();
  const env = workerEnv();
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const connection = await nativeConnection(env);
  const client = await temporalClient(env);
  const taskQueue = `bench-budget-${process.pid}`;
  const workflowBundle = await bundleWorkflowCode({ workflowsPath: path.join(__dirname, '..', 'workflows', 'index.ts'), logger: { info() {}, warn() {}, error() {}, debug() {}, trace() {}, log() {} } });
  const worker = await Worker.create({ connection, namespace: env.TEMPORAL_NAMESPACE, taskQueue, workflowBundle });
  const running = worker.run();
  try {
    const budget = createJudgeBudget(client, `http://bench.invalid/${process.pid}/${Date.now()}`, 'bench-model', {
      rpm,
      tpm: undefined,
      windowMs: 60_000,
      taskQueue,
      grantBlock: block,
    });
    await budget.acquire({ requests: 1, tokens: 1 }); // starts the workflow (and takes one block)
    const load0 = os.loadavg();
    const t0 = performance.now();
    const latencies: number[] = [];
    await Promise.all(
      Array.from({ length: clients }, async () => {
        for (let i = 0; i < asks; i++) {
          const t = performance.now();
          await budget.acquire({ requests: 1, tokens: 100 });
          latencies.push(performance.now() - t);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    latencies.sort((a, b) => a - b);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.ceil(p * latencies.length) - 1)]?.toFixed(1);
    const updates = await client.workflow.getHandle(budget.workflowId).describe().then((d) => d.historyLength);
    const result = { bench: 'judge-budget', rpm, block, historyEvents: updates, clients, asks, grants: clients * asks, seconds, grantsPerSecond: (clients * asks) / seconds, latencyMs: { p50: pct(0.5), p95: pct(0.95) }, loadAverage: { before: load0, after: os.loadavg() } };
    console.log(`[budget] rpm ${rpm}, ${block} request(s) per Update: ${result.grants} grants in ${seconds.toFixed(1)} s: ${result.grantsPerSecond.toFixed(1)} grants/s; ask latency p50 ${result.latencyMs.p50} ms, p95 ${result.latencyMs.p95} ms`);
    console.log(JSON.stringify(result));
    await client.workflow.getHandle(budget.workflowId).terminate('bench over');
  } finally {
    worker.shutdown();
    await running;
    await connection.close();
    await client.connection.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
