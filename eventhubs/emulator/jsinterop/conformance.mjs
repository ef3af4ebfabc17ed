// conformance.mjs — the node side of the emulator's JavaScript SDK
// conformance suite (see doc.go). Each run performs one operation with the
// official @azure/event-hubs SDK and prints one JSON line with what the SDK
// returned; the Go tests start the emulator binary, run this script and
// assert on that line. The script itself asserts nothing.
//
//	node conformance.mjs <operation> < spec.json
//
// The SDK is loaded from $ISOBROKER_JSSDK_DIR (the folder
// scripts/install-jssdk.sh installs into). Bodies travel as base64. A run
// that does not finish within spec.timeoutMs (default 30 s) exits non-zero.
import { createRequire } from "node:module";
import { join } from "node:path";

const dir = process.env.ISOBROKER_JSSDK_DIR;
if (!dir) {
  fail("ISOBROKER_JSSDK_DIR is not set (the folder scripts/install-jssdk.sh installs into)");
}
const require = createRequire(join(dir, "package.json"));
const {
  EventHubProducerClient,
  EventHubConsumerClient,
  earliestEventPosition,
  latestEventPosition,
} = require("@azure/event-hubs");

function fail(msg) {
  process.stderr.write(`conformance.mjs: ${msg}\n`);
  process.exit(2);
}

// The spec comes on stdin: it can be larger than a command line may be.
const op = process.argv[2];
let spec;
try {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  spec = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
} catch (err) {
  fail(`spec on stdin is not JSON: ${err.message}`);
}
const deadline = setTimeout(() => fail(`${op}: no result within ${spec.timeoutMs ?? 30000} ms`), spec.timeoutMs ?? 30000);

// Short retries: the emulator is on loopback, and a test must fail in
// seconds, not after the SDK's default minutes of retrying.
const retryOptions = {
  maxRetries: 1,
  retryDelayInMs: 10,
  maxRetryDelayInMs: 100,
  timeoutInMs: 5000,
  ...(spec.retryOptions ?? {}),
};

function errorInfo(err) {
  const info = {
    name: err?.name,
    code: err?.code,
    retryable: err?.retryable,
    message: String(err?.message ?? err),
  };
  if (Array.isArray(err?.errors)) {
    info.errors = err.errors.map(errorInfo);
  }
  return info;
}

function toEventData(ev) {
  const out = { body: Buffer.from(ev.body ?? "", "base64") };
  if (ev.properties) out.properties = ev.properties;
  if (ev.contentType) out.contentType = ev.contentType;
  if (ev.messageId) out.messageId = ev.messageId;
  if (ev.correlationId) out.correlationId = ev.correlationId;
  return out;
}

function fromReceived(partitionId, ev) {
  const body = Buffer.isBuffer(ev.body) ? ev.body : Buffer.from(JSON.stringify(ev.body));
  return {
    partitionId,
    sequenceNumber: ev.sequenceNumber,
    offset: ev.offset,
    enqueuedTimeUtc: ev.enqueuedTimeUtc,
    partitionKey: ev.partitionKey ?? null,
    body: body.toString("base64"),
    properties: ev.properties ?? {},
    contentType: ev.contentType ?? null,
    messageId: ev.messageId ?? null,
    correlationId: ev.correlationId ?? null,
  };
}

// memoryCheckpointStore is a CheckpointStore in memory with optimistic
// concurrency by etag, as the SDK's blob store has (the SDK exports none).
function memoryCheckpointStore() {
  let etag = 0;
  const ownership = new Map();
  const checkpoints = new Map();
  return {
    async listOwnership() {
      return [...ownership.values()].map((o) => ({ ...o }));
    },
    async claimOwnership(claims) {
      const won = [];
      for (const o of claims) {
        const cur = ownership.get(o.partitionId);
        if (cur && cur.etag !== o.etag) continue; // lost the race
        const next = { ...o, etag: String(++etag), lastModifiedTimeInMs: Date.now() };
        ownership.set(o.partitionId, next);
        won.push({ ...next });
      }
      return won;
    },
    async updateCheckpoint(cp) {
      checkpoints.set(cp.partitionId, { ...cp });
    },
    async listCheckpoints() {
      return [...checkpoints.values()];
    },
  };
}

function position(p) {
  if (!p || p === "earliest") return earliestEventPosition;
  if (p === "latest") return latestEventPosition;
  if (p.enqueuedOn !== undefined) return { enqueuedOn: new Date(p.enqueuedOn) };
  return p; // { offset | sequenceNumber, isInclusive }
}

// send runs spec.sends in order: each one batch, to a partition key, a
// partition id or the hub; a batch with fillSize is filled with events of
// that many bytes (byte i%256 repeated, message ID fill-i) until full.
async function send(cs, sends) {
  const producer = new EventHubProducerClient(cs, { retryOptions });
  try {
    let n = 0;
    for (const s of sends) {
      const opts = {};
      if (s.partitionKey !== undefined) opts.partitionKey = s.partitionKey;
      if (s.partitionId !== undefined) opts.partitionId = s.partitionId;
      const batch = await producer.createBatch(opts);
      if (s.fillSize) {
        let i = 0;
        while (batch.tryAdd({ body: Buffer.alloc(s.fillSize, i % 256), messageId: `fill-${i}` })) i++;
        n += i;
      }
      for (const ev of s.events ?? []) {
        if (!batch.tryAdd(toEventData(ev))) {
          throw new Error(`event ${n} does not fit the batch`);
        }
        n++;
      }
      await producer.sendBatch(batch);
    }
    return { sent: n };
  } finally {
    await producer.close();
  }
}

