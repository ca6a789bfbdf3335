/**
 * A small scripted OpenAI-compatible server on 127.0.0.1 (port 0) for judge tests and the bench:
 * real HTTP through the real openai client, so retries, timeouts and headers are exercised as they
 * are in production. Chat completions follow a per-test script; files and batches are kept in
 * memory and a batch completes after a set number of polls.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

export interface ChatRequestBody {
  model: string;
  messages: Array<{ role: string; content: string }>;
  temperature?: number;
  logprobs?: boolean;
  top_logprobs?: number;
  max_tokens?: number;
  max_completion_tokens?: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** performance.now() when the request arrived. */
  receivedAt: number;
  headers: IncomingMessage['headers'];
  body: string;
}

export type Reply =
  /** A JSON reply, optionally after a delay (simulated latency). */
  | { kind: 'json'; status?: number; headers?: Record<string, string>; body: unknown; delayMs?: number }
  /** Accept the request and never answer: the client's timeout must fire. */
  | { kind: 'hang' }
  /** Drop the connection without a response: a connection error on the client. */
  | { kind: 'reset' };

/** `n` is the 0-based index of this chat request among all chat requests the server received. */
export type ChatScript = (body: ChatRequestBody, n: number) => Reply | Promise<Reply>;

export interface FakeServerOptions {
  chat?: ChatScript;
  /** Batch polls answered "in_progress" before the batch reports "completed". */
  batchPollsUntilDone?: number;
  /** Make every batch fail validation instead of running. */
  batchFails?: boolean;
}

export interface FakeServer {
  baseURL: string;
  requests: RecordedRequest[];
  /** Chat requests only, in arrival order. */
  chatRequests: RecordedRequest[];
  readonly maxInFlight: number;
  files: Map<string, { filename: string; purpose: string; content: string }>;
  batches: Map<string, FakeBatch>;
  close(): Promise<void>;
}

interface FakeBatch {
  id: string;
  object: 'batch';
  endpoint: string;
  input_file_id: string;
  completion_window: string;
  status: 'validating' | 'in_progress' | 'finalizing' | 'completed' | 'failed' | 'expired' | 'cancelling' | 'cancelled';
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  request_counts: { total: number; completed: number; failed: number };
  errors?: { object: 'list'; data: Array<{ code: string; message: string; line: number | null; param: string | null }> };
  polls: number;
}

