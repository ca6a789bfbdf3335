import { Context } from '@temporalio/activity';

/** The current activity's context, or undefined when called outside an activity (CLI, tests, benches). */
export function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}
