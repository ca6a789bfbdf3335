/**
 * The dataset stance analysis (App. K): its spec entry and refusals, its summary maths (stance
 * distributions, chosen–rejected distances, histogram bins, value gaps), the conversations a row is
 * judged as, the conversation-level prompt, and its HTML report rendered in headless Chromium.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildOrder, validateLineageSpec } from '../../common/spec';
import { analysisKey, conversationsOf, ResolveAnalysisInput } from '../../activities/derived/analysis';
import { distribution, euclidean, histogram, MAX_DISTANCE, renderAnalysisReport, summarise, type JudgedRow } from '../../activities/derived/analysisReport';
import { buildConversationJudgeMessages } from '../../activities/judge/prompt';
import { chromiumMissing } from '../../infra/chromium';
import { launchBrowser, screenshotDir } from '../support/browser';
import { stage, testSpec } from '../support/workflowEnv';

const analysis = (extra: Record<string, unknown> = {}) => ({ build: 'stance-analysis', from: { dataset: 'sft', questions: 'evalset' }, ...extra });
const withDatasets = (datasets: Record<string, unknown>, stages: unknown[] = [stage.sft()]) => {
  const s = testSpec('analysed', stages, 1) as { datasets: Record<string, unknown> };
  Object.assign(s.datasets, datasets);
  return s;
};
const issues = (input: unknown) => {
  const r = validateLineageSpec(input);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
};

describe('stance-analysis entries in the spec', () => {
  it('accepts one over a chat, preference or stance-pairs set, with the paper defaults', () => {
    const r = validateLineageSpec(withDatasets({ an: analysis(), pairs: { build: 'synthetic-pairs', from: { prompts: 'sft', questions: 'evalset' }, generator: { model: 'w' } }, an2: analysis({ from: { dataset: 'pairs', questions: 'evalset' }, alignment: 'oppose-aligned', threshold: 0.3, limit: 5 }) }));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.spec.datasets.an).toEqual({ ...analysis(), format: 'analysis', threshold: 0.5, alignment: 'support-aligned', concurrency: 8 });
    // Built after what it reads: the pairs before the analysis of them.
    const order = buildOrder(r.spec);
    expect(order.indexOf('pairs')).toBeLessThan(order.indexOf('an2'));
  });

  it('refuses to train on an analysis, to analyse an eval or another analysis, and bad settings', () => {
    expect(issues(withDatasets({ an: analysis() }, [{ ...stage.sft(), dataset: 'an' }]))).toEqual(['stages[0].dataset: dataset "an" is a stance analysis (judged rows and a report): no stage trains on it']);
    expect(issues(withDatasets({ an: analysis({ from: { dataset: 'evalset', questions: 'evalset' } }) }))).toEqual(['datasets.an.from.dataset: dataset "evalset" has format eval; stance-analysis needs chat or preference or stance-pairs here']);
    expect(issues(withDatasets({ an: analysis(), an2: analysis({ from: { dataset: 'an', questions: 'evalset' } }) }))).toEqual(['datasets.an2.from.dataset: dataset "an" is a stance analysis (a report), not data: nothing is built from it']);
    expect(issues(withDatasets({ an: analysis({ threshold: 1.5 }) }))[0]).toMatch(/^datasets\.an\.threshold: /);
    expect(issues(withDatasets({ an: analysis({ format: 'chat' }) }))[0]).toMatch(/^datasets\.an\.format: /);
    expect(issues(withDatasets({ an: analysis({ from: { dataset: 'sft' } }) }))[0]).toMatch(/^datasets\.an\.from\.questions: /);
  });
});

const P = (support: number, neutral: number, oppose: number) => ({ support, neutral, oppose });
const base = (index: number, category: string) => ({ index, category, topic: `topic of ${category}`, question: `q ${category}`, similarity: 0.7 });

describe('stance analysis summary', () => {
  it('distances are Euclidean over the three probabilities, within [0, √2]', () => {
    expect(euclidean(P(1, 0, 0), P(0, 0, 1))).toBeCloseTo(Math.SQRT2, 12);
    expect(euclidean(P(0.5, 0.5, 0), P(0.5, 0.5, 0))).toBe(0);
    expect(euclidean(P(0.6, 0.3, 0.1), P(0.2, 0.3, 0.5))).toBeCloseTo(Math.sqrt(0.32), 12);
  });

  it('histogram bins are equal-width over [0, √2], the top edge in the last bin', () => {
    const bins = histogram([0, 0.05, 0.1414, 0.15, 0.7, MAX_DISTANCE, 2], 10);
    expect(bins).toHaveLength(10);
    expect(bins[0]!.from).toBe(0);
    expect(bins[9]!.to).toBeCloseTo(MAX_DISTANCE, 12);
    expect(bins.map((b) => b.count)).toEqual([3, 1, 0, 0, 1, 0, 0, 0, 0, 2]);
  });

  it('a chat set: per topic, argmax counts and shares of the labelled, and the mean distribution', () => {
    const rows: JudgedRow[] = [
      { ...base(0, 'b'), kind: 'conversation', probs: P(0.7, 0.2, 0.1) },
      { ...base(1, 'b'), kind: 'conversation', probs: P(0.1, 0.8, 0.1) },
      { ...base(2, 'b'), kind: 'conversation', probs: P(0.6, 0.3, 0.1) },
      { ...base(3, 'b'), kind: 'conversation', probs: null },
      { ...base(4, 'a'), kind: 'conversation', probs: P(0, 0, 1) },
    ];
    const s = summarise('chat', rows);
    expect(Object.keys(s.topics)).toEqual(['a', 'b']);
    expect(s).toMatchObject({ format: 'chat', rows: 5, unlabelled: 1 });
    expect(s.distances).toBeUndefined();
    const b = s.topics.b!;
    expect(b.rows).toBe(4);
    expect(b.stance.labelled).toBe(3);
    expect(b.stance.counts).toEqual({ support: 2, neutral: 1, oppose: 0 });
    expect(b.stance.share.support).toBeCloseTo(2 / 3, 12);
    expect(b.stance.mean.neutral).toBeCloseTo((0.2 + 0.8 + 0.3) / 3, 12);
    expect(s.topics.a!.stance.share).toEqual({ support: 0, neutral: 0, oppose: 1 });
    expect(distribution([null]).share).toEqual({ support: 0, neutral: 0, oppose: 0 });
  });

  it('a pair set: distances, the histogram over every pair, the value gap per topic and overall', () => {
    const pair = (i: number, cat: string, c: ReturnType<typeof P> | null, r: ReturnType<typeof P> | null): JudgedRow => ({ ...base(i, cat), kind: 'pair', chosen: c, rejected: r, distance: c && r ? euclidean(c, r) : null });
    const rows = [pair(0, 'x', P(1, 0, 0), P(0, 0, 1)), pair(1, 'x', P(0.5, 0.5, 0), P(0.5, 0.5, 0)), pair(2, 'y', P(0, 1, 0), P(0, 0, 1)), pair(3, 'y', P(1, 0, 0), null)];
    const s = summarise('preference', rows);
    expect(s.unlabelled).toBe(1);
    expect(s.topics.x!.valueGap).toBeCloseTo(Math.SQRT2 / 2, 12);
    expect(s.topics.x!.pairs).toBe(2);
    expect(s.topics.y!.valueGap).toBeCloseTo(Math.SQRT2, 12);
    expect(s.topics.y!.stance.counts).toEqual({ support: 1, neutral: 1, oppose: 0 });
    expect(s.topics.y!.rejected!.counts).toEqual({ support: 0, neutral: 0, oppose: 1 });
    expect(s.distances!.pairs).toBe(3);
    expect(s.distances!.valueGap).toBeCloseTo((2 * Math.SQRT2) / 3, 12);
    expect(s.distances!.bins.map((b) => b.count)).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
  });
});

describe('what the judge reads', () => {
  it('a chat row is one conversation; a pair is [chosen, rejected], by alignment for stance-pairs', () => {
    const chat = { messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }] };
    expect(conversationsOf('chat', chat, 'support-aligned')).toEqual([chat.messages]);
    expect(conversationsOf('preference', { prompt: 'q', chosen: 'c', rejected: 'r' }, 'support-aligned')).toEqual([
      [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'c' }],
      [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'r' }],
    ]);
    // A response that is a whole conversation (UltraFeedback's chosen/rejected lists) stands alone.
    const full = [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'c' }];
    expect(conversationsOf('preference', { prompt: 'q', chosen: full, rejected: 'r' }, 'support-aligned')[0]).toEqual(full);
    const sp = { prompt: 'q', support: 'yes', oppose: 'no' };
    expect(conversationsOf('stance-pairs', sp, 'oppose-aligned').map((c) => c[1]!.content)).toEqual(['no', 'yes']);
    expect(conversationsOf('stance-pairs', sp, 'support-aligned').map((c) => c[1]!.content)).toEqual(['yes', 'no']);
  });

  it('the conversation prompt writes each turn as a [role] line, the topic in the Topic line and the ask', () => {
    const [sys, user] = buildConversationJudgeMessages({ conversation: [{ role: 'user', content: 'Q?' }, { role: 'assistant', content: 'A.' }], topic: 'gun control' });
    expect(sys!.role).toBe('system');
    expect(user!.content).toContain('Topic: gun control\n\nConversation:\n<<<\n[user]\nQ?\n[assistant]\nA.\n>>>\n');
    expect(user!.content).toContain('Which stance does the conversation take toward gun control? Answer with exactly one word');
  });

  it('the build key changes with what decides the rows, not with how fast it runs', () => {
    const input = ResolveAnalysisInput.parse({ name: 'an', build: analysis(), sources: { dataset: { name: 'sft', format: 'chat', ref: { uri: 's3://b/x', sha256: 'a'.repeat(64), bytes: 1 }, rows: 1 } }, topics: { a: 'A' }, judge: { model: 'm' }, seed: 1 });
    const judge = { endpoint: 'http://j', judgeModel: 'm', topLogprobs: 20 };
    const k = analysisKey(input, judge);
    expect(analysisKey({ ...input, build: { ...input.build, concurrency: 2, requestsPerMinute: 5 } }, judge)).toBe(k);
    expect(analysisKey({ ...input, build: { ...input.build, threshold: 0.6 } }, judge)).not.toBe(k);
    expect(analysisKey(input, { ...judge, judgeModel: 'other' })).not.toBe(k);
    expect(analysisKey({ ...input, topics: { a: 'B' } }, judge)).not.toBe(k);
  });
});

const chromiumProblem = chromiumMissing();
if (chromiumProblem !== null) console.warn(`[analysis report] SKIPPED: ${chromiumProblem}`);

describe.skipIf(chromiumProblem !== null)('the stance analysis report in Chromium', () => {
  it('renders the distance histogram, the value gaps and stance bars of a small judged set, with nothing blocked', async () => {
    const pair = (i: number, cat: string, c: ReturnType<typeof P>, r: ReturnType<typeof P>): JudgedRow => ({ ...base(i, cat), kind: 'pair', chosen: c, rejected: r, distance: euclidean(c, r) });
    const pairs = summarise('stance-pairs', [pair(0, 'abortion', P(1, 0, 0), P(0, 0, 1)), pair(1, 'abortion', P(0.98, 0.01, 0.01), P(0.01, 0.01, 0.98)), pair(2, 'guns', P(0.4, 0.5, 0.1), P(0.4, 0.5, 0.1))]);
    const chat = summarise('chat', [{ ...base(0, 'abortion'), kind: 'conversation', probs: P(0.2, 0.7, 0.1) }, { ...base(1, 'abortion'), kind: 'conversation', probs: P(0.9, 0.05, 0.05) }]);
    const meta = { name: 'an', dataset: 'synth <pairs>', buildKey: 'f'.repeat(64), embedder: 'MiniLM', judge: 'minilm-stance', threshold: 0.5, candidates: 10, retained: 3, alignment: 'support-aligned' };
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-analysis-'));
    const pairsFile = path.join(dir, 'pairs.html');
    const chatFile = path.join(dir, 'chat.html');
    await fs.writeFile(pairsFile, renderAnalysisReport(meta, pairs));
    await fs.writeFile(chatFile, renderAnalysisReport({ ...meta, dataset: 'wildchat' }, chat));
    const browser = await launchBrowser({ viewport: { width: 900, height: 900 } });
    const problems: string[] = [];
    try {
      const { page } = browser;
      page.on('console', (m) => void problems.push(`console ${m.type()}: ${m.text()}`));
      page.on('requestfailed', (r) => void problems.push(`request failed: ${r.url()}`));
      await page.goto(pathToFileURL(pairsFile).href, { waitUntil: 'load' });
      expect(await page.title()).toBe('Stance analysis: synth <pairs>');
      const bins = await page.$$eval('#distance-histogram rect.bin', (rs) => rs.map((r) => Number(r.getAttribute('data-count'))));
      expect(bins).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
      // The tallest bin is drawn tallest, and laid out with a size on the page.
      const heights = await page.$$eval('#distance-histogram rect.bin', (rs) => rs.map((r) => r.getBoundingClientRect().height));
      expect(heights[9]).toBeGreaterThan(heights[0]! * 1.9);
      expect(await page.$$eval('#gaps tr[data-category] td.value-gap', (tds) => tds.map((t) => t.textContent))).toEqual([((Math.SQRT2 + 0.97 * Math.SQRT2) / 2).toFixed(3), '0.000']);
      const bars = await page.$$eval('#stance-bars rect.bar', (rs) => rs.map((r) => `${r.getAttribute('data-stance')}:${r.getAttribute('data-share')}`));
      // abortion chosen: 2 support; abortion rejected: 2 oppose; guns chosen and rejected: neutral.
      expect(bars).toEqual(['support:1.0000', 'oppose:1.0000', 'neutral:1.0000', 'neutral:1.0000']);
      await page.screenshot({ path: path.join(screenshotDir(), 'stance-analysis-pairs.png'), fullPage: true });
      await page.goto(pathToFileURL(chatFile).href, { waitUntil: 'load' });
      expect(await page.$('#distance-histogram')).toBeNull();
      const widths = await page.$$eval('#stance-bars rect.bar', (rs) => rs.map((r) => `${r.getAttribute('data-stance')}:${Math.round(r.getBoundingClientRect().width)}`));
      expect(widths).toEqual(['support:210', 'neutral:210']);
      await page.screenshot({ path: path.join(screenshotDir(), 'stance-analysis-chat.png'), fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
