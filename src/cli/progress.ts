/**
 * Step progress for long CLI operations. On a TTY: one line rewritten in
 * place with the step and elapsed time. Otherwise: one plain line per
 * finished step (log-friendly). Silent for `--json`, whose stdout must hold
 * only the final JSON. Writes to stderr so stdout stays machine-readable.
 */

/** How steps are rendered. */
export type ProgressMode = 'tty' | 'plain' | 'silent';

/** A step runner the builders accept (structurally matches image's BuildProgress). */
export interface Progress {
  /** Runs `fn` as step `name`, reporting start, end and elapsed time. */
  step<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** A free-form line, e.g. "up to date". */
  note(message: string): void;
}

/** Options for {@link createProgress}. */
export interface ProgressOptions {
  /** Label shown in brackets, e.g. "image". */
  prefix: string;
  json?: boolean;
  stream?: NodeJS.WriteStream;
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/** Picks the mode from `json` and whether the stream is a TTY. */
export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const mode: ProgressMode = opts.json ? 'silent' : stream.isTTY ? 'tty' : 'plain';
  const tag = `[${opts.prefix}]`;
  return {
    note(message) {
      if (mode !== 'silent') stream.write(`${tag} ${message}\n`);
    },
    async step(name, fn) {
      const start = Date.now();
      let timer: NodeJS.Timeout | undefined;
      if (mode === 'tty') {
        const draw = () => stream.write(`\r\x1b[K${tag} ${name}... ${secs(Date.now() - start)}`);
        draw();
        timer = setInterval(draw, 200);
        timer.unref();
      }
      const finish = (outcome: string) => {
        clearInterval(timer);
        const line = `${tag} ${name}... ${outcome} (${secs(Date.now() - start)})`;
        if (mode === 'tty') stream.write(`\r\x1b[K${line}\n`);
        else if (mode === 'plain') stream.write(`${line}\n`);
      };
      try {
        const value = await fn();
        // Steps that can be served from a cache say so, e.g. `{ cached: true }`.
        const cached = typeof value === 'object' && value !== null && (value as { cached?: unknown }).cached === true;
        finish(cached ? 'cached' : 'done');
        return value;
      } catch (err) {
        finish('failed');
        throw err;
      }
    },
  };
}
