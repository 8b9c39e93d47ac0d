// Fallback HTTP load generator for when wrk is missing; runs in its own process so it does not
// share an event loop with the bench. Usage: loadgen.ts URL CONCURRENCY SECONDS ACCEPT
// Prints one JSON line: { requests, errors, seconds }.
import http from 'node:http';

const [url = '', concArg = '32', secondsArg = '10', accept = '*/*'] = process.argv.slice(2);
const concurrency = Number(concArg);
const deadline = performance.now() + Number(secondsArg) * 1000;
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });

let requests = 0;
let errors = 0;

function once(): Promise<void> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent, headers: { accept } }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) requests++;
        else errors++;
        resolve();
      });
    });
    req.on('error', () => {
      errors++;
      resolve();
    });
  });
}

async function worker(): Promise<void> {
  while (performance.now() < deadline) await once();
}

const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, worker));
const seconds = (performance.now() - t0) / 1000;
agent.destroy();
process.stdout.write(`${JSON.stringify({ requests, errors, seconds })}\n`);
