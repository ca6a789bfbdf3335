/**
 * `lineage plan` through the real entry point (`tsx worker/cli.ts plan …`, spawned with an argument
 * array): every paper spec, the demo spec (whose file: datasets are counted), override files, a
 * spec with an unknown size, and an s3: dataset counted from the local stack's store.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Plan } from '../../common/plan';
import { loadStackEnv } from '../support/workflowEnv';

const ROOT = path.resolve(__dirname, '..', '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  seconds: number;
}

function lineage(args: readonly string[]): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(TSX, ['worker/cli.ts', ...args], { cwd: ROOT, env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }, timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr, seconds: (Date.now() - started) / 1000 });
    });
  });
}

async function planJson(args: readonly string[]): Promise<{ plan: Plan; run: Run }> {
  const run = await lineage(['plan', ...args, '--json']);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return { plan: JSON.parse(run.stdout) as Plan, run };
}

function expectOneLineError(r: Run, code: number, pattern: RegExp): void {
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.code).toBe(code);
}

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-plan-cli-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const PAPER_DIR = path.join(ROOT, 'specs', 'paper');

describe('lineage plan: the paper specs', () => {
  it('answers for every specs/paper spec in seconds with App. B\'s sizes, and the four add up to the paper\'s grid', async () => {
    const files = (await fs.readdir(PAPER_DIR)).filter((f) => f.endsWith('.json')).sort();
    expect(files.length).toBe(4);
    const plans: Plan[] = [];
    for (const f of files) {
      const raw = JSON.parse(await fs.readFile(path.join(PAPER_DIR, f), 'utf8')) as { stages: unknown[]; datasets: Record<string, { rows?: number }> };
      const { plan, run } = await planJson([path.join('specs', 'paper', f)]);
      // Loaded CI machines are slow to start tsx; the command itself reads no network.
      expect(run.seconds).toBeLessThan(45);
      plans.push(plan);
      const t = plan.totals;
      expect(t.incomplete).toBe(false);
      expect(plan.unknown).toEqual([]);
      expect(plan.stages.length).toBe(raw.stages.length + 1);
      for (const k of ['checkpoints', 'generations', 'judgeCalls', 'judgeInputTokens', 'gpuHours', 'storageBytes'] as const) {
        expect(Number.isFinite(t[k]) && t[k] > 0, k).toBe(true);
      }
      // Internal consistency: every evaluated checkpoint samples 550 prompts × 5, one judge call each.
      expect(plan.evaluation.generationsPerCheckpoint).toBe(550 * 5);
      expect(t.generations).toBe(t.evaluatedCheckpoints * 550 * 5);
      expect(t.judgeCalls).toBe(t.generations);
      expect(t.judgeInputTokens).toBe(t.judgeCalls * plan.evaluation.judge.inputTokensPerCall);
      expect(plan.evaluation.judge.inputTokensPerCall).toBeGreaterThan(300);
      expect(plan.evaluation.judge.inputTokensPerCall).toBeLessThan(1000);
      // Every stage's rows are the declared App. B sizes.
      for (const s of plan.stages.filter((x) => x.kind !== 'base')) {
        expect(s.rowsSource).toBe('declared');
        expect(s.rows).toBe(raw.datasets[s.dataset!]?.rows);
      }
      // An UltraFeedback preference stage: 60,908 × 3 / 32 ≈ 5,710 steps; 57 checkpoints at every 100, plus the final step.
      for (const id of ['ppo-wildchat-uf', 'dpo-wildchat-uf', 'simpo-alpaca-uf']) {
        const s = plan.stages.find((x) => x.id === id)!;
        expect(Math.abs(s.steps! - 5_710)).toBeLessThanOrEqual(3);
        expect(s.periodicCheckpoints).toBe(57);
        expect(s.checkpoints).toBe(58);
      }
      const sftWildchat = plan.stages.find((x) => x.id === 'sft-wildchat')!;
      expect(Math.abs(sftWildchat.steps! - (255_751 * 3) / 128)).toBeLessThan(4);
      expect(sftWildchat.checkpointEvery).toBe(500);
      // Reward models are trained and stored but never evaluated.
      expect(plan.stages.filter((x) => x.kind === 'reward').every((x) => x.generations === 0 && (x.checkpoints ?? 0) > 0)).toBe(true);
      expect(t.cost.judgeBatch).toBeCloseTo(t.cost.judgeOnline / 2, 3);
    }
    // The grid of §4–§6 over four bases: ≈ 3,260 checkpoints, ≈ 9M generations and judge calls, ≈ 4B judge input tokens.
    const sum = (f: (p: Plan) => number) => plans.reduce((a, p) => a + f(p), 0);
    expect(sum((p) => p.totals.evaluatedCheckpoints)).toBeGreaterThan(3_260 * 0.9);
    expect(sum((p) => p.totals.evaluatedCheckpoints)).toBeLessThan(3_260 * 1.1);
    expect(sum((p) => p.totals.generations)).toBeGreaterThan(8e6);
    expect(sum((p) => p.totals.generations)).toBeLessThan(10e6);
    expect(sum((p) => p.totals.judgeInputTokens)).toBeGreaterThan(3e9);
    expect(sum((p) => p.totals.judgeInputTokens)).toBeLessThan(6e9);
    // 8B bases train slower per GPU than the 3B base (scaled by parameter count).
    const byName = Object.fromEntries(plans.map((p) => [p.lineage, p]));
    expect(byName['paper-llama3-8b']!.totals.gpuHours).toBeGreaterThan(byName['paper-llama3-3b']!.totals.gpuHours * 2);
  }, 300_000);

  it('is listed in --help with its options', async () => {
    const r = await lineage(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('  plan <spec.json> [--json] [--throughput FILE] [--prices FILE] [--answer-tokens N]');
  }, 120_000);

  it('prints the DAG and the totals as text', async () => {
    const r = await lineage(['plan', 'specs/paper/paper-qwen3-4b.json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^plan for lineage "paper-qwen3-4b": Qwen3-4B-Base, 4\.02B parameters/);
    expect(lines).toContain(lines.find((l) => l.startsWith('base  base model, evaluated once')));
    expect(r.stdout).toMatch(/\n├─ sft-wildchat {2}\[sft\] wildchat: 255,751 rows \(declared\)/);
    expect(r.stdout).toMatch(/\n│ {2}├─ ppo-wildchat-uf {2}\[ppo\] ultrafeedback: 60,908 rows .* 58 checkpoints \(57 every 100 \+ final\) .* reward model rm-wildchat-uf/);
    expect(r.stdout).toMatch(/\n└─ sft-alpaca /);
    expect(r.stdout).toMatch(/\n {3}└─ simpo-alpaca-syn-oppose /);
    expect(r.stdout).toMatch(/\n {2}judge by mode {7}online [\d,]+ USD, batch API [\d,]+ USD/);
    expect(r.stdout).toMatch(/GPU-hours/);
    expect(r.stdout).toMatch(/assumptions:\n/);
  }, 120_000);
});

describe('lineage plan: the demo spec (file: datasets counted)', () => {
  it('counts the demo files and the eval prompts per category', async () => {
    const { plan } = await planJson(['specs/demo.json']);
    const count = async (f: string) => (await fs.readFile(path.join(ROOT, f), 'utf8')).split('\n').filter((l) => l.trim()).length;
    const sft = plan.stages.find((s) => s.id === 'sft')!;
    expect(sft).toMatchObject({ rowsSource: 'counted', rows: await count('data/demo/sft.jsonl'), steps: 12, checkpoints: 2, device: 'cpu', gpuHours: 0 });
    expect(plan.stages.find((s) => s.id === 'dpo-support')).toMatchObject({ rowsSource: 'counted', rows: await count('data/demo/preferences.jsonl') });
    const evalRows = (await fs.readFile(path.join(ROOT, 'data/demo/eval.jsonl'), 'utf8')).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { category: string });
    const perCat = new Map<string, number>();
    for (const r of evalRows) perCat.set(r.category, (perCat.get(r.category) ?? 0) + 1);
    const prompts = [...perCat.values()].reduce((a, n) => a + Math.min(n, 2), 0);
    expect(plan.evaluation.prompts).toBe(prompts);
    expect(plan.evaluation.generationsPerCheckpoint).toBe(prompts * 3);
    // base + 3 stages × 2 checkpoints
    expect(plan.totals.evaluatedCheckpoints).toBe(7);
    expect(plan.totals.generations).toBe(7 * prompts * 3);
    expect(plan.totals.cpuHours).toBeGreaterThan(0);
    expect(plan.totals.incomplete).toBe(false);
    expect(plan.evaluation.questionTokensSource).toMatch(/mean question length/);
  }, 120_000);
});

describe('lineage plan: options and what is unknown', () => {
  it('--throughput and --prices files are laid over the defaults', async () => {
    const base = (await planJson(['specs/paper/paper-llama3-3b.json'])).plan;
    const throughput = path.join(dir, 'throughput.json');
    await fs.writeFile(throughput, JSON.stringify({ rates: [{ device: 'gpu', algorithm: 'sft', params: 3.21e9, tokensPerSecond: 28_800, basis: 'measured', source: 'our H100 run' }] }));
    const prices = path.join(dir, 'prices.json');
    await fs.writeFile(prices, JSON.stringify({ gpuHour: { price: 0, source: 'free' }, judge: { 'gpt-4o': { inputPerMillion: 5, outputPerMillion: 20, batchDiscount: 0.5, source: 'doubled' } } }));
    const over = (await planJson(['specs/paper/paper-llama3-3b.json', '--throughput', throughput, '--prices', prices])).plan;
    const sftBase = base.stages.find((s) => s.id === 'sft-wildchat')!;
    const sftOver = over.stages.find((s) => s.id === 'sft-wildchat')!;
    expect(sftOver.trainHours!).toBeCloseTo(sftBase.trainHours! / 2, 6);
    expect(sftOver.trainRate?.source).toBe('our H100 run');
    expect(over.stages.find((s) => s.id === 'dpo-wildchat-uf')!.trainHours).toBe(base.stages.find((s) => s.id === 'dpo-wildchat-uf')!.trainHours);
    expect(over.totals.cost.compute).toBe(0);
    expect(over.totals.cost.judgeOnline).toBeCloseTo(base.totals.cost.judgeOnline * 2, 3);
  }, 120_000);

  it('a bad --throughput or --prices file is one clear error line, exit 1', async () => {
    const bad = path.join(dir, 'bad.json');
    await fs.writeFile(bad, JSON.stringify({ rates: [{ device: 'gpu', algorithm: 'sft', params: 3e9, tokensPerSecond: 0, basis: 'measured', source: 'x' }] }));
    expectOneLineError(await lineage(['plan', 'specs/demo.json', '--throughput', bad]), 1, /--throughput .*bad\.json: rates\[0\]\.tokensPerSecond: /);
    const notJson = path.join(dir, 'prices.txt');
    await fs.writeFile(notJson, 'cheap');
    expectOneLineError(await lineage(['plan', 'specs/demo.json', '--prices', notJson]), 1, /--prices .*prices\.txt: not valid JSON/);
    expectOneLineError(await lineage(['plan', 'specs/demo.json', '--answer-tokens', '0']), 2, /--answer-tokens must be an integer ≥ 1/);
    const badSpec = path.join(dir, 'bad-spec.json');
    await fs.writeFile(badSpec, JSON.stringify({ name: 'x' }));
    expectOneLineError(await lineage(['plan', badSpec]), 1, /invalid lineage spec .*bad-spec\.json: base: /);
  }, 120_000);

  it('--answer-tokens sets the mean answer length of the judge input', async () => {
    const a = (await planJson(['specs/demo.json'])).plan;
    const b = (await planJson(['specs/demo.json', '--answer-tokens', '20'])).plan;
    expect(a.evaluation.answerTokens).toBe(48);
    expect(b.evaluation.answerTokens).toBe(20);
    expect(a.evaluation.judge.inputTokensPerCall - b.evaluation.judge.inputTokensPerCall).toBe(28);
  }, 120_000);

  it('a hub dataset without declared rows: "unknown, declare rows"; declaring rows fills it in', async () => {
    const demo = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, any>;
    demo.datasets['demo-sft'] = { uri: 'hf:tatsu-lab/alpaca', format: 'chat' };
    delete demo.stages[0].hyperparameters.max_steps;
    const file = path.join(dir, 'unknown.json');
    await fs.writeFile(file, JSON.stringify(demo));
    const text = await lineage(['plan', file]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/sft {2}\[sft\] demo-sft: rows unknown, declare rows/);
    expect(text.stdout).toMatch(/totals \(incomplete/);
    const { plan } = await planJson([file]);
    expect(plan.totals.incomplete).toBe(true);
    expect(plan.stages.find((s) => s.id === 'sft')!.steps).toBeNull();
    demo.datasets['demo-sft'].rows = 46_801;
    await fs.writeFile(file, JSON.stringify(demo));
    const declared = (await planJson([file])).plan.stages.find((s) => s.id === 'sft')!;
    expect(declared).toMatchObject({ rows: 46_801, rowsSource: 'declared' });
    expect(declared.steps).toBe(Math.ceil(3 * Math.ceil(46_801 / 4 / 2)));
  }, 120_000);

  it('an s3: dataset without declared rows is counted from the store; a missing object is unknown', async () => {
    loadStackEnv();
    expect(process.env.VALUEDRIFT_S3_ENDPOINT, 'the local stack (npx tsx infra/dev.ts up) must be running').toBeDefined();
    const { putBytes, uriOf } = await import('../../activities/store');
    const key = `tests/plan-${randomUUID()}/pairs.jsonl`;
    const rows = Array.from({ length: 37 }, (_, i) => JSON.stringify({ prompt: `p${i}`, support: 's', oppose: 'o' }));
    await putBytes(key, rows.join('\n') + '\n', 'application/x-ndjson');
    const demo = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, any>;
    demo.datasets['demo-stance-pairs'] = { uri: uriOf(key), format: 'stance-pairs' };
    demo.datasets['demo-sft'] = { uri: uriOf(`tests/plan-${randomUUID()}/absent.jsonl`), format: 'chat' };
    const file = path.join(dir, 's3.json');
    await fs.writeFile(file, JSON.stringify(demo));
    const { plan } = await planJson([file]);
    expect(plan.stages.find((s) => s.id === 'dpo-support')).toMatchObject({ rows: 37, rowsSource: 'counted' });
    const sft = plan.stages.find((s) => s.id === 'sft')!;
    expect(sft.rows).toBeNull();
    expect(sft.rowsDetail).toMatch(/^unknown, declare rows \(s3:\/\/.*absent\.jsonl not readable/);
  }, 120_000);
});
