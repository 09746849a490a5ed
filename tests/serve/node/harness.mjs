// Shared by the strata serve integration tests: start the real `strata serve` on a free loopback
// port, make a copy of the built-in model with a chat template of the tests' own, read SSE.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const sourceRoot = path.resolve(here, '../../..');
export const builtinModel = path.join(sourceRoot, 'models/stories260K');

// The strata binary: argv[2] (CMake passes $<TARGET_FILE:strata_cli>).
export const strataBinary = process.argv[2];
if (!strataBinary) throw new Error('usage: node TEST.mjs PATH/TO/strata');

export function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
}

export function check(condition, message) {
  if (!condition) fail(message);
  return condition;
}

export function equal(actual, expected, message) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${message}: got ${a}, expected ${e}`);
  return a === e;
}

// A copy of stories260K (a base model) with a chat template: "<s>" from the template itself,
// then "role: content" lines, then "assistant:".
export function chatModelCopy() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-serve-chat-'));
  for (const name of fs.readdirSync(builtinModel)) {
    fs.copyFileSync(path.join(builtinModel, name), path.join(dir, name));
  }
  fs.writeFileSync(
    path.join(dir, 'chat_template.jinja'),
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" +
      "{% if add_generation_prompt %}assistant:{% endif %}");
  return dir;
}

// Starts `strata serve MODEL --port 0 ...` and resolves when it listens.
export function startServer(modelDir, args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(strataBinary, ['serve', modelDir, '--port', '0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    proc.stderr.on('data', (d) => { err += d; });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/([0-9.]+):(\d+)/);
      if (m && !proc.base) {
        proc.base = `http://${m[1]}:${m[2]}`;
        resolve(proc);
      }
    });
    proc.on('exit', (code) => {
      proc.exitCodeSeen = code;
      if (!proc.base) reject(new Error(`strata serve exited (${code}) before listening: ${err}`));
    });
    proc.output = () => ({ out, err });
  });
}

export function stopServer(proc, signal = 'SIGTERM') {
  return new Promise((resolve) => {
    if (proc.exitCodeSeen !== undefined) return resolve(proc.exitCodeSeen);
    proc.on('exit', (code) => resolve(code));
    proc.kill(signal);
  });
}

// The JSON payloads of an SSE body ("[DONE]" kept as the string).
export function sseEvents(text) {
  return text
    .split('\n\n')
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice(6))
    .map((data) => (data === '[DONE]' ? data : JSON.parse(data)));
}

export async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

export function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(status.match(/VmRSS:\s+(\d+)/)[1]);
}

export async function main(body) {
  try {
    await body();
  } catch (e) {
    fail(e.stack || String(e));
  }
  if (process.exitCode) console.error('FAILED');
  else console.log('PASSED');
}
