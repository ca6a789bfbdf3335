/**
 * Process groups: the one home of the helpers that signal, probe and stop a group of processes we
 * started detached (the trainer with its accelerate ranks and dataloader workers; the local stack's
 * servers). Pure Node, no project imports, so both activities/ and infra/ use it.
 */

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Sends `signal` to every process in group `pgid`. False when the group is already gone. */
export function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Whether any process is left in process group `pgid`. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    // EPERM: the group exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits up to `ms` for group `pgid` to be empty; true when it is. */
export async function waitForGroupExit(pgid: number, ms: number, pollMs = 50): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (groupAlive(pgid)) {
    if (Date.now() >= deadline) return false;
    await sleep(pollMs);
  }
  return true;
}

/**
 * Stops group `pgid`: SIGTERM, then SIGKILL for whatever is left after `graceMs`, then waits (up to
 * `reapMs`) until the group is empty, so nothing it started outlives the caller.
 */
export async function terminateGroup(pgid: number, graceMs: number, reapMs = 5_000): Promise<'gone' | 'stopped' | 'killed'> {
  if (!killGroup(pgid, 'SIGTERM')) return 'gone';
  if (await waitForGroupExit(pgid, graceMs, 100)) return 'stopped';
  killGroup(pgid, 'SIGKILL');
  await waitForGroupExit(pgid, reapMs);
  return 'killed';
}