// subscribe reads from one partition (or all) until count events arrived
// or, once ready, s.idleBatches (default 20) empty batches in a row went by
// — so that a wrong start position shows up as wrong events, not as a
// timeout. onReady runs once every subscribed partition's receiver is
// attached: the SDK calls processEvents (empty when nothing arrived) only
// after its link is open, maxWaitTimeInSeconds after asking for events.
function subscribe(client, s, onReady) {
  const events = [];
  const errors = [];
  const closeReasons = [];
  const lastEnqueued = []; // with trackLastEnqueuedEventProperties: per non-empty batch
  const ready = new Set();
  let readyFired = false;
  let empties = 0;
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const handlers = {
    processEvents: async (evs, ctx) => {
      for (const ev of evs) events.push(fromReceived(ctx.partitionId, ev));
      if (s.trackLastEnqueuedEventProperties && evs.length > 0) {
        lastEnqueued.push({ partitionId: ctx.partitionId, ...ctx.lastEnqueuedEventProperties });
      }
      ready.add(ctx.partitionId);
      if (!readyFired && ready.size >= (s.partitionCount ?? 1)) {
        readyFired = true;
        if (onReady) await onReady();
      }
      if (events.length >= s.count) resolveDone();
      empties = evs.length === 0 && readyFired ? empties + 1 : 0;
      if (empties >= (s.idleBatches ?? 20)) resolveDone();
    },
    processError: async (err) => {
      errors.push(errorInfo(err));
      if (s.stopOnError) resolveDone();
    },
    processClose: async (reason) => {
      closeReasons.push(reason);
      if (s.stopOnClose) resolveDone();
    },
  };
  const options = {
    startPosition: position(s.position),
    maxBatchSize: s.maxBatchSize ?? 100,
    maxWaitTimeInSeconds: s.maxWaitTimeInSeconds ?? 0.25,
    skipParsingBodyAsJson: true,
  };
  if (s.ownerLevel !== undefined) options.ownerLevel = s.ownerLevel;
  if (s.trackLastEnqueuedEventProperties) options.trackLastEnqueuedEventProperties = true;
  const sub =
    s.partitionId === undefined || s.partitionId === null
      ? client.subscribe(handlers, options)
      : client.subscribe(s.partitionId, handlers, options);
  return { sub, events, errors, closeReasons, lastEnqueued, done };
}

