/** Where GC and `du` report how far they are; the CLI draws it, the server ignores it. */
export interface Progress {
  /** Starts a phase; with `total`, a bar, without, a running count. */
  phase(name: string, total?: number): void;
  advance(n?: number): void;
  /** Clears what was drawn. */
  finish(): void;
}

export const silentProgress: Progress = {
  phase: () => undefined,
  advance: () => undefined,
  finish: () => undefined,
};

const BAR_WIDTH = 28;
const REDRAW_MS = 100;

/** A one-line progress bar redrawn in place on a terminal (stderr), at most ten times a second. */
export class TerminalProgress implements Progress {
  private name = '';
  private total: number | undefined;
  private done = 0;
  private drawnAt = 0;
  private drawn = false;

  constructor(private readonly out: NodeJS.WriteStream) {}

  phase(name: string, total?: number): void {
    this.name = name;
    this.total = total;
    this.done = 0;
    this.draw(true);
  }

  advance(n = 1): void {
    this.done += n;
    this.draw(this.total !== undefined && this.done >= this.total);
  }

  finish(): void {
    if (this.drawn) this.out.write('\r\x1b[2K');
    this.drawn = false;
  }

  private draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.drawnAt < REDRAW_MS) return;
    this.drawnAt = now;
    let line: string;
    if (this.total === undefined || this.total === 0) {
      line = `${this.name}: ${this.done}`;
    } else {
      const ratio = Math.min(1, this.done / this.total);
      const filled = Math.round(ratio * BAR_WIDTH);
      const bar = `${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}`;
      line = `${this.name} [${bar}] ${this.done}/${this.total} ${Math.floor(ratio * 100)}%`;
    }
    const width = this.out.columns > 0 ? this.out.columns - 1 : 79;
    this.out.write(`\r\x1b[2K${line.slice(0, width)}`);
    this.drawn = true;
  }
}
