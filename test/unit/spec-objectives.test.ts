/**
 * The paper's objectives in the spec (App. B): SFT's loss on the response only (`assistant_only_loss`,
 * default true) and DPO/SimPO responses capped at `max_completion_length` (default 1024, within the 2048
 * of max_length), both under TRL's names. Defaults and bounds through the zod schema, the generated JSON
 * Schema the trainer validates with, and `lineage validate` (the public entry point, spawned).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DpoHyperparameters, SftHyperparameters, SimpoHyperparameters, validateLineageSpec } from '../../common/spec';

const ROOT = path.resolve(__dirname, '..', '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
const demo = () => JSON.parse(fs.readFileSync(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, any>;
const schema = () => JSON.parse(fs.readFileSync(path.join(ROOT, 'specs', 'lineage.schema.json'), 'utf8')) as Record<string, any>;

function withHyperparameters(stage: number, h: Record<string, unknown>): Record<string, any> {
  const s = demo();
  s.stages[stage].hyperparameters = { ...s.stages[stage].hyperparameters, ...h };
  return s;
}

function issuePaths(spec: unknown): string[] {
  const v = validateLineageSpec(spec);
  return v.ok ? [] : v.issues.map((i) => i.path);
}

describe('objectives in the spec', () => {
  it("defaults to the paper's: response-only SFT loss, 1024 response tokens for DPO and SimPO", () => {
    expect(SftHyperparameters.parse({}).assistant_only_loss).toBe(true);
    for (const h of [DpoHyperparameters.parse({}), SimpoHyperparameters.parse({})]) {
      expect([h.max_prompt_length, h.max_completion_length, h.max_length]).toEqual([1024, 1024, 2048]);
    }
    const v = validateLineageSpec(demo());
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    const [sft, dpo] = v.spec.stages;
    expect(sft!.kind === 'sft' && sft!.hyperparameters.assistant_only_loss).toBe(true);
    expect(dpo!.kind === 'dpo' && dpo!.hyperparameters.max_completion_length).toBe(1024);
  });

  it('accepts the switch off and a smaller cap', () => {
    const s = withHyperparameters(0, { assistant_only_loss: false });
    s.stages[1].hyperparameters.max_completion_length = 64;
    const v = validateLineageSpec(s);
    expect(v.ok ? 'ok' : JSON.stringify(v.issues)).toBe('ok');
    if (!v.ok) return;
    expect(v.spec.stages[0]!.hyperparameters).toMatchObject({ assistant_only_loss: false });
    expect(v.spec.stages[1]!.hyperparameters).toMatchObject({ max_completion_length: 64 });
  });

  it.each([
    ['a non-boolean switch', 0, { assistant_only_loss: 'yes' }, 'stages[0].hyperparameters.assistant_only_loss'],
    ['a zero cap', 1, { max_completion_length: 0 }, 'stages[1].hyperparameters.max_completion_length'],
    ['a fractional cap', 1, { max_completion_length: 10.5 }, 'stages[1].hyperparameters.max_completion_length'],
    ['a cap above 131072', 1, { max_completion_length: 131_073 }, 'stages[1].hyperparameters.max_completion_length'],
    ['the SFT switch on a DPO stage', 1, { assistant_only_loss: true }, 'stages[1].hyperparameters'],
    ['a response cap on an SFT stage', 0, { max_completion_length: 64 }, 'stages[0].hyperparameters'],
  ])('rejects %s, naming the field', (_name, stage, h, field) => {
    expect(issuePaths(withHyperparameters(stage, h)).some((p) => p.startsWith(field))).toBe(true);
  });

  it('puts the fields, with their defaults and bounds, in the JSON Schema the trainer validates with', () => {
    const defs = schema().$defs;
    expect(defs.SftHyperparameters.properties.assistant_only_loss).toMatchObject({ type: 'boolean', default: true });
    for (const name of ['DpoHyperparameters', 'SimpoHyperparameters']) {
      expect(defs[name].properties.max_completion_length).toMatchObject({ type: 'integer', default: 1024, exclusiveMinimum: 0, maximum: 131_072 });
    }
  });
});

describe('lineage validate with the new fields', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vd-objectives-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  function validate(spec: unknown): Promise<{ code: number; stdout: string; stderr: string }> {
    const file = path.join(dir, `spec-${Math.random().toString(36).slice(2)}.json`);
    fs.writeFileSync(file, JSON.stringify(spec));
    return new Promise((resolve) => {
      execFile(TSX, ['worker/cli.ts', 'validate', file], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      });
    });
  }

  it('accepts them and refuses a bad cap, naming it', async () => {
    const good = withHyperparameters(0, { assistant_only_loss: false });
    good.stages[2].hyperparameters.max_completion_length = 128;
    const ok = await validate(good);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^ok: lineage "demo"/);
    const bad = await validate(withHyperparameters(2, { max_completion_length: -1 }));
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/stages\[2\]\.hyperparameters\.max_completion_length/);
  }, 120_000);
});
