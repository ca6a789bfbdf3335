/**
 * The page `lineage compare` writes, opened in headless Chromium: three real finished lineages (two
 * DPO branches, support- and oppose-aligned, and a SimPO one; test/fixtures/compare/harness.ts)
 * compared through the CLI's entry point; the local copy must render the Tab. 1 table with every
 * column group and cell, and one trajectory plot (SVG with a line per stage) per topic and stance,
 * without a console error or a blocked request.
 *
 * Needs the local stack's S3 server (`npm test` or `npm run dev:up`; `.data/stack.env`) and
 * Debian's Chromium (/usr/bin/chromium or VALUEDRIFT_CHROMIUM); without the browser it skips,
 * saying what is missing.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { chromiumMissing } from '../../infra/chromium';
import { STANCES } from '../../common/contracts';
import type { CompareJson } from '../../worker/compare';
import { launchBrowser, screenshotDir, type BrowserSession } from '../support/browser';
import { useComparedLineages } from '../fixtures/compare/harness';

const chromiumProblem = chromiumMissing();
if (chromiumProblem !== null) console.warn(`[compare] SKIPPED: ${chromiumProblem}`);

describe.skipIf(chromiumProblem !== null)('lineage compare page in Chromium', () => {
  const h = useComparedLineages('vd-compare-browser-');
  let browser: BrowserSession | undefined;
  afterEach(async () => {
    await browser?.close();
    browser = undefined;
  });

  it('renders the table and the trajectory plots of two DPO branches and a SimPO lineage', async () => {
    const names = h.lineages.map((l) => l.name);
    const out = path.join(h.dir, 'reports');
    const run = await h.lineage(['compare', ...names, '--json', '--out', out]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout) as CompareJson;
    expect(doc.stages.map((s) => s.label)).toEqual([
      'SFT × sft-chat',
      'DPO × stance-pairs (support-aligned)',
      'SFT × sft-chat',
      'DPO × stance-pairs (oppose-aligned)',
      'SFT × sft-chat',
      'SimPO × stance-pairs (support-aligned)',
    ]);
    const categories = Object.keys(doc.topics);
    expect(categories.length).toBeGreaterThan(0);
    expect((await fs.stat(doc.localCopy)).isFile()).toBe(true);

    browser = await launchBrowser({ viewport: { width: 1400, height: 1000 } });
    const { page } = browser;
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
    await page.goto(pathToFileURL(doc.localCopy).href, { waitUntil: 'load' });

    // The table: one column group per stage, labelled algorithm × dataset; M and η per stance.
    const groups = page.locator('table.compare thead th.group');
    expect(await groups.count()).toBe(doc.stages.length);
    for (const [i, s] of doc.stages.entries()) {
      const label = await groups.nth(i).innerText();
      expect(label).toContain(s.label);
      expect(label).toContain(s.key);
    }
    expect(await page.locator('table.compare tbody tr').count()).toBe(categories.length);
    for (const category of categories) {
      for (const s of doc.stages) {
        for (const stance of STANCES) {
          const sd = doc.topics[category]?.[s.key]?.stances[stance];
          const cell = (metric: string) => page.locator(`td[data-stage="${s.key}"][data-topic="${category}"][data-stance="${stance}"][data-metric="${metric}"]`);
          expect(await cell('M').count()).toBe(1);
          if (!sd) continue;
          const m = await cell('M').innerText();
          expect(Number(m.replace(/^[↑↓→]/, ''))).toBeCloseTo(sd.M, 2);
          expect(Number(await cell('eta').innerText())).toBeCloseTo(sd.eta, 2);
          expect(await cell('M').isVisible()).toBe(true);
        }
      }
    }

    // The plots: one per topic × stance, each an SVG with a band and a line per stage that has the topic.
    const figures = page.locator('figure.panel');
    expect(await figures.count()).toBe(categories.length * STANCES.length);
    for (const category of categories) {
      for (const stance of STANCES) {
        const fig = page.locator(`figure.panel[data-topic="${category}"][data-stance="${stance}"]`);
        expect(await fig.locator('svg').count()).toBe(1);
        const box = await fig.locator('svg').boundingBox();
        expect(box?.width ?? 0).toBeGreaterThan(150);
        expect(box?.height ?? 0).toBeGreaterThan(100);
        const withTopic = doc.stages.filter((s) => doc.topics[category]?.[s.key]).length;
        // Vega draws each line and each band as one path per series.
        expect(await fig.locator('svg g.mark-line path').count()).toBe(withTopic);
        expect(await fig.locator('svg g.mark-area path').count()).toBe(withTopic);
      }
    }
    await page.screenshot({ path: path.join(screenshotDir(), 'compare-page.png'), fullPage: true });
    expect(problems).toEqual([]);
  });
});
