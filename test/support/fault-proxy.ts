/**
 * A TCP fault proxy for fault tests: services connect to the proxy, the proxy connects to the real server (a Kafka
 * broker, a PostgreSQL server), and a test switches faults on and off while the services run.
 *
 * Modes, each for a given duration or until `heal()`:
 * - `drop`: a blackhole. Nothing is forwarded in either direction and new connections get no upstream; what was
 *   sent waits (as TCP would retransmit it) and flows again when the fault ends. Clients see requests time out.
 * - `delay`: every chunk is held `latencyMs` before it is forwarded, in order.
 * - `reset`: every open connection is reset (RST), and new ones are reset at once while the fault lasts.
 * - `slow`: each direction of each connection is throttled to `bytesPerSecond`.
 *
 * Only loopback addresses are used: the proxy listens on 127.0.0.1 and forwards to a loopback upstream.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export type FaultMode =
  | { readonly kind: 'pass' }
  | { readonly kind: 'drop' }
  | { readonly kind: 'delay'; readonly latencyMs: number }
  | { readonly kind: 'reset' }
  | { readonly kind: 'slow'; readonly bytesPerSecond: number };

export interface FaultProxyOptions {
  readonly upstreamHost?: string;
  readonly upstreamPort: number;
  /** Port to listen on; 0 (the default) picks a free one. A Kafka broker must advertise this port. */
  readonly listenPort?: number;
  readonly name?: string;
}

export interface FaultProxy {
  readonly port: number;
  /** `127.0.0.1:<port>`. */
  readonly address: string;
  readonly mode: FaultMode;
  /** Connections accepted so far (a reconnecting client shows up here). */
  readonly accepted: number;
  /** Switches to `mode` now; with `durationMs`, back to `pass` after it (the returned promise resolves then). */
  fault(mode: FaultMode, durationMs?: number): Promise<void>;
  /** Back to forwarding everything; held data flows again. */
  heal(): void;
  /** Points the proxy at another upstream port (a restarted server on a new port); open connections are reset. */
  retarget(upstreamPort: number): void;
  close(): Promise<void>;
}

const PASS: FaultMode = { kind: 'pass' };

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const proxy = new Proxy(options);
  await proxy.listen(options.listenPort ?? 0);
  return proxy;
}

/** One direction of a connection: reads from `from`, writes to `to`, shaped by the proxy's mode of the moment. */
class Pipe {
  private queue: { chunk: Buffer; at: number }[] = [];
  private pumping = false;

  constructor(private readonly proxy: Proxy, private readonly from: Socket, private readonly to: Socket) {
    from.on('data', (chunk: Buffer) => {
      this.queue.push({ chunk, at: Date.now() });
      // Backpressure: a held or throttled pipe stops reading, so the sender's kernel buffers fill as on a real link.
      if (this.queue.length > 64) from.pause();
      void this.pump();
    });
  }

  /** Called when the mode changes, so held data moves on. */
  kick(): void {
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.to.destroyed) {
        const mode = this.proxy.mode;
        if (mode.kind === 'drop' || mode.kind === 'reset') return;
        const { chunk, at } = this.queue.shift()!;
        // Latency counts from the chunk's arrival, so a stream of chunks is delayed, not also slowed down.
        if (mode.kind === 'delay') await sleep(Math.max(0, at + mode.latencyMs - Date.now()));
        if (mode.kind === 'slow') await this.throttled(chunk, mode.bytesPerSecond);
        else this.to.write(chunk);
        if (this.queue.length <= 16) this.from.resume();
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Writes in slices of a tenth of a second's worth, so a big chunk trickles rather than arriving in one go. */
  private async throttled(chunk: Buffer, bytesPerSecond: number): Promise<void> {
    const slice = Math.max(1, Math.floor(bytesPerSecond / 10));
    for (let at = 0; at < chunk.length && !this.to.destroyed; at += slice) {
      const part = chunk.subarray(at, at + slice);
      this.to.write(part);
      await sleep(Math.ceil((part.length / bytesPerSecond) * 1000));
    }
  }
}

class Proxy implements FaultProxy {
  private server: Server | undefined;
  private current: FaultMode = PASS;
  private readonly sockets = new Set<Socket>();
  private readonly pipes = new Set<Pipe>();
  /** Connections accepted during a drop, waiting for the fault to end before they get an upstream. */
  private held: Socket[] = [];
  private healTimer: NodeJS.Timeout | undefined;
  private upstreamPort: number;
  private listenPort = 0;
  accepted = 0;

  constructor(private readonly options: FaultProxyOptions) {
    this.upstreamPort = options.upstreamPort;
  }

  get port(): number {
    return this.listenPort;
  }

  get address(): string {
    return `127.0.0.1:${this.listenPort}`;
  }

  get mode(): FaultMode {
    return this.current;
  }

  listen(port: number): Promise<void> {
    const server = createServer((client) => this.accept(client));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        const address = server.address();
        this.listenPort = typeof address === 'object' && address !== null ? address.port : port;
        resolve();
      });
    });
  }

  fault(mode: FaultMode, durationMs?: number): Promise<void> {
    clearTimeout(this.healTimer);
    this.current = mode;
    if (mode.kind === 'reset') this.resetAll();
    this.kickAll();
    if (durationMs === undefined) return Promise.resolve();
    return new Promise((resolve) => {
      this.healTimer = setTimeout(() => {
        this.heal();
        resolve();
      }, durationMs);
    });
  }

  heal(): void {
    clearTimeout(this.healTimer);
    this.current = PASS;
    const waiting = this.held;
    this.held = [];
    for (const client of waiting) if (!client.destroyed) this.bridge(client);
    this.kickAll();
  }

  retarget(upstreamPort: number): void {
    this.upstreamPort = upstreamPort;
    this.resetAll();
  }

  async close(): Promise<void> {
    clearTimeout(this.healTimer);
    this.resetAll();
    for (const client of this.held) client.destroy();
    this.held = [];
    const server = this.server;
    if (server === undefined) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    this.accepted += 1;
    this.track(client);
    client.on('error', () => undefined);
    if (this.current.kind === 'reset') {
      client.resetAndDestroy();
      return;
    }
    if (this.current.kind === 'drop') {
      this.held.push(client);
      return;
    }
    this.bridge(client);
  }

  private bridge(client: Socket): void {
    const upstream = connect({ host: this.options.upstreamHost ?? '127.0.0.1', port: this.upstreamPort });
    this.track(upstream);
    // A failed upstream (server down) is passed on as a reset, as a client connecting directly would see it.
    upstream.on('error', () => client.destroyed || client.resetAndDestroy());
    client.on('error', () => upstream.destroyed || upstream.resetAndDestroy());
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    const pipes = [new Pipe(this, client, upstream), new Pipe(this, upstream, client)];
    for (const pipe of pipes) this.pipes.add(pipe);
    client.once('close', () => pipes.forEach((p) => this.pipes.delete(p)));
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private resetAll(): void {
    for (const socket of this.sockets) if (!socket.destroyed) socket.resetAndDestroy();
  }

  private kickAll(): void {
    for (const pipe of this.pipes) pipe.kick();
  }
}
