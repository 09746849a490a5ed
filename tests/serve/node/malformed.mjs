// 30+ malformed requests against the real server: each gets its status and OpenAI's error body
// (param naming the field where there is one), and the server keeps answering.
import { builtinModel, chatModelCopy, check, equal, main, startServer, stopServer } from './harness.mjs';

await main(async () => {
  const dir = chatModelCopy();
  const model = dir.split('/').pop();
  const server = await startServer(dir, ['--max-sequences', '2', '--ctx-size', '64',
                                         '--max-body', '2KiB']);
  const base = server.base;
  const user = [{ role: 'user', content: 'hi' }];
  const cases = [
    // [path, body (object or raw string), status, param]
    ['/v1/completions', '', 400, null],
    ['/v1/completions', '{"model":', 400, null],
    ['/v1/completions', '42', 400, null],
    ['/v1/completions', '[]', 400, null],
    ['/v1/completions', { prompt: 'x' }, 400, 'model'],
    ['/v1/completions', { model: 'gpt-4', prompt: 'x' }, 404, 'model'],
    ['/v1/completions', { model }, 400, 'prompt'],
    ['/v1/completions', { model, prompt: {} }, 400, 'prompt'],
    ['/v1/completions', { model, prompt: ['a', 'b'] }, 400, 'prompt'],
    ['/v1/completions', { model, prompt: [1, 99999] }, 400, 'prompt'],
    ['/v1/completions', { model, prompt: [-1] }, 400, 'prompt'],
    ['/v1/completions', { model, prompt: 'word '.repeat(100) }, 400, 'prompt'],
    ['/v1/completions', { model, prompt: 'x', max_tokens: 0 }, 400, 'max_tokens'],
    ['/v1/completions', { model, prompt: 'x', max_tokens: 1.5 }, 400, 'max_tokens'],
    ['/v1/completions', { model, prompt: 'x', temperature: 3 }, 400, 'temperature'],
    ['/v1/completions', { model, prompt: 'x', temperature: 'warm' }, 400, 'temperature'],
    ['/v1/completions', { model, prompt: 'x', top_p: 0 }, 400, 'top_p'],
    ['/v1/completions', { model, prompt: 'x', top_k: -5 }, 400, 'top_k'],
    ['/v1/completions', { model, prompt: 'x', min_p: 1.5 }, 400, 'min_p'],
    ['/v1/completions', { model, prompt: 'x', seed: 'abc' }, 400, 'seed'],
    ['/v1/completions', { model, prompt: 'x', stop: 5 }, 400, 'stop'],
    ['/v1/completions', { model, prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'stop'],
    ['/v1/completions', { model, prompt: 'x', presence_penalty: -9 }, 400, 'presence_penalty'],
    ['/v1/completions', { model, prompt: 'x', frequency_penalty: 9 }, 400, 'frequency_penalty'],
    ['/v1/completions', { model, prompt: 'x', stream: 'true' }, 400, 'stream'],
    ['/v1/completions', { model, prompt: 'x', stream_options: { include_usage: true } }, 400,
     'stream_options'],
    ['/v1/completions', { model, prompt: 'x', n: 2 }, 400, 'n'],
    ['/v1/completions', { model, prompt: 'x', logprobs: 3 }, 400, 'logprobs'],
    ['/v1/completions', { model, prompt: 'x'.repeat(3000) }, 413, null],
    ['/v1/chat/completions', { model }, 400, 'messages'],
    ['/v1/chat/completions', { model, messages: [] }, 400, 'messages'],
    ['/v1/chat/completions', { model, messages: 'hi' }, 400, 'messages'],
    ['/v1/chat/completions', { model, messages: [{ role: 'robot', content: 'x' }] }, 400,
     'messages[0].role'],
    ['/v1/chat/completions', { model, messages: [{ role: 'user', content: 7 }] }, 400,
     'messages[0].content'],
    ['/v1/chat/completions', { model, messages: [{ role: 'user', content: [{ type: 'image_url' }] }] },
     400, 'messages[0].content[0]'],
    ['/v1/chat/completions', { model, messages: user, tools: [{ type: 'function' }] }, 400, 'tools'],
    ['/v1/chat/completions', { model, messages: user, max_completion_tokens: -1 }, 400,
     'max_completion_tokens'],
    ['/v1/chat/completions', { model: 'nope', messages: user }, 404, 'model'],
    ['/v1/chat/completions', { model, messages: [{ role: 'user', content: 'long '.repeat(80) }] },
     400, 'messages'],
    ['/v1/embeddings', { model, input: 'x' }, 404, null],
    ['/nothing/here', {}, 404, null],
  ];
  check(cases.length >= 30, 'at least 30 malformed requests');
  try {
    for (const [path, body, status, param] of cases) {
      const res = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      const what = `${path} ${text.slice(0, 200)}`;
      equal(res.status, status, `status of ${path} ${JSON.stringify(body).slice(0, 80)}`);
      let parsed = null;
      try {
        parsed = JSON.parse(text);
      } catch {
        check(false, `error body is not JSON: ${what}`);
        continue;
      }
      check(typeof parsed?.error?.message === 'string', `error.message: ${what}`);
      check(typeof parsed?.error?.type === 'string', `error.type: ${what}`);
      equal(parsed?.error?.param ?? null, param, `error.param of ${what}`);
    }
    const health = await fetch(`${base}/health`);
    equal(health.status, 200, 'the server answers after the bad requests');
    const good = await fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model, prompt: 'Once', max_tokens: 3 }),
    });
    equal(good.status, 200, 'a good request after the bad ones');
  } finally {
    equal(await stopServer(server), 0, 'exit code');
  }
});