const ops = {
  // Hub properties and the properties of every partition.
  async properties(s) {
    const producer = new EventHubProducerClient(s.connectionString, { retryOptions });
    try {
      const hub = await producer.getEventHubProperties();
      const partitions = [];
      for (const id of hub.partitionIds) partitions.push(await producer.getPartitionProperties(id));
      return { hub, partitions };
    } finally {
      await producer.close();
    }
  },

  async send(s) {
    return send(s.connectionString, s.sends);
  },

  // Several receives one after the other, each as for receive.
  async receiveEach(s) {
    const client = new EventHubConsumerClient(s.consumerGroup ?? "$Default", s.connectionString, { retryOptions });
    try {
      const results = [];
      for (const one of s.receives) {
        const r = subscribe(client, one);
        await r.done;
        await r.sub.close();
        results.push({ events: r.events, errors: r.errors });
      }
      return results;
    } finally {
      await client.close();
    }
  },

  // Receive spec.count events from spec.partitionId (all partitions when
  // absent) at spec.position; with spec.thenSend, send those once the
  // receivers are attached (for the latest position).
  async receive(s) {
    const client = new EventHubConsumerClient(s.consumerGroup ?? "$Default", s.connectionString, { retryOptions });
    try {
      const r = subscribe(client, s, s.thenSend ? () => send(s.connectionString, s.thenSend) : undefined);
      await r.done;
      await r.sub.close();
      return { events: r.events, errors: r.errors, lastEnqueued: r.lastEnqueued };
    } finally {
      await client.close();
    }
  },

  // Epoch steal: a receiver with owner level 1 is attached, then one with
  // owner level 2 on the same partition and consumer group. Reports what
  // the first was told, then sends one event and reports what the second
  // received.
  async steal(s) {
    const first = new EventHubConsumerClient(s.consumerGroup ?? "$Default", s.connectionString, { retryOptions });
    const second = new EventHubConsumerClient(s.consumerGroup ?? "$Default", s.connectionString, { retryOptions });
    try {
      let firstReady;
      const firstAttached = new Promise((r) => (firstReady = r));
      const a = subscribe(first, { partitionId: s.partitionId, position: "latest", ownerLevel: 1, count: 1, stopOnClose: true }, async () => firstReady());
      await firstAttached;
      let secondReady;
      const secondAttached = new Promise((r) => (secondReady = r));
      const b = subscribe(second, { partitionId: s.partitionId, position: "latest", ownerLevel: 2, count: 1 }, async () => secondReady());
      await a.done; // the first receiver's partition processor closed
      await secondAttached;
      await send(s.connectionString, [{ partitionId: s.partitionId, events: s.events }]);
      await b.done;
      await b.sub.close();
      await a.sub.close();
      return {
        first: { errors: a.errors, closeReasons: a.closeReasons, events: a.events },
        second: { errors: b.errors, closeReasons: b.closeReasons, events: b.events },
      };
    } finally {
      await first.close();
      await second.close();
    }
  },

  // Load balancing: consumer A (a checkpoint store, so owner level 0 on
  // every partition) takes all spec.partitionCount partitions; then B
  // joins and takes its share from A, the emulator detaching A's receivers
  // with equal-epoch steals. Once each owns half of the (even) partition
  // count, disjoint, and A has lost its half — so every steal is done and
  // every receiver B owns is attached — one event is sent to each
  // partition. Reports who owned, lost and received what.
  async balance(s) {
    const store = memoryCheckpointStore();
    const P = s.partitionCount;
    const changed = [];
    const waitFor = (cond) =>
      cond() ? Promise.resolve() : new Promise((resolve) => changed.push(() => cond() && (resolve(), true)));
    const notify = () => {
      for (let i = changed.length - 1; i >= 0; i--) if (changed[i]()) changed.splice(i, 1);
    };
    const consumer = (name) => {
      const client = new EventHubConsumerClient("$Default", s.connectionString, store, {
        retryOptions,
        loadBalancingOptions: { strategy: "greedy", updateIntervalInMs: 100, partitionOwnershipExpirationIntervalInMs: 60000 },
      });
      const c = { name, client, owned: new Set(), lost: [], errors: [], received: [] };
      c.sub = client.subscribe(
        {
          processInitialize: async (ctx) => { c.owned.add(ctx.partitionId); notify(); },
          processClose: async (reason, ctx) => {
            c.owned.delete(ctx.partitionId);
            if (reason === "OwnershipLost") c.lost.push(ctx.partitionId);
            notify();
          },
          processEvents: async (evs, ctx) => {
            for (const ev of evs) c.received.push(fromReceived(ctx.partitionId, ev));
            notify();
          },
          processError: async (err) => { c.errors.push(errorInfo(err)); notify(); },
        },
        { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 0.25, skipParsingBodyAsJson: true },
      );
      return c;
    };
    const a = consumer("A");
    try {
      await waitFor(() => a.owned.size === P);
      const b = consumer("B");
      try {
        const half = P / 2;
        const settled = () =>
          a.owned.size === half && b.owned.size === half && [...a.owned].every((id) => !b.owned.has(id)) && a.lost.length === half;
        await waitFor(settled);
        const events = [];
        for (let i = 0; i < P; i++) events.push({ partitionId: String(i), events: [{ body: Buffer.from(`to ${i}`).toString("base64"), messageId: `balanced-${i}` }] });
        await send(s.connectionString, events);
        await waitFor(() => a.received.length + b.received.length >= P);
        const report = (c) => ({ owned: [...c.owned].sort(), lost: c.lost, errors: c.errors, received: c.received });
        const out = { a: report(a), b: report(b) };
        await b.sub.close();
        await a.sub.close();
        return out;
      } finally {
        await b.client.close();
      }
    } finally {
      await a.client.close();
    }
  },

  // With a wrong key: hub properties, a send and a receive, each timed.
  async unauthorized(s) {
    const out = {};
    const timed = async (name, fn) => {
      const t0 = Date.now();
      try {
        await fn();
        out[name] = { ok: true, ms: Date.now() - t0 };
      } catch (err) {
        out[name] = { ok: false, ms: Date.now() - t0, error: errorInfo(err) };
      }
    };
    const producer = new EventHubProducerClient(s.connectionString, { retryOptions });
    await timed("properties", () => producer.getEventHubProperties());
    await timed("send", () => producer.sendBatch([{ body: Buffer.from("x") }], { partitionId: "0" }));
    await producer.close();
    const client = new EventHubConsumerClient("$Default", s.connectionString, { retryOptions });
    await timed("receive", async () => {
      const r = subscribe(client, { partitionId: "0", position: "earliest", count: 1, stopOnError: true });
      await r.done;
      await r.sub.close();
      if (r.errors.length > 0) {
        const err = new Error(r.errors[0].message);
        Object.assign(err, r.errors[0]);
        throw err;
      }
    });
    await client.close();
    return out;
  },
};

if (!ops[op]) {
  fail(`unknown operation ${JSON.stringify(op)}; one of ${Object.keys(ops).join(", ")}`);
}
try {
  const result = await ops[op](spec);
  process.stdout.write(JSON.stringify(result) + "\n");
  clearTimeout(deadline);
} catch (err) {
  process.stderr.write(`conformance.mjs: ${op}: ${JSON.stringify(errorInfo(err))}\n${err?.stack ?? ""}\n`);
  process.exit(1);
}
