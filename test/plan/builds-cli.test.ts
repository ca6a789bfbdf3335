/**
 * `npm run lineage -- plan` on the paper spec that builds V-PRISM, the synthetic pairs and five stance
 * analyses: the "dataset builds" section of the text and of --json, with every count following from
 * the spec (a changed limit or setting changes it) and a generator price given with --prices.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Plan, PlanBuild } from '../../common/plan';

const ROOT = path.resolve(__dirname, '..', '..');
const SPEC = path.join('specs', 'paper', 'paper-llama3-3b.json');
const QWEN = 'Qwen/Qwen2.5-72B-Instruct';

function lineage(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('npm', ['run', '--silent', 'lineage', '--', ...args], { cwd: ROOT, env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' }, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

async function planJson(args: readonly string[]): Promise<Plan> {
  const r = await lineage(['plan', ...args, '--json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Plan;
}

const build = (p: Plan, name: string): PlanBuild => {
  const b = p.builds.find((x) => x.name === name);
  if (!b) throw new Error(`no build ${name}`);
  return b;
};
const calls = (p: Plan, name: string, step: string): number | null => build(p, name).calls.find((c) => c.step === step)?.calls ?? null;

let dir: string;
let raw: Record<string, any>;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-plan-builds-'));
  raw = JSON.parse(await fs.readFile(path.join(ROOT, SPEC), 'utf8')) as Record<string, any>;
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('lineage plan: dataset builds of the paper spec', () => {
  it('counts the calls of every build from the spec and the paper\'s sizes; text and --json agree', async () => {
    const p = await planJson([SPEC]);
    const d = raw.datasets;
    const topics = Object.keys(raw.evaluation.topics).length;
    expect(p.builds.map((b) => b.name).sort()).toEqual(Object.keys(d).filter((k) => d[k].build).sort());
    // V-PRISM: PRISM declares no rows, so the paper's 8,100 prompts (the prism recipe's size).
    expect(build(p, 'v-prism').inputDetail).toMatch(/"prism": 8,100 rows \(paper: prism recipe/);
    expect(calls(p, 'v-prism', 'rephrase statements')).toBe(8_100);
    expect(calls(p, 'v-prism', 'name clusters')).toBe(Math.floor(8_100 / 10));
    expect(calls(p, 'v-prism', 'value-laden check')).toBe(8_100);
    expect(build(p, 'v-prism').calls.every((c) => c.role === 'generator' && c.model === d['v-prism'].generator.model)).toBe(true);
    // Synthetic pairs: 860 per category (the default) × 11 categories of the concat's 121,816 rows; two responses each.
    const selected = Math.min(860 * topics, d['uf-hh-prompts'].rows);
    expect(calls(p, 'synthetic', 'supporting and opposing responses')).toBe(2 * selected);
    expect(calls(p, 'synthetic', 'stance-check responses')).toBe(2 * selected);
    // Stance analyses: a bound of the analysed dataset's rows, × 2 for preference and stance-pairs sets.
    for (const [name, sides] of [['wildchat-stances', 1], ['alpaca-stances', 1], ['ultrafeedback-stances', 2], ['hh-rlhf-stances', 2], ['synthetic-stances', 2]] as const) {
      const src = d[name].from.dataset as string;
      expect(calls(p, name, 'judge datapoints'), name).toBe(d[src].rows * sides);
      expect(build(p, name).bound).toBe(true);
    }
    expect(build(p, 'uf-hh-prompts')).toMatchObject({ calls: [], inputRows: 2 * 60_908 });
    // The Qwen generator has no default price: the builds' cost says so; the stages stay complete.
    expect(build(p, 'synthetic').cost).toBeNull();
    expect(p.totals.builds.incomplete).toBe(true);
    expect(p.totals.builds.unknown).toEqual([`build synthetic: no price for ${QWEN} (generator); add it to the generator prices of a --prices file`]);
    expect(p.totals.incomplete).toBe(false);
    expect(p.unknown).toEqual([]);
    const judgeCalls = p.builds.flatMap((b) => b.calls).filter((c) => c.role === 'judge').reduce((a, c) => a + (c.calls ?? 0), 0);
    expect(p.totals.builds.judgeCalls).toBe(judgeCalls);
    expect(p.totals.builds.generatorCalls).toBe(8_100 + 810 + 8_100 + 2 * selected);
    expect(p.totals.cost.withBuilds).toBeCloseTo(p.totals.cost.total + p.totals.builds.cost, 6);
    // gpt-4o at 2.5 / 10 USD per million: the stance checks' cost follows from their tokens.
    const check = build(p, 'synthetic').calls.find((c) => c.role === 'judge')!;
    expect(check.cost).toBeCloseTo((check.inputTokens! * 2.5 + check.outputTokens! * 10) / 1e6, 6);

    const text = await lineage(['plan', SPEC]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/\ndataset builds \(before the stages that use them/);
    expect(text.stdout).toMatch(/\nv-prism {2}\[v-prism\] from prism: statements: "prism": 8,100 rows/);
    expect(text.stdout).toMatch(/\n {3}rephrase statements: generator gpt-4o, 8,100 calls — /);
    expect(text.stdout).toMatch(/\n {3}name clusters: generator gpt-4o, ≤ 810 calls — /);
    expect(text.stdout).toContain(`supporting and opposing responses: generator ${QWEN}, ≤ ${(2 * selected).toLocaleString('en-US')} calls`);
    expect(text.stdout).toContain(`no price for ${QWEN}`);
    expect(text.stdout).toMatch(/\ndataset builds total \(incomplete: see below\)\n {2}builds {14}8\n/);
    expect(text.stdout).toMatch(new RegExp(`\\n {2}judge calls {9}≤ ${judgeCalls.toLocaleString('en-US')} `));
  }, 300_000);

  it('a changed limit or setting changes the counts; a --prices generator entry completes the cost', async () => {
    const spec = structuredClone(raw);
    spec.datasets.prism.limit = 2_000;
    spec.datasets['v-prism'].clustering = { minClusterSize: 40 };
    spec.datasets['v-prism'].valueCheck = false;
    spec.datasets.synthetic.promptsPerCategory = 100;
    spec.datasets['wildchat-stances'].limit = 5_000;
    spec.datasets.ultrafeedback.limit = 1_000;
    const file = path.join(dir, 'changed.json');
    await fs.writeFile(file, JSON.stringify(spec));
    const prices = path.join(dir, 'prices.json');
    await fs.writeFile(prices, JSON.stringify({ generator: { [QWEN]: { inputPerMillion: 1.2, outputPerMillion: 1.2, batchDiscount: 0, source: 'a hosted price, for the test' } } }));
    const p = await planJson([file, '--prices', prices]);
    const topics = Object.keys(raw.evaluation.topics).length;
    expect(calls(p, 'v-prism', 'rephrase statements')).toBe(2_000);
    expect(calls(p, 'v-prism', 'name clusters')).toBe(50);
    expect(build(p, 'v-prism').calls.map((c) => c.step)).toEqual(['rephrase statements', 'name clusters']);
    expect(calls(p, 'synthetic', 'supporting and opposing responses')).toBe(2 * 100 * topics);
    expect(calls(p, 'wildchat-stances', 'judge datapoints')).toBe(5_000);
    expect(calls(p, 'ultrafeedback-stances', 'judge datapoints')).toBe(2 * 1_000);
    // The concat joins the limited UltraFeedback.
    expect(build(p, 'uf-hh-prompts').inputRows).toBe(60_908 + 1_000);
    const gen = build(p, 'synthetic').calls.find((c) => c.role === 'generator')!;
    expect(gen.cost).toBeCloseTo(((gen.inputTokens! + gen.outputTokens!) * 1.2) / 1e6, 6);
    expect(gen.price).toMatch(/a hosted price, for the test/);
    expect(p.totals.builds.incomplete).toBe(false);
    expect(p.totals.builds.unknown).toEqual([]);
  }, 300_000);
});
