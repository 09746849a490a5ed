// The official OpenAI client against `strata serve` with stories260K: completions and chat,
// whole and streamed. Expected text: llama2.c's own run.c greedy story from BOS
// (models/stories260K/reference_greedy_runc.txt), and each streamed answer equals the whole one.
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import {
  builtinModel, chatModelCopy, check, equal, fail, main, startServer, stopServer,
} from './harness.mjs';

const story = fs.readFileSync(path.join(builtinModel, 'reference_greedy_runc.txt'), 'utf8');

await main(async () => {
  const base = await startServer(builtinModel, ['--max-sequences', '4']);
  const chatDir = chatModelCopy();
  const chat = await startServer(chatDir, ['--max-sequences', '4', '--api-key', 'k3y']);
  try {
    const client = new OpenAI({ baseURL: `${base.base}/v1`, apiKey: 'unused', maxRetries: 0 });
    const models = await client.models.list();
    equal(models.data.map((m) => m.id), ['stories260K'], 'models.list');

    // An empty prompt is BOS alone: greedy continues as run.c's story.
    const whole = await client.completions.create({
      model: 'stories260K', prompt: '', max_tokens: 60, temperature: 0,
    });
    const text = whole.choices[0].text;
    check(text.length > 100, `completion too short: ${JSON.stringify(text)}`);
    check(story.startsWith(text), `completion is not run.c's story: ${JSON.stringify(text)}`);
    equal(whole.choices[0].finish_reason, 'length', 'completion finish_reason');
    equal([whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens],
          [1, 60, 61], 'usage');

    // Streamed through the client: the same text, a finish_reason, then the usage chunk.
    const stream = await client.completions.create({
      model: 'stories260K', prompt: '', max_tokens: 60, temperature: 0, stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = '';
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices.length) {
        streamed += chunk.choices[0].text;
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    equal(streamed, text, 'streamed completion');
    equal(finish, 'length', 'streamed finish_reason');
    equal(usage?.completion_tokens, 60, 'streamed usage');

    // The prompt continues run.c's story too; a stop string ends it with "stop".
    const cont = await client.completions.create({
      model: 'stories260K', prompt: 'Once upon a time', max_tokens: 30, temperature: 0,
    });
    check(story.startsWith('Once upon a time' + cont.choices[0].text),
          `continuation differs: ${JSON.stringify(cont.choices[0].text)}`);
    const stopped = await client.completions.create({
      model: 'stories260K', prompt: 'Once upon a time', max_tokens: 30, temperature: 0,
      stop: ['Lily'],
    });
    equal(stopped.choices[0].text, cont.choices[0].text.split('Lily')[0], 'stop string text');
    equal(stopped.choices[0].finish_reason, 'stop', 'stop string finish_reason');

    // The base model has no chat template: 400 naming it.
    try {
      await client.chat.completions.create({
        model: 'stories260K', messages: [{ role: 'user', content: 'hi' }],
      });
      fail('chat on a base model succeeded');
    } catch (e) {
      equal(e.status, 400, 'chat without template status');
      check(/chat template/.test(e.message), `message names the template: ${e.message}`);
    }

    // The copy with a template: chat whole and streamed (Bearer key through the client).
    const chatModel = chatDir.split('/').pop();
    const withKey = new OpenAI({ baseURL: `${chat.base}/v1`, apiKey: 'k3y', maxRetries: 0 });
    const messages = [
      { role: 'system', content: 'You tell stories.' },
      { role: 'user', content: 'Once upon a time' },
    ];
    const answer = await withKey.chat.completions.create({
      model: chatModel, messages, max_completion_tokens: 40, temperature: 0,
    });
    const content = answer.choices[0].message.content;
    equal(answer.choices[0].message.role, 'assistant', 'chat role');
    check(content.length > 0, 'chat answer is empty');
    let chatStreamed = '';
    let role = null;
    const chatStream = await withKey.chat.completions.create({
      model: chatModel, messages, max_completion_tokens: 40, temperature: 0, stream: true,
    });
    for await (const chunk of chatStream) {
      const delta = chunk.choices[0]?.delta ?? {};
      role = delta.role ?? role;
      chatStreamed += delta.content ?? '';
    }
    equal(role, 'assistant', 'streamed chat role');
    equal(chatStreamed, content, 'streamed chat equals whole chat');
    // Without the key: 401.
    const noKey = new OpenAI({ baseURL: `${chat.base}/v1`, apiKey: 'wrong', maxRetries: 0 });
    try {
      await noKey.chat.completions.create({ model: chatModel, messages });
      fail('a wrong API key was accepted');
    } catch (e) {
      equal(e.status, 401, 'wrong key status');
    }
  } finally {
    equal(await stopServer(base), 0, 'exit code of the base server');
    equal(await stopServer(chat), 0, 'exit code of the chat server');
  }
});