/** A chat completion whose first output token has these top alternatives (the first one is "chosen"). */
export function completionWith(top: ReadonlyArray<readonly [string, number]>, model = 'fake-judge'): unknown {
  const chosen = top[0] ?? ['', 0];
  return {
    id: `chatcmpl-${randomUUID()}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: chosen[0], refusal: null },
        finish_reason: 'length',
        logprobs: {
          content: [
            {
              token: chosen[0],
              logprob: chosen[1],
              bytes: null,
              top_logprobs: top.map(([token, logprob]) => ({ token, logprob, bytes: null })),
            },
          ],
          refusal: null,
        },
      },
    ],
    usage: { prompt_tokens: 100, completion_tokens: 1, total_tokens: 101 },
  };
}

export const ok = (top: ReadonlyArray<readonly [string, number]>, delayMs?: number): Reply => ({
  kind: 'json',
  body: completionWith(top),
  ...(delayMs === undefined ? {} : { delayMs }),
});

export const apiError = (status: number, message: string, headers?: Record<string, string>): Reply => ({
  kind: 'json',
  status,
  body: { error: { message, type: status === 429 ? 'rate_limit_exceeded' : 'server_error', code: null, param: null } },
  ...(headers === undefined ? {} : { headers }),
});

/** Default script: a confident "support" answer for everything. */
export const alwaysSupport: ChatScript = () => ok([[' support', -0.1], [' neutral', -2.5], [' oppose', -4]]);

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Just enough multipart/form-data parsing for the files API: field name → text content (+ filename). */
function parseMultipart(body: Buffer, contentType: string): Map<string, { value: string; filename?: string }> {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
  const boundary = m?.[1] ?? m?.[2];
  const out = new Map<string, { value: string; filename?: string }>();
  if (boundary === undefined) return out;
  const text = body.toString('utf8');
  for (const part of text.split(`--${boundary}`)) {
    const sep = part.indexOf('\r\n\r\n');
    if (sep < 0) continue;
    const head = part.slice(0, sep);
    const name = /name="([^"]+)"/.exec(head)?.[1];
    if (name === undefined) continue;
    const filename = /filename="([^"]*)"/.exec(head)?.[1];
    const value = part.slice(sep + 4).replace(/\r\n$/, '');
    out.set(name, filename === undefined ? { value } : { value, filename });
  }
  return out;
}

export async function startFakeServer(opts: FakeServerOptions = {}): Promise<FakeServer> {
  const chat = opts.chat ?? alwaysSupport;
  const requests: RecordedRequest[] = [];
  const chatRequests: RecordedRequest[] = [];
  const files = new Map<string, { filename: string; purpose: string; content: string }>();
  const batches = new Map<string, FakeBatch>();
  const sockets = new Set<Socket>();
  let inFlight = 0;
  let maxInFlight = 0;
  let chatCount = 0;

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    if (res.destroyed) return;
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'content-type': typeof body === 'string' ? 'application/octet-stream' : 'application/json', ...headers });
    res.end(text);
  };

  const runBatch = async (batch: FakeBatch): Promise<void> => {
    const input = files.get(batch.input_file_id)?.content ?? '';
    const outLines: string[] = [];
    const errLines: string[] = [];
    for (const line of input.split('\n').filter((l) => l.trim() !== '')) {
      const req = JSON.parse(line) as { custom_id: string; body: ChatRequestBody };
      const reply = await chat(req.body, chatCount++);
      batch.request_counts.total++;
      if (reply.kind === 'json' && (reply.status ?? 200) === 200) {
        batch.request_counts.completed++;
        outLines.push(JSON.stringify({ id: `br-${randomUUID()}`, custom_id: req.custom_id, response: { status_code: 200, request_id: randomUUID(), body: reply.body }, error: null }));
      } else {
        batch.request_counts.failed++;
        const status = reply.kind === 'json' ? (reply.status ?? 500) : 500;
        errLines.push(JSON.stringify({ id: `br-${randomUUID()}`, custom_id: req.custom_id, response: { status_code: status, request_id: randomUUID(), body: reply.kind === 'json' ? reply.body : {} }, error: null }));
      }
    }
    const outId = `file-${randomUUID()}`;
    files.set(outId, { filename: 'output.jsonl', purpose: 'batch_output', content: outLines.join('\n') + (outLines.length ? '\n' : '') });
    batch.output_file_id = outId;
    if (errLines.length > 0) {
      const errId = `file-${randomUUID()}`;
      files.set(errId, { filename: 'errors.jsonl', purpose: 'batch_output', content: errLines.join('\n') + '\n' });
      batch.error_file_id = errId;
    }
  };

  const publicBatch = (b: FakeBatch): Omit<FakeBatch, 'polls'> => {
    const { polls: _polls, ...rest } = b;
    return rest;
  };

  const server = createServer((req, res) => {
    const receivedAt = performance.now();
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let counted = true;
    const release = (): void => {
      if (counted) {
        counted = false;
        inFlight--;
      }
    };
    res.on('close', release);
    void (async () => {
      const raw = await readBody(req);
      const path = (req.url ?? '/').split('?')[0] as string;
      const rec: RecordedRequest = { method: req.method ?? 'GET', path, receivedAt, headers: req.headers, body: raw.toString('utf8') };
      requests.push(rec);

      if (req.method === 'POST' && path.endsWith('/chat/completions')) {
        chatRequests.push(rec);
        const reply = await chat(JSON.parse(rec.body) as ChatRequestBody, chatCount++);
        if (reply.kind === 'hang') return;
        if (reply.kind === 'reset') {
          req.socket.destroy();
          return;
        }
        if (reply.delayMs !== undefined) await new Promise((r) => setTimeout(r, reply.delayMs));
        send(res, reply.status ?? 200, reply.body, reply.headers);
        return;
      }
      if (req.method === 'GET' && path.endsWith('/models')) {
        send(res, 200, { object: 'list', data: [{ id: 'fake-judge', object: 'model', created: 0, owned_by: 'test' }] });
        return;
      }
      if (req.method === 'POST' && path.endsWith('/files')) {
        const parts = parseMultipart(raw, req.headers['content-type'] ?? '');
        const file = parts.get('file');
        const id = `file-${randomUUID()}`;
        files.set(id, { filename: file?.filename ?? 'upload', purpose: parts.get('purpose')?.value ?? '', content: file?.value ?? '' });
        send(res, 200, { id, object: 'file', bytes: Buffer.byteLength(file?.value ?? ''), created_at: 0, filename: file?.filename ?? 'upload', purpose: parts.get('purpose')?.value ?? '', status: 'processed' });
        return;
      }
      const content = /\/files\/([^/]+)\/content$/.exec(path);
      if (req.method === 'GET' && content !== null) {
        const f = files.get(content[1] as string);
        if (f === undefined) send(res, 404, { error: { message: 'no such file', type: 'invalid_request_error' } });
        else send(res, 200, f.content);
        return;
      }
      if (req.method === 'POST' && path.endsWith('/batches')) {
        const b = JSON.parse(rec.body) as { input_file_id: string; endpoint: string; completion_window: string };
        const batch: FakeBatch = {
          id: `batch_${randomUUID()}`,
          object: 'batch',
          endpoint: b.endpoint,
          input_file_id: b.input_file_id,
          completion_window: b.completion_window,
          status: 'validating',
          output_file_id: null,
          error_file_id: null,
          created_at: Math.floor(Date.now() / 1000),
          request_counts: { total: 0, completed: 0, failed: 0 },
          polls: 0,
        };
        batches.set(batch.id, batch);
        send(res, 200, publicBatch(batch));
        return;
      }
      const batchPath = /\/batches\/([^/]+)(\/cancel)?$/.exec(path);
      if (batchPath !== null) {
        const batch = batches.get(batchPath[1] as string);
        if (batch === undefined) {
          send(res, 404, { error: { message: 'no such batch', type: 'invalid_request_error' } });
          return;
        }
        if (batchPath[2] !== undefined) {
          batch.status = 'cancelled';
        } else if (batch.status === 'validating' || batch.status === 'in_progress') {
          batch.polls++;
          batch.status = 'in_progress';
          if (opts.batchFails === true) {
            batch.status = 'failed';
            batch.errors = { object: 'list', data: [{ code: 'invalid_request', message: 'model not available for batch', line: 1, param: 'body.model' }] };
          } else if (batch.polls > (opts.batchPollsUntilDone ?? 2)) {
            await runBatch(batch);
            batch.status = 'completed';
          }
        }
        send(res, 200, publicBatch(batch));
        return;
      }
      send(res, 404, { error: { message: `no route ${req.method} ${path}`, type: 'invalid_request_error' } });
    })().catch((err: unknown) => send(res, 500, { error: { message: String(err), type: 'server_error' } }));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // Many concurrent keep-alive connections (the bench runs 32); Node's defaults are fine, but
  // headers must not time out while a request deliberately hangs in a timeout test.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    chatRequests,
    get maxInFlight() {
      return maxInFlight;
    },
    files,
    batches,
    close: () =>
      new Promise<void>((resolve) => {
        // Hanging requests would keep close() waiting forever.
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
