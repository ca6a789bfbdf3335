/**
 * `lineage compare` through the CLI's entry point (spawned as a user runs it) against three real
 * finished lineages (test/fixtures/compare/harness.ts: the real lineage workflow on a real Temporal
 * dev server, drift.json written by the real activities into the stack's S3 server). The numbers
 * printed must be those of each lineage's drift.json, read back from the store here.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { getVerified } from '../../activities/store';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { STANCES, StageDrift } from '../../common/contracts';
import type { CompareJson } from '../../worker/compare';
import { uniqueName } from '../support/workflowEnv';
import { useComparedLineages, type FinishedLineage } from '../fixtures/compare/harness';

const h = useComparedLineages('vd-compare-');

/** Every drift.json of a finished lineage, read from the store through its result's references. */
async function storedDrifts(l: FinishedLineage): Promise<Map<string, StageDrift>> {
  const out = new Map<string, StageDrift>();
  for (const s of l.result.stages) {
    if (s.drift) out.set(`${l.name}/${s.stageId}`, StageDrift.parse(JSON.parse((await getVerified(s.drift)).toString('utf8'))));
  }
  return out;
}

const byTemplate = (t: string): FinishedLineage => {
  const l = h.lineages.find((x) => x.template === t);
  if (!l) throw new Error(`no lineage of template ${t}`);
  return l;
};

