import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { costOf, loadPriceTable, UsageTally } from '../../activities/evaluation/usage';
import { createJudgeClient } from '../../activities/judge/client';
import { renderLineageReport } from '../../activities/report/html';
import { usageOf } from '../../activities/judge/batch';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let server: Server | undefined;
afterEach(() => server?.close());

describe('judge token accounting', () => {
  it('counts the usage of every online completion the judge client receives', async () => {
    let n = 0;
    server = createServer((_req, res) => {
      n++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ id: 'x', object: 'chat.completion', created: 0, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'support' }, finish_reason: 'length' }], usage: { prompt_tokens: 100 + n, completion_tokens: 1 } }));
    });
    await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
    const tally = new UsageTally();
    const client = createJudgeClient({ baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, apiKey: 'k' }).withOptions({ fetch: tally.fetch });
    for (let i = 0; i < 3; i++) await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
    expect(await tally.counts()).toEqual({ calls: 3, promptTokens: 101 + 102 + 103, completionTokens: 3 });
  });

  it('reads usage defensively', () => {
    expect(usageOf({ usage: { prompt_tokens: 12, completion_tokens: 1 } })).toEqual({ promptTokens: 12, completionTokens: 1 });
    expect(usageOf({ usage: { prompt_tokens: -3, completion_tokens: 'x' } })).toEqual({ promptTokens: 0, completionTokens: 0 });
    expect(usageOf(null)).toEqual({ promptTokens: 0, completionTokens: 0 });
  });

  it('prices tokens with lineage plan’s table, batch tokens at the discount, and honours an override file', async () => {
    const prices = await loadPriceTable(undefined);
    const online = { calls: 1, promptTokens: 1_000_000, completionTokens: 1_000_000 };
    const c = costOf('gpt-4o', online, online, prices);
    expect(c.online).toBeCloseTo(2.5 + 10);
    expect(c.batch).toBeCloseTo((2.5 + 10) / 2);
    expect(c.total).toBeCloseTo(12.5 * 1.5);
    expect(costOf('unknown-judge', online, online, prices)).toMatchObject({ total: null });
    const dir = mkdtempSync(join(tmpdir(), 'vd-prices-'));
    const file = join(dir, 'prices.json');
    writeFileSync(file, JSON.stringify({ judge: { 'gpt-4o': { inputPerMillion: 1, outputPerMillion: 2, batchDiscount: 0.25, source: 'test' } } }));
    const over = await loadPriceTable(file);
    expect(costOf('gpt-4o', online, online, over).total).toBeCloseTo(3 + 3 * 0.75);
    writeFileSync(file, JSON.stringify({ judge: { 'gpt-4o': { inputPerMillion: -1 } } }));
    await expect(loadPriceTable(file)).rejects.toThrow(/VALUEDRIFT_PRICES_FILE/);
    rmSync(dir, { recursive: true, force: true });
  });

  it('the report shows the lineage’s judge tokens and cost', async () => {
    const out = await renderLineageReport({
      lineage: 'l',
      stages: [],
      generatedAt: '2026-01-01T00:00:00Z',
      judgeUsage: { rows: [{ judgeModel: 'gpt-4o', evaluations: 2, online: { calls: 4, promptTokens: 400, completionTokens: 4 }, batch: { calls: 16, promptTokens: 1600, completionTokens: 16 }, currency: 'USD', cost: 0.0031 }], unknown: 1 },
    });
    expect(out.html).toContain('<h2>Judge tokens and cost</h2>');
    expect(out.html).toContain('<td data-k="batch-input">1,600</td>');
    expect(out.html).toContain('<td data-k="cost">USD 0.0031</td>');
    expect(out.html).toContain('1 evaluation predate token counting');
  });
});
