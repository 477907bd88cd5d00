// Closed-loop load client for bench/gateway_batching.py, in its own Node.js process.
//
// `concurrency` loops each send one request, wait for its answer, send the next, for `seconds` (after
// `warmup` seconds that are not counted but reported); prints one JSON line: calls, errors by kind, p50/p95/p99 in ms,
// requests/s and the CPU seconds this client used. The request body is prepared by the caller and sent as is:
// for gRPC a serialized request message (no protobuf work here: bytes in, bytes out, over @grpc/grpc-js), for
// HTTP the image bytes POSTed to the path.
//
//   node loadgen.mjs --protocol grpc --target 127.0.0.1:50053 --method /fashionsearch.v1.Gateway/Search \
//        --body request.bin --concurrency 32 --seconds 5 [--warmup 1] [--timeout 30]
//   node loadgen.mjs --protocol http --target 127.0.0.1:8080 --method /v1/search --body photo.jpg ...

import { readFileSync } from "node:fs";
import http from "node:http";
import grpc from "@grpc/grpc-js";

function parseArgs(argv) {
  const args = { warmup: "1", timeout: "30", "content-type": "image/jpeg" };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--")) throw new Error(`unexpected argument ${argv[i]}`);
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const need of ["protocol", "target", "method", "body", "concurrency", "seconds"]) {
    if (args[need] === undefined) throw new Error(`--${need} is required`);
  }
  return args;
}

const identity = (x) => x;

function grpcCaller(args) {
  const client = new grpc.Client(args.target, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": -1,
    "grpc.max_receive_message_length": -1,
  });
  const timeoutMs = Number(args.timeout) * 1000;
  const call = (body) =>
    new Promise((resolve) => {
      const deadline = new Date(Date.now() + timeoutMs);
      client.makeUnaryRequest(args.method, identity, identity, body, { deadline }, (error) => {
        resolve(error ? grpc.status[error.code] ?? String(error.code) : null);
      });
    });
  return { call, close: () => client.close() };
}

function httpCaller(args) {
  const [host, port] = [args.target.slice(0, args.target.lastIndexOf(":")), args.target.slice(args.target.lastIndexOf(":") + 1)];
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(args.concurrency) });
  const timeoutMs = Number(args.timeout) * 1000;
  const call = (body) =>
    new Promise((resolve) => {
      const request = http.request(
        {
          host,
          port: Number(port),
          path: args.method,
          method: "POST",
          agent,
          timeout: timeoutMs,
          headers: { "Content-Type": args["content-type"], "Content-Length": body.length },
        },
        (response) => {
          response.on("data", () => {});
          response.on("end", () => resolve(response.statusCode === 200 ? null : `HTTP ${response.statusCode}`));
        },
      );
      request.on("timeout", () => request.destroy(new Error("timeout")));
      request.on("error", (error) => resolve(error.code ?? error.message));
      request.end(body);
    });
  return { call, close: () => agent.destroy() };
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1));
  return sorted[index];
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const body = readFileSync(args.body);
  const caller = args.protocol === "grpc" ? grpcCaller(args) : httpCaller(args);
  const concurrency = Number(args.concurrency);
  const warmupEnd = performance.now() + Number(args.warmup) * 1000;
  let measuring = false;
  let end = Infinity;
  const latencies = [];
  const errors = {};
  let warmupCalls = 0;
  let cpuStart;

  async function loop() {
    for (;;) {
      const started = performance.now();
      if (started >= end) return;
      if (!measuring && started >= warmupEnd) {
        measuring = true;
        end = started + Number(args.seconds) * 1000;
        cpuStart = process.cpuUsage();
        loop.startedAt = started;
      }
      const counted = measuring;
      const error = await caller.call(body);
      if (!counted) {
        warmupCalls += 1;
        continue;
      }
      if (error === null) latencies.push(performance.now() - started);
      else errors[error] = (errors[error] ?? 0) + 1;
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  const wallS = (performance.now() - loop.startedAt) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  caller.close();
  latencies.sort((a, b) => a - b);
  const errorCount = Object.values(errors).reduce((a, b) => a + b, 0);
  process.stdout.write(
    JSON.stringify({
      calls: latencies.length + errorCount,
      warmup_calls: warmupCalls,
      ok: latencies.length,
      errors: errorCount,
      error_kinds: errors,
      p50_ms: percentile(latencies, 50),
      p95_ms: percentile(latencies, 95),
      p99_ms: percentile(latencies, 99),
      per_s: latencies.length / wallS,
      wall_s: wallS,
      client_cpu_s: (cpu.user + cpu.system) / 1e6,
    }) + "\n",
  );
}

main().catch((error) => {
  process.stderr.write(`loadgen: ${error.stack ?? error}\n`);
  process.exit(2);
});
