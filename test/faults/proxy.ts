/**
 * A forwarding HTTP proxy for fault injection: the workers talk to it instead of the S3 server or
 * the judge, and it forwards every request unchanged to the real server behind it. Hooks see each
 * request (method, path, body for the judge) before it is forwarded and each answer before it goes
 * back; a hook may hold it (await), answer it itself (429/5xx), or drop the connection. That is how
 * the suite finds the moment of a fault (the first PUT of a checkpoint file, the publish of a
 * manifest, the n-th judge call) instead of sleeping, and how the judge is made to misbehave.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProxyRequest {
  method: string;
  /** Path and query as the client sent them. */
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** What a request hook decides. */
export type RequestAction =
  | { kind: 'forward' }
  /** Answer with this status (and body) without forwarding: the real server never sees it. */
  | { kind: 'answer'; status: number; headers?: Record<string, string>; body?: string }
  /** Never answer; the client gives up on its own timeout (or the connection is dropped at close). */
  | { kind: 'hang' }
  /** Destroy the client's connection without an answer. */
  | { kind: 'drop' };

export interface ProxyHooks {
  onRequest?(req: ProxyRequest): Promise<RequestAction> | RequestAction;
  /** After the real server answered `status`; `drop` destroys the client's connection instead of answering. */
  onResponse?(req: ProxyRequest, status: number): Promise<'pass' | 'drop'> | 'pass' | 'drop';
}

export interface ForwardRecord {
  t: number;
  method: string;
  url: string;
  /** sha256 of the request body. */
  bodySha: string;
  status: number;
}

export class FaultProxy {
  readonly forwarded: ForwardRecord[] = [];
  hooks: ProxyHooks = {};
  private server: http.Server;
  private hanging = new Set<http.ServerResponse>();
  port = 0;

  constructor(private upstream: string) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 1_000;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    try {
      for await (const c of req) chunks.push(c as Buffer);
    } catch {
      res.destroy();
      return;
    }
    const pr: ProxyRequest = { method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body: Buffer.concat(chunks) };
    const action = (await this.hooks.onRequest?.(pr)) ?? { kind: 'forward' };
    if (action.kind === 'drop') return void res.destroy();
    if (action.kind === 'hang') {
      this.hanging.add(res);
      res.on('close', () => this.hanging.delete(res));
      return;
    }
    if (action.kind === 'answer') {
      res.writeHead(action.status, { 'content-type': 'application/json', ...(action.headers ?? {}) });
      res.end(action.body ?? JSON.stringify({ error: { message: `fault proxy: ${action.status}` } }));
      return;
    }
    const target = new URL(pr.url, this.upstream);
    const headers = { ...req.headers };
    delete headers['host'];
    delete headers['connection'];
    headers['content-length'] = String(pr.body.length);
    delete headers['transfer-encoding'];
    const up = http.request(target, { method: pr.method, headers: { ...headers, host: target.host } }, (upRes) => {
      const upChunks: Buffer[] = [];
      upRes.on('data', (c: Buffer) => upChunks.push(c));
      upRes.on('error', () => res.destroy());
      upRes.on('end', () => {
        const status = upRes.statusCode ?? 502;
        this.forwarded.push({ t: Date.now(), method: pr.method, url: pr.url, bodySha: createHash('sha256').update(pr.body).digest('hex'), status });
        void (async () => {
          const decision = (await this.hooks.onResponse?.(pr, status)) ?? 'pass';
          if (decision === 'drop') return void res.destroy();
          const out = { ...upRes.headers };
          delete out['transfer-encoding'];
          delete out['connection'];
          res.writeHead(status, out);
          res.end(Buffer.concat(upChunks));
        })();
      });
    });
    // The real server is down (stopped for a fault): the client sees its connection reset.
    up.on('error', () => res.destroy());
    up.end(pr.body);
  }
}