describe('lineage compare', () => {
  it('--json: the stages of three lineages (name, workflow ID, spec file) with exactly their drift.json numbers; the page in the store and copied locally', async () => {
    const [a, b, c] = [byTemplate('dpo-support'), byTemplate('dpo-oppose'), byTemplate('simpo-support')];
    const out = path.join(h.dir, 'reports');
    const run = await h.lineage(['compare', a.name, b.workflowId, c.specFile, '--json', '--out', out]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    const doc = JSON.parse(lines[0] as string) as CompareJson;

    expect(doc.lineages.map((l) => [l.lineage, l.workflowId, l.report])).toEqual([a, b, c].map((l) => [l.name, l.workflowId, l.result.report]));
    expect(doc.stages.map((s) => [s.index, s.key, s.kind, s.label])).toEqual([
      [1, `${a.name}/sft`, 'sft', 'SFT × sft-chat'],
      [2, `${a.name}/dpo-support`, 'dpo', 'DPO × stance-pairs (support-aligned)'],
      [3, `${b.name}/sft`, 'sft', 'SFT × sft-chat'],
      [4, `${b.name}/dpo-oppose`, 'dpo', 'DPO × stance-pairs (oppose-aligned)'],
      [5, `${c.name}/sft`, 'sft', 'SFT × sft-chat'],
      [6, `${c.name}/simpo-support`, 'simpo', 'SimPO × stance-pairs (support-aligned)'],
    ]);

    const drifts = new Map([...(await storedDrifts(a)), ...(await storedDrifts(b)), ...(await storedDrifts(c))]);
    expect([...drifts.keys()].sort()).toEqual(doc.stages.map((s) => s.key).sort());
    const refs = new Map([a, b, c].flatMap((l) => l.result.stages.map((x) => [`${l.name}/${x.stageId}` as string, x.drift] as const)));
    const categories = new Set<string>();
    for (const s of doc.stages) {
      const d = drifts.get(s.key) as StageDrift;
      expect(s.drift).toEqual(refs.get(s.key));
      expect([s.totalSteps, s.steps]).toEqual([d.totalSteps, d.steps]);
      for (const [category, entry] of Object.entries(d.topics)) {
        categories.add(category);
        expect(doc.topics[category]?.[s.key]).toEqual(entry);
      }
    }
    expect(Object.keys(doc.topics).sort()).toEqual([...categories].sort());
    expect(categories).toEqual(new Set(['abortion', 'immigration']));

    // Not trivially equal: the stand-in judge raises support on "support" stages and lowers it elsewhere.
    const M = (key: string, category: string) => doc.topics[category]?.[key]?.stances.support.M ?? Number.NaN;
    expect(M(`${a.name}/dpo-support`, 'abortion')).toBeGreaterThan(0.05);
    expect(M(`${b.name}/sft`, 'abortion')).toBeLessThan(-0.01);
    expect(M(`${b.name}/dpo-oppose`, 'abortion')).toBeLessThan(M(`${a.name}/dpo-support`, 'abortion'));
    expect(M(`${c.name}/simpo-support`, 'abortion')).toBeGreaterThan(M(`${a.name}/dpo-support`, 'abortion'));

    const sortedNames = [a.name, b.name, c.name].sort().join('+');
    expect(doc.page.uri).toMatch(new RegExp(`^s3://[^/]+/compare/${sortedNames.replace(/[+]/g, '\\+')}/index\\.html$`));
    expect(doc.localCopy).toBe(path.join(out, 'compare', sortedNames, 'index.html'));
    const stored = await getVerified(doc.page);
    expect(await fs.readFile(doc.localCopy)).toEqual(stored);
    const html = stored.toString('utf8');
    for (const s of doc.stages) expect(html).toContain(`data-stage="${s.key}"`);
  });

  it('text: a Tab. 1 table whose every cell is the drift.json value (arrow, M, η), then where the page went', async () => {
    const [a, b, c] = [byTemplate('dpo-support'), byTemplate('dpo-oppose'), byTemplate('simpo-support')];
    const out = path.join(h.dir, 'text');
    const run = await h.lineage(['compare', a.name, b.name, c.name, '--out', out]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const drifts = new Map([...(await storedDrifts(a)), ...(await storedDrifts(b)), ...(await storedDrifts(c))]);
    const keys = [`${a.name}/sft`, `${a.name}/dpo-support`, `${b.name}/sft`, `${b.name}/dpo-oppose`, `${c.name}/sft`, `${c.name}/simpo-support`];
    const text = run.stdout;
    // The legend: one line per column group.
    keys.forEach((key, i) => expect(text).toMatch(new RegExp(`^\\[${i + 1}\\] ${key}\\s+\\S.* × .*\\(\\d+ steps\\)$`, 'm')));
    expect(text).toMatch(/^\[4\] \S+\s+DPO × stance-pairs \(oppose-aligned\)\s+\(4 steps\)$/m);
    expect(text).toMatch(/^\[6\] \S+\s+SimPO × stance-pairs \(support-aligned\)\s+\(6 steps\)$/m);
    expect(text).toMatch(/^\s+\[1\] SFT\s+\[2\] DPO\s+\[3\] SFT\s+\[4\] DPO\s+\[5\] SFT\s+\[6\] SimPO$/m);
    const lines = text.split('\n');
    for (const category of ['abortion', 'immigration']) {
      const first = lines.findIndex((l) => l.startsWith(`${category} `));
      expect(first).toBeGreaterThan(0);
      STANCES.forEach((stance, i) => {
        const cells = (lines[first + i] as string).trim().split(/\s+/);
        // [category] stance then M, η per group.
        const numbers = i === 0 ? cells.slice(2) : cells.slice(1);
        expect(cells[i === 0 ? 1 : 0]).toBe(stance);
        expect(numbers).toHaveLength(keys.length * 2);
        keys.forEach((key, g) => {
          const sd = drifts.get(key)?.topics[category]?.stances[stance];
          if (!sd) throw new Error(`no drift for ${key} ${category}`);
          const m = numbers[2 * g] as string;
          const arrow = sd.M >= 0.005 ? '↑' : sd.M <= -0.005 ? '↓' : '→';
          expect(m.slice(0, 1)).toBe(arrow);
          expect(Number(m.slice(1))).toBeCloseTo(sd.M, 2);
          expect(Number(numbers[2 * g + 1])).toBeCloseTo(sd.eta, 2);
        });
      });
    }
    const sortedNames = [a.name, b.name, c.name].sort().join('+');
    const localCopy = path.join(out, 'compare', sortedNames, 'index.html');
    expect(text).toMatch(new RegExp(`\\npage: s3://[^/]+/compare/\\S+/index\\.html\\nlocal copy: ${localCopy.replace(/[.+]/g, '\\$&')}\\n$`));
    expect((await fs.stat(localCopy)).size).toBeGreaterThan(1000);
  });

  it('bad input: unknown, running and failed lineages, a spec file that does not parse or validate, a stage workflow ID, no argument', async () => {
    const a = byTemplate('dpo-support');
    const expectError = async (args: string[], line: string | RegExp, code = 1): Promise<void> => {
      const run = await h.lineage(['compare', ...args]);
      expect(run.stdout).toBe('');
      expect(run.code).toBe(code);
      if (typeof line === 'string') expect(run.stderr).toBe(`error: ${line}\n`);
      else expect(run.stderr).toMatch(line);
    };

    await expectError([a.name, 'no-such-lineage-anywhere'], 'no lineage workflow valuedrift/no-such-lineage-anywhere');

    // A spec whose lineage was never started: the error says how to start it.
    const never = uniqueName('cmp-never');
    const neverFile = await h.specFile('dpo-support', never);
    await expectError([neverFile], `no lineage workflow valuedrift/${never} (the lineage of ${neverFile}; start it with: npm run lineage -- start ${neverFile})`);

    // Running: started on a queue no worker serves, so it stays running.
    const running = uniqueName('cmp-running');
    const spec: unknown = JSON.parse(await fs.readFile(await h.specFile('dpo-oppose', running), 'utf8'));
    const handle = await h.env.client.workflow.start('lineageWorkflow', { taskQueue: `${TASK_QUEUES.workflows}-nobody`, workflowId: workflowIds.lineage(running), args: [spec] });
    await expectError([a.name, running], `valuedrift/${running} is still running; compare finished lineages only (see: npm run lineage -- status ${running})`);

    // Failed (here: terminated): the one line names it.
    await handle.terminate('stopped by the compare test');
    await expectError([running, a.name], new RegExp(`^error: valuedrift/${running} failed: .*\\n$`));

    await expectError([a.name, path.join(__dirname, '..', 'fixtures', 'compare', 'broken.json')], /^error: \S+broken\.json is not valid JSON: [^\n]+\n$/);
    const invalid = path.join(h.dir, 'invalid.json');
    await fs.writeFile(invalid, JSON.stringify({ name: 'cmp-invalid', stages: [] }));
    await expectError([invalid], new RegExp(`^error: invalid lineage spec ${invalid.replace(/[.]/g, '\\.')}: [^\\n]+\\n$`));
    await expectError([path.join(h.dir, 'missing.json')], `cannot read spec file ${path.join(h.dir, 'missing.json')}`);
    await expectError([`${a.workflowId}/sft`], `${a.workflowId}/sft is not a lineage workflow ID (valuedrift/<lineage name>)`);
    await expectError([], /^error: lineage compare: missing <lineage\|spec> \(usage: lineage compare <lineage\|spec>\.\.\. \[--out DIR\] \[--json\]\)\n$/, 2);
  });
});
