// Bounded load: 32 concurrent streaming clients x 10 requests each, greedy. Every request
// completes, each output equals the same request served alone, no chunk is lost, and the
// server's resident memory stays flat between a warm-up round and the loaded rounds.
import { builtinModel, check, equal, main, rssKiB, sseEvents, startServer, stopServer } from './harness.mjs';

const CLIENTS = 32;
const REQUESTS = 10;
const starts = ['Once upon a time', 'Lily', 'The dog', 'One day', 'Tom and Sue', 'A big', 'Sam',
                'The sun', 'Mom said', 'In the park', 'Ben had', 'The cat'];

function request(i) {
  return { model: 'stories260K', prompt: starts[i % starts.length], max_tokens: 8 + (i % 17),
           temperature: 0, stream: true, stream_options: { include_usage: true } };
}

async function streamed(base, body) {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  if (res.status !== 200) return { status: res.status, text: null };
  const events = sseEvents(await res.text());
  const done = events[events.length - 1] === '[DONE]';
  const usage = events.find((e) => e?.usage)?.usage;
  const text = events.filter((e) => e?.choices?.length).map((e) => e.choices[0].text).join('');
  return { status: res.status, text, done, usage };
}

await main(async () => {
  const server = await startServer(builtinModel, ['--max-sequences', '16', '--max-queue', '64']);
  const base = server.base;
  try {
    // Each distinct request alone, one after another.
    const distinct = starts.length * 17;
    const alone = [];
    for (let i = 0; i < distinct; ++i) alone.push(await streamed(base, request(i)));
    // Two loaded rounds: the first grows what a full batch needs (KV cache, HTTP threads), the
    // second must not grow it further.
    const rss = [rssKiB(server.pid)];
    for (let round = 0; round < 2; ++round) {
      let completed = 0;
      const clients = [];
      for (let c = 0; c < CLIENTS; ++c) {
        clients.push((async () => {
          for (let r = 0; r < REQUESTS; ++r) {
            const i = (c * REQUESTS + r + round) % distinct;
            const got = await streamed(base, request(i));
            equal(got.status, 200, `client ${c} request ${r} status`);
            check(got.done, `client ${c} request ${r} ended without [DONE]`);
            equal(got.text, alone[i].text, `client ${c} request ${r} equals the request alone`);
            equal(got.usage?.completion_tokens, alone[i].usage?.completion_tokens,
                  `client ${c} request ${r} tokens`);
            completed += 1;
          }
        })());
      }
      await Promise.all(clients);
      equal(completed, CLIENTS * REQUESTS, `every request of round ${round} completed`);
      rss.push(rssKiB(server.pid));
    }
    console.log(`RSS (KiB): after requests alone ${rss[0]}, after loaded rounds ${rss[1]}, ${rss[2]}`);
    if (process.env.STRATA_RSS_CHECK === 'off') {
      // Sanitizer builds: ASan's quarantine keeps freed memory resident, so RSS says nothing
      // there; LeakSanitizer checks the server for leaks when it exits instead.
      console.log('RSS check off (sanitizer build)');
    } else {
      check(rss[2] - rss[1] < 4 * 1024, `resident memory grew by ${rss[2] - rss[1]} KiB in round 2`);
    }
  } finally {
    equal(await stopServer(server), 0, 'exit code');
  }
});
