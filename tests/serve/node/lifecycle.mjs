// A client that disconnects mid-stream cancels its request and frees its cache; SIGINT while a
// stream runs ends the stream ([DONE] after an error event) and the server exits 0.
import { builtinModel, check, equal, main, metric, sseEvents, startServer } from './harness.mjs';

async function waitFor(condition, what) {
  for (let i = 0; i < 2000; ++i) {
    if (await condition()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  check(false, `timed out waiting for ${what}`);
  return false;
}

await main(async () => {
  const server = await startServer(builtinModel, ['--max-sequences', '2', '--ctx-size', '512']);
  const base = server.base;
  const body = JSON.stringify({
    model: 'stories260K', prompt: 'Once', max_tokens: 500, stream: true, temperature: 0.8,
    seed: 1, frequency_penalty: 1.0,
  });

  // Disconnect after the first chunks.
  const abort = new AbortController();
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body, signal: abort.signal,
  });
  const reader = res.body.getReader();
  await reader.read();
  await reader.read();
  abort.abort();
  await waitFor(async () => (await metric(base, 'strata_running_sequences')) === 0,
                'the cancelled sequence to leave');
  await waitFor(async () => (await metric(base, 'strata_kv_cache_bytes')) === 0,
                'the cancelled sequence\'s cache to be freed');
  const generated = await metric(base, 'strata_generated_tokens_total');
  check(generated < 500, `the cancelled request stopped early (${generated} tokens)`);
  equal((await fetch(`${base}/health`)).status, 200, 'health after a disconnect');

  // SIGINT while streaming.
  const stream = await fetch(`${base}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
  });
  const streamReader = stream.body.getReader();
  let text = new TextDecoder().decode((await streamReader.read()).value);
  const exited = new Promise((resolve) => server.on('exit', (code) => resolve(code)));
  server.kill('SIGINT');
  for (;;) {
    const { value, done } = await streamReader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  const events = sseEvents(text);
  equal(events[events.length - 1], '[DONE]', 'the interrupted stream ends with [DONE]');
  check(events.some((e) => e?.error?.code === 'server_shutting_down'),
        'the interrupted stream says the server is shutting down');
  equal(await exited, 0, 'exit code after SIGINT');
});
