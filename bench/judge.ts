/**
 * Judge throughput against a local OpenAI-compatible endpoint that answers every chat completion
 * after 300 ms, as a remote judge would. 640 judgments (the paper's 128 prompts × 5 generations)
 * at concurrency 32: the ideal is 32 / 0.3 s = 106.7 judgments/s, the goal ≥ 90 % of it.
 * What it measures is our overhead (scheduling, parsing, cache writes, HTTP client), not a model.
 *
 *   npx tsx bench/judge.ts            # prints one JSON line, then a Markdown paragraph for BENCHMARKS.md
 */
import { availableParallelism, cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { InMemoryJudgeCache } from '../activities/judge/cache';
import { createJudgeClient } from '../activities/judge/client';
import { judgeAll, type JudgeItem } from '../activities/judge/judgeAll';
import { ok, startFakeServer, type ChatRequestBody } from '../test/judge/fakeServer';
import { defineCommand, parseScriptArgs } from '../worker/cliArgs';

const JUDGMENTS = 640;
const CONCURRENCY = 32;
const LATENCY_MS = 300;
const RUNS = 3;
/** Not timed: opens the 32 keep-alive connections and warms the JIT, as a long-running worker would be. */
const WARMUP = 64;
const IDEAL_PER_S = CONCURRENCY / (LATENCY_MS / 1000);
const GOAL = 0.9;

/** No options: the figures are fixed so runs compare; the command line is still checked. */
const CLI = defineCommand({
  name: 'bench/judge.ts',
  summary: `Judge throughput: ${JUDGMENTS} judgments at concurrency ${CONCURRENCY} against a local endpoint that answers after ${LATENCY_MS} ms (goal ≥ ${GOAL * 100} % of the ideal ${IDEAL_PER_S.toFixed(1)}/s).`,
  args: [],
  options: {},
});

function items(run: number, n = JUDGMENTS): JudgeItem[] {
  // Distinct texts per run, so no run is served from another's cache.
  return Array.from({ length: n }, (_, i) => ({
    promptId: `p${Math.floor(i / 5)}`,
    category: 'immigration',
    sample: i % 5,
    question: `Run ${run}: should the country admit more immigrants? (${Math.floor(i / 5)})`,
    response: `Generation ${i} of run ${run}: a few sentences of an answer that takes some stance on the question.`,
    topic: 'more open immigration',
  }));
}

interface ServerStats {
  maxInFlight: number;
  chatRequests: number;
  completionTokenLimits: number[];
}

/**
 * The endpoint runs on its own thread: a real judge is another machine, so its request handling
 * must not be billed to the client's event loop (on 2 cores, sharing one thread would measure the
 * fake server as much as our code).
 */
async function serveInWorker(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('serveInWorker outside a worker thread');
  const server = await startFakeServer({ chat: () => ok([[' support', -0.3], [' neutral', -1.6], [' oppose', -2.9], ['I', -4]], LATENCY_MS) });
  port.on('message', (msg: 'stats' | 'close') => {
    if (msg === 'stats') {
      const bodies = server.chatRequests.map((q) => JSON.parse(q.body) as ChatRequestBody);
      const stats: ServerStats = {
        maxInFlight: server.maxInFlight,
        chatRequests: bodies.length,
        completionTokenLimits: [...new Set(bodies.map((b) => b.max_tokens ?? b.max_completion_tokens ?? Number.NaN))],
      };
      port.postMessage({ stats });
    } else {
      void server.close().then(() => port.close());
    }
  });
  port.postMessage({ baseURL: server.baseURL });
}

function nextMessage<T>(worker: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    worker.once('message', (m: T) => resolve(m));
    worker.once('error', reject);
  });
}

