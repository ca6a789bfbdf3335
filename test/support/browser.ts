/**
 * A headless Chromium for browser tests, driven by playwright-core. The browser is Debian's
 * (`/usr/bin/chromium`, or VALUEDRIFT_CHROMIUM), never one downloaded by `npx playwright install`
 * (there is no internet in CI). `npm test` installs it as root (infra/chromium.ts); a test without
 * it skips with `chromiumMissing()`'s message, which says how to get it.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

import { chromiumMissing } from '../../infra/chromium';
import { settings } from '../../infra/settings';


const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** The browser's path; throws, with how to get it, when the browser is not there. */
export function requireChromium(): string {
  const missing = chromiumMissing();
  if (missing !== null) throw new Error(missing);
  return settings.chromium;
}

export interface BrowserSession {
  context: BrowserContext;
  page: Page;
  /** Closes the browser and removes its profile directory; safe to call twice. */
  close(): Promise<void>;
}

/** Starts Chromium with a fresh profile directory and one page. */
export async function launchBrowser(opts: { viewport?: { width: number; height: number }; timeoutMs?: number } = {}): Promise<BrowserSession> {
  const executablePath = requireChromium();
  const userDataDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'valuedrift-chromium-'));
  let context: BrowserContext;
  try {
    // launchPersistentContext passes --user-data-dir itself (it refuses it among `args`).
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: opts.viewport ?? { width: 1400, height: 1000 },
      timeout: 60_000,
    });
  } catch (err) {
    await fsp.rm(userDataDir, { recursive: true, force: true });
    throw err;
  }
  context.setDefaultTimeout(opts.timeoutMs ?? 30_000);
  const page = context.pages()[0] ?? (await context.newPage());
  let closed = false;
  return {
    context,
    page,
    async close() {
      if (closed) return;
      closed = true;
      try {
        await context.close();
      } finally {
        await fsp.rm(userDataDir, { recursive: true, force: true });
      }
    },
  };
}

/** Where browser tests leave screenshots (kept after the run, for people to look at). */
export function screenshotDir(): string {
  const dir = process.env.VALUEDRIFT_SCREENSHOT_DIR ?? path.join(os.tmpdir(), 'valuedrift-screenshots');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
