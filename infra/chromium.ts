/**
 * The browser test's Chromium (test/browser): Debian's package, never a browser downloaded by a test
 * tool (CI has no internet beyond the package mirrors). `npm test` installs it when it is missing
 * and it can (root, apt-get present); otherwise it says what is missing and how to get it, and the
 * browser test skips with the same message.
 */
import fs from 'node:fs';

import { type LogFn, runCommand } from './proc';
import { DEFAULT_CHROMIUM, settings } from './settings';

/** What to run (as root) to get the browser. */
export const CHROMIUM_INSTALL_HINT = 'apt-get update && apt-get install -y chromium';
const APT_TIMEOUT_MS = 15 * 60_000;

function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Why the browser test cannot run here, or null when the browser is there. */
export function chromiumMissing(chromium: string = settings.chromium): string | null {
  if (executable(chromium)) return null;
  return (
    `Chromium not found at ${chromium}: the browser test needs Debian's Chromium. ` +
    `Install it as root with \`${CHROMIUM_INSTALL_HINT}\` (npm test does this itself when run as root), ` +
    'or point VALUEDRIFT_CHROMIUM at another Chromium build'
  );
}

function aptGet(): string | null {
  return ['/usr/bin/apt-get', '/bin/apt-get'].find(executable) ?? null;
}

/**
 * Makes sure the browser is there: installs Debian's `chromium` when it is missing and this process
 * can (root, apt-get present, the default path asked for). Never throws: returns why the browser
 * test will skip, or null when the browser is there.
 */
export async function ensureChromium(log: LogFn): Promise<string | null> {
  const missing = chromiumMissing();
  if (missing === null) return null;
  const apt = aptGet();
  const root = process.getuid?.() === 0;
  if (settings.chromium !== DEFAULT_CHROMIUM || apt === null || !root) {
    const why = apt === null ? 'no apt-get here' : !root ? 'not root' : `VALUEDRIFT_CHROMIUM=${settings.chromium} is not the Debian package's path`;
    log(`chromium: missing and not installed by npm test (${why}); the browser test will be skipped. ${missing}`);
    return missing;
  }
  log("chromium: missing; installing Debian's chromium package for the browser test (apt-get, as root; a minute or two)");
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', 'chromium']]) {
    const res = await runCommand(apt, args, { env, timeoutMs: APT_TIMEOUT_MS, keepChars: 4_000 });
    if (res.code !== 0) {
      const tail = (res.stderr || res.stdout).trim().split('\n').slice(-5).join('\n');
      log(`chromium: apt-get ${args.join(' ')} failed (exit ${res.code ?? res.signal}); the browser test will be skipped.\n${tail}`);
      return chromiumMissing() ?? null;
    }
  }
  const after = chromiumMissing();
  log(after === null ? `chromium: installed at ${settings.chromium}` : `chromium: apt-get finished but ${after}`);
  return after;
}
