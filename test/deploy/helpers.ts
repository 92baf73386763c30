import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT } from '../helpers/env.js';
import { freePort } from '../helpers/supervisor.js';

export const execFileP = promisify(execFile);
export const DEPLOY = join(ROOT, 'deploy');

/** curl, returning status, body text and parsed JSON (when it parses). */
export async function curl(args: string[]): Promise<{ status: number; text: string; body: any }> {
  const { stdout } = await execFileP('curl', ['-sS', '-w', '\n%{http_code}', ...args], { maxBuffer: 64 * 1024 * 1024 });
  const nl = stdout.lastIndexOf('\n');
  const text = stdout.slice(0, nl);
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON (nginx error page)
  }
  return { status: Number(stdout.slice(nl + 1)), text, body };
}

/** A self-signed certificate for 127.0.0.1 in `dir`: returns the cert (also the CA) and key paths. */
export async function selfSignedCert(dir: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await execFileP('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ]);
  return { cert, key };
}

/**
 * The shipped site file, rewritten only where a test must: listen on a loopback port,
 * the test certificate, and the upstream port. Everything else is as shipped.
 */
export function rewriteSite(site: string, o: { port: number; cert: string; key: string; upstreamPort: number }): string {
  const out = site
    .replace(/^(\s*)listen 443 ssl http2;$/m, `$1listen 127.0.0.1:${o.port} ssl http2;`)
    .replace(/^\s*listen \[::\]:443 ssl http2;\n/m, '')
    .replace(/^(\s*)ssl_certificate\s+\S+;$/m, `$1ssl_certificate ${o.cert};`)
    .replace(/^(\s*)ssl_certificate_key\s+\S+;$/m, `$1ssl_certificate_key ${o.key};`)
    .replaceAll('proxy_pass http://127.0.0.1:8585;', `proxy_pass http://127.0.0.1:${o.upstreamPort};`);
  for (const must of [`127.0.0.1:${o.port} ssl`, o.cert, o.key, `127.0.0.1:${o.upstreamPort};`]) {
    if (!out.includes(must)) throw new Error(`rewriting the shipped site did not produce ${must}: has the file changed shape?`);
  }
  if (out.includes(':8585') || out.includes('listen [::]')) throw new Error('rewritten site still points at 8585 or [::]');
  return out;
}

/** A real nginx (Debian's) with its own prefix, serving the shipped site rewritten for the test. */
export class NginxProcess {
  readonly dir: string;
  child!: ChildProcess;
  port!: number;
  log = '';
  cert!: string;
  key!: string;

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'sf-nginx-'));
  }

  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  async start(upstreamPort: number): Promise<void> {
    ({ cert: this.cert, key: this.key } = await selfSignedCert(this.dir));
    this.port = await freePort();
    const site = rewriteSite(readFileSync(join(DEPLOY, 'nginx/sandforge.conf'), 'utf8'), {
      port: this.port,
      cert: this.cert,
      key: this.key,
      upstreamPort,
    });
    writeFileSync(join(this.dir, 'sandforge.conf'), site);
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs']) mkdirSync(join(this.dir, d), { recursive: true });
    // A minimal main config like Debian's: the site is included inside http {}.
    writeFileSync(
      join(this.dir, 'nginx.conf'),
      [
        'daemon off;',
        'master_process on;',
        'worker_processes 1;',
        `pid ${this.dir}/nginx.pid;`,
        `error_log ${this.dir}/logs/error.log info;`,
        'events { worker_connections 256; }',
        'http {',
        `  access_log ${this.dir}/logs/access.log;`,
        `  client_body_temp_path ${this.dir}/body;`,
        `  proxy_temp_path ${this.dir}/proxy;`,
        `  fastcgi_temp_path ${this.dir}/fastcgi;`,
        `  uwsgi_temp_path ${this.dir}/uwsgi;`,
        `  scgi_temp_path ${this.dir}/scgi;`,
        `  include ${this.dir}/sandforge.conf;`,
        '}',
        '',
      ].join('\n'),
    );
    await execFileP('nginx', ['-t', '-q', '-p', this.dir, '-c', join(this.dir, 'nginx.conf')]);
    this.child = spawn('nginx', ['-p', this.dir, '-c', join(this.dir, 'nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (b: Buffer) => (this.log += b.toString()));
    this.child.stderr!.on('data', (b: Buffer) => (this.log += b.toString()));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`nginx exited: ${this.log}`);
      const r = await curl(['--cacert', this.cert, '-o', '/dev/null', `${this.url}/nginx-probe`]).catch(() => null);
      if (r && r.status > 0) return;
      if (Date.now() > deadline) throw new Error(`nginx did not start: ${this.log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGQUIT');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