async function main(): Promise<void> {
  parseScriptArgs(CLI, () => undefined);
  // Workers do not inherit tsx's loader: register its CommonJS hook first, then load this file.
  const worker = new Worker(`require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(__filename)});`, { eval: true });
  try {
    const { baseURL } = await nextMessage<{ baseURL: string }>(worker);
    const client = createJudgeClient({ baseURL, apiKey: 'bench', timeoutMs: 30_000 });
    await judgeAll({ items: items(-1, WARMUP), client, model: 'bench-judge', concurrency: CONCURRENCY, cache: new InMemoryJudgeCache(), maxRetries: 3 });
    const runs: Array<{ seconds: number; perS: number }> = [];
    const load = loadavg()[0] ?? 0;
    for (let r = 0; r < RUNS; r++) {
      const t0 = performance.now();
      const res = await judgeAll({ items: items(r), client, model: 'bench-judge', concurrency: CONCURRENCY, cache: new InMemoryJudgeCache(), maxRetries: 3 });
      const seconds = (performance.now() - t0) / 1000;
      if (res.calls !== JUDGMENTS || res.attempts !== JUDGMENTS || res.judgments.some((j) => j.probs === null)) {
        throw new Error(`run ${r}: expected ${JUDGMENTS} labelled judgments in as many calls, got ${res.calls} calls / ${res.attempts} attempts`);
      }
      runs.push({ seconds, perS: JUDGMENTS / seconds });
    }
    worker.postMessage('stats');
    const { stats } = await nextMessage<{ stats: ServerStats }>(worker);
    const tokens = stats.completionTokenLimits.length === 1 ? (stats.completionTokenLimits[0] as number) : Number.NaN;
    const sorted = [...runs].sort((a, b) => a.perS - b.perS);
    const median = sorted[Math.floor(sorted.length / 2)] as (typeof runs)[number];
    const efficiency = median.perS / IDEAL_PER_S;
    const result = {
      bench: 'judge',
      judgments: JUDGMENTS,
      concurrency: CONCURRENCY,
      latencyMs: LATENCY_MS,
      runs: runs.map((r) => ({ seconds: +r.seconds.toFixed(3), perS: +r.perS.toFixed(1) })),
      medianPerS: +median.perS.toFixed(1),
      idealPerS: +IDEAL_PER_S.toFixed(1),
      efficiency: +efficiency.toFixed(3),
      goal: GOAL,
      pass: efficiency >= GOAL,
      maxInFlight: stats.maxInFlight,
      chatRequests: stats.chatRequests,
      completionTokensPerJudgment: tokens,
      loadavg1m: +load.toFixed(2),
      node: process.version,
      cpus: availableParallelism(),
    };
    process.stdout.write(`${JSON.stringify(result)}\n\n`);
    const date = new Date().toISOString().slice(0, 10);
    const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
    process.stdout.write(
      `**Judge throughput** (${date}; machine: 2-core polyglot, ${availableParallelism()} × ${cpu}, Node ${process.version}, ` +
        `1-min load average ${load.toFixed(1)} from other work on the box). ` +
        `Method: \`judgeAll\` through the real \`openai\` client against a local OpenAI-compatible endpoint on 127.0.0.1 (its own ` +
        `worker thread, standing in for a remote judge) that answers every chat completion after ${LATENCY_MS} ms; ${JUDGMENTS} distinct ` +
        `judgments at concurrency ${CONCURRENCY}, one completion token each (max_tokens ${tokens}, top_logprobs 20), in-memory cache; ` +
        `${WARMUP} untimed warm-up judgments, then ${RUNS} timed runs. ` +
        `Result: median ${median.perS.toFixed(1)} judgments/s (runs: ${runs.map((r) => r.perS.toFixed(1)).join(', ')}) against the ideal ` +
        `${CONCURRENCY}/${LATENCY_MS / 1000} s = ${IDEAL_PER_S.toFixed(1)}/s, i.e. ${(100 * efficiency).toFixed(1)} % ` +
        `(goal ≥ ${GOAL * 100} %: ${efficiency >= GOAL ? 'met' : 'NOT met'}); at most ${stats.maxInFlight} requests were in flight. ` +
        `Command: \`npx tsx bench/judge.ts\`.\n`,
    );
  } finally {
    worker.postMessage('close');
    await new Promise((r) => worker.once('exit', r));
  }
}

const entry = isMainThread ? main : serveInWorker;
entry().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
