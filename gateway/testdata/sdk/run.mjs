// Drives the gateway with the official openai SDK. gateway/sdk_test.go
// starts a gateway on a loopback port and runs this script with
// NOZZLE_URL, NOZZLE_KEY (full scopes) and NOZZLE_LIMITED_KEY (one request
// a minute, already used), and a second gateway over a reasoning model
// with NOZZLE_REASONING_URL and NOZZLE_REASONING_KEY, and a third over a
// real ledger, which stores responses, conversations, files and batches, with NOZZLE_STORE_URL,
// NOZZLE_STORE_KEY and another tenant's NOZZLE_STORE_OTHER_KEY. Each check prints
// "ok <name>"; the first failed assertion exits non-zero.
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import { CursorPage } from 'openai/pagination';

const baseURL = process.env.NOZZLE_URL + '/v1';
const client = new OpenAI({ apiKey: process.env.NOZZLE_KEY, baseURL, maxRetries: 0 });
const want = 'Hello from the fake runtime.';

async function check(name, fn) {
  await fn();
  console.log('ok ' + name);
}

await check('chat', async () => {
  const r = await client.chat.completions.create({
    model: 'base',
    messages: [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: 'Say hello' }],
    temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, 'tiny-llama');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, want);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens, 6);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 6);
});

await check('chat-stream', async () => {
  const stream = await client.chat.completions.create({
    model: 'base',
    messages: [{ role: 'user', content: 'Say hello' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '', role = '', finish = null, usage = null, n = 0;
  for await (const chunk of stream) {
    n++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(text, want);
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.completion_tokens === 6, JSON.stringify(usage));
  assert.ok(n >= 8);
});

await check('chat-stream-helper', async () => {
  const runner = client.chat.completions.stream({ model: 'base', messages: [{ role: 'user', content: 'hi' }] });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, want);
});

await check('completions', async () => {
  const r = await client.completions.create({ model: 'base', prompt: ['Once', 'Twice'], max_tokens: 3, n: 2 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 4);
  for (const c of r.choices) {
    assert.equal(c.text, 'Hello from the');
    assert.equal(c.finish_reason, 'length');
  }
  assert.equal(r.usage.completion_tokens, 12);
});

await check('completions-stream', async () => {
  const stream = await client.completions.create({ model: 'base', prompt: 'Once', max_tokens: 2, stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) text += c.text;
  }
  assert.equal(text, 'Hello from');
  assert.equal(usage.completion_tokens, 2);
});

await check('models', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['tiny-llama', 'old-bot', 'support-bot']);
  const m = await client.models.retrieve('support-bot');
  assert.equal(m.id, 'support-bot');
  assert.equal(m.object, 'model');
});

await check('list-pages', async () => {
  // the SDK's own cursor pages: after = the page's last id, while has_more
  const names = [];
  for await (const a of client.getAPIList('/adapters', CursorPage, { query: { limit: 1 } })) names.push(a.name);
  assert.deepEqual(names, ['old-bot', 'support-bot']);
  const first = await client.getAPIList('/adapters', CursorPage, { query: { limit: 1 } });
  assert.equal(first.data.length, 1);
  assert.equal(first.has_more, true);
  assert.ok(first.hasNextPage());
  const second = await first.getNextPage();
  assert.deepEqual(second.data.map((a) => a.name), ['support-bot']);
  assert.equal(second.has_more, false);
  assert.ok(!second.hasNextPage());
  // keys made with the client's generic post come back newest first,
  // two to a page
  const made = [];
  for (let i = 0; i < 5; i++) made.push((await client.post('/keys', { body: { name: `sdk-${i}` } })).id);
  const ids = [];
  for await (const k of client.getAPIList('/keys', CursorPage, { query: { limit: 2 } })) ids.push(k.id);
  assert.deepEqual(ids.slice(0, 5), made.reverse());
  assert.equal(new Set(ids).size, ids.length);
  // a limit past the bound is the SDK's BadRequestError
  await assert.rejects(client.getAPIList('/keys', CursorPage, { query: { limit: 1001 } }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'limit');
    assert.equal(e.code, 'integer_above_max_value');
    return true;
  });
});

await check('adapter', async () => {
  const r = await client.chat.completions.create({ model: 'support-bot', messages: [{ role: 'user', content: 'hi' }], max_completion_tokens: 1 });
  assert.equal(r.model, 'support-bot');
  assert.equal(r.choices[0].message.content, 'Hello');
});

await check('idempotency', async () => {
  const opts = { headers: { 'Idempotency-Key': 'sdk-retry-1' } };
  const a = await client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }] }, opts);
  const b = await client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }] }, opts);
  assert.equal(a.id, b.id);
  // the key reused for another request: a conflict the SDK is told not to retry
  await assert.rejects(client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'other' }] }, opts), (e) => {
    assert.ok(e instanceof OpenAI.ConflictError, String(e));
    assert.equal(e.code, 'idempotency_key_reused');
    assert.equal(e.headers.get('x-should-retry'), 'false');
    return true;
  });
});

await check('usage-details', async () => {
  const r = await client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 0);
  assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 0);
});

await check('models-delete', async () => {
  const d = await client.models.delete('old-bot');
  assert.deepEqual(d, { id: 'old-bot', object: 'model', deleted: true });
  await assert.rejects(client.models.retrieve('old-bot'), (e) => e instanceof OpenAI.NotFoundError);
});

await check('error-auth', async () => {
  const bad = new OpenAI({ apiKey: 'nz-notakey', baseURL, maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
    assert.equal(e.status, 401);
    assert.equal(e.code, 'invalid_api_key');
    return true;
  });
});

await check('error-not-found', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'no-such-adapter', messages: [{ role: 'user', content: 'hi' }] }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.code, 'model_not_found');
    assert.equal(e.param, 'model');
    return true;
  });
});

await check('error-bad-request', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'TOO_LONG' }] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.code, 'context_length_exceeded');
    return true;
  });
});

const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city.',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];

await check('tools', async () => {
  // the fake model calls get_weather for a prompt with CALL_TOOL, as a
  // Qwen-style template teaches (<tool_call> JSON)
  const r = await client.chat.completions.create({ model: 'base', tools, messages: [{ role: 'user', content: 'CALL_TOOL weather in Bern?' }] });
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.content, null);
  assert.equal(c.message.tool_calls.length, 1);
  const call = c.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Bern' });
  // the answer to the call goes back in the next turn
  const next = await client.chat.completions.create({ model: 'base', tools, messages: [
    { role: 'user', content: 'weather in Bern?' }, c.message,
    { role: 'tool', tool_call_id: call.id, content: '{"temp": 19}' }] });
  assert.equal(next.choices[0].message.content, want);
});

await check('tools-stream-helper', async () => {
  const runner = client.chat.completions.stream({ model: 'base', tools, messages: [{ role: 'user', content: 'CALL_TOOL weather?' }] });
  const done = await runner.finalChatCompletion();
  assert.equal(done.choices[0].finish_reason, 'tool_calls');
  assert.equal(done.choices[0].message.tool_calls[0].function.name, 'get_weather');
  assert.deepEqual(JSON.parse(done.choices[0].message.tool_calls[0].function.arguments), { city: 'Bern' });
});

await check('functions', async () => {
  // the legacy functions and function_call, which the SDK still types:
  // the call comes back as message.function_call, and goes back, with
  // the function's result, in the next turn
  const functions = [tools[0].function];
  const r = await client.chat.completions.create({ model: 'base', functions, messages: [{ role: 'user', content: 'CALL_TOOL weather in Bern?' }] });
  const c = r.choices[0];
  assert.equal(c.finish_reason, 'function_call');
  assert.equal(c.message.content, null);
  assert.equal(c.message.tool_calls, undefined);
  assert.equal(c.message.function_call.name, 'get_weather');
  assert.deepEqual(JSON.parse(c.message.function_call.arguments), { city: 'Bern' });
  const next = await client.chat.completions.create({ model: 'base', functions, function_call: 'auto', messages: [
    { role: 'user', content: 'weather in Bern?' }, c.message,
    { role: 'function', name: 'get_weather', content: '{"temp": 19}' }] });
  assert.equal(next.choices[0].message.content, want);
  assert.equal(next.choices[0].finish_reason, 'stop');
  // streamed, read by the SDK's helper
  const runner = client.chat.completions.stream({ model: 'base', functions, function_call: { name: 'get_weather' },
    messages: [{ role: 'user', content: 'CALL_TOOL weather?' }] });
  const done = await runner.finalChatCompletion();
  assert.equal(done.choices[0].finish_reason, 'function_call');
  assert.equal(done.choices[0].message.function_call.name, 'get_weather');
  assert.deepEqual(JSON.parse(done.choices[0].message.function_call.arguments), { city: 'Bern' });
  // mixed with tools: refused
  await assert.rejects(client.chat.completions.create({ model: 'base', functions, tools, messages: [{ role: 'user', content: 'hi' }] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'functions');
    return true;
  });
});

await check('completions-echo-logprobs', async () => {
  const r = await client.completions.create({ model: 'base', prompt: 'Hi!', echo: true, logprobs: 1, max_tokens: 1 });
  const lp = r.choices[0].logprobs;
  assert.equal(r.choices[0].text, 'Hi!Hello');
  assert.deepEqual(lp.tokens, ['H', 'i', '!', 'Hello']);
  assert.equal(lp.token_logprobs[0], null);
  assert.equal(lp.top_logprobs[0], null);
  assert.deepEqual(lp.text_offset, [0, 1, 2, 3]);
});

await check('error-unknown-argument', async () => {
  // another server's extension, sent through the SDK's pass-through: refused, not ignored
  await assert.rejects(client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }], guided_grammar: 'root ::= "x"' }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'guided_grammar');
    return true;
  });
});

await check('error-cased-argument', async () => {
  // a parameter spelt in another case is another argument, as OpenAI has it
  await assert.rejects(client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }], MAX_TOKENS: 5 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'MAX_TOKENS');
    return true;
  });
});

await check('error-parameter-bounds', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }], n: 17 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.code, 'integer_above_max_value');
    assert.equal(e.param, 'n');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, max_completion_tokens: 5 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.code, 'invalid_parameter_combination');
    return true;
  });
});

await check('logit-adjustments', async () => {
  const r = await client.chat.completions.create({
    model: 'base',
    messages: [{ role: 'user', content: 'Say hello' }],
    logit_bias: { '31999': -100, '13': 5 },
    presence_penalty: 0.6,
    frequency_penalty: 0.4,
  });
  assert.equal(r.choices[0].message.content, want);
  await assert.rejects(client.completions.create({ model: 'base', prompt: 'hi', logit_bias: { '13': 150 } }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.code, 'invalid_value');
    assert.equal(e.param, 'logit_bias');
    return true;
  });
});

await check('json-object', async () => {
  const r = await client.chat.completions.create({
    model: 'base',
    messages: [{ role: 'user', content: 'Reply in JSON.' }],
    response_format: { type: 'json_object' },
  });
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await client.chat.completions.create({
    model: 'base', messages: [{ role: 'user', content: 'hi' }],
    response_format: { type: 'json_schema', json_schema: { name: 'answer', strict: true,
      schema: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'], additionalProperties: false } } },
  });
  assert.equal(s.choices[0].finish_reason, 'stop');
  await assert.rejects(client.chat.completions.create({
    model: 'base', messages: [{ role: 'user', content: 'hi' }],
    response_format: { type: 'json_schema', json_schema: { name: 'no spaces allowed', schema: { type: 'object' } } },
  }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'response_format.json_schema.name');
    return true;
  });
});

await check('error-streamed-refusal', async () => {
  // one of two prompts refused after the other's text came: the stream
  // never starts, the SDK gets the error from create
  await assert.rejects(client.completions.create({ model: 'base', prompt: ['Hi!', 'REFUSE_LATE'], echo: true, max_tokens: 2, stream: true }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.code, 'context_length_exceeded');
    return true;
  });
});

await check('error-rate-limit', async () => {
  const limited = new OpenAI({ apiKey: process.env.NOZZLE_LIMITED_KEY, baseURL, maxRetries: 0 });
  await assert.rejects(limited.chat.completions.create({ model: 'base', messages: [{ role: 'user', content: 'hi' }] }), (e) => {
    assert.ok(e instanceof OpenAI.RateLimitError, String(e));
    assert.equal(e.status, 429);
    assert.equal(e.code, 'rate_limit_exceeded');
    assert.ok(Number(e.headers.get('retry-after')) >= 1, 'retry-after ' + e.headers.get('retry-after'));
    return true;
  });
});

// A reasoning model: its thoughts in reasoning_content (a field the SDK
// passes through), chat_template_kwargs (sent as an extra body field), and
// the answer sent back as the SDK returned it.
const thinker = new OpenAI({ apiKey: process.env.NOZZLE_REASONING_KEY, baseURL: process.env.NOZZLE_REASONING_URL + '/v1', maxRetries: 0 });
const question = { role: 'user', content: 'Say hello' };
let thought;

await check('reasoning', async () => {
  const r = await thinker.chat.completions.create({ model: 'base', messages: [question], chat_template_kwargs: { enable_thinking: true } });
  thought = r.choices[0].message;
  assert.equal(thought.reasoning_content, 'The user greets me.');
  assert.equal(thought.content, 'Hello!');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 4);
});

await check('reasoning-stream', async () => {
  const stream = await thinker.chat.completions.create({ model: 'base', messages: [question], stream: true, stream_options: { include_usage: true } });
  let reasoning = '', text = '', usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
      if (c.delta.content) text += c.delta.content;
    }
  }
  assert.equal(reasoning, 'The user greets me.');
  assert.equal(text, 'Hello!');
  assert.equal(usage.completion_tokens_details.reasoning_tokens, 4);
});

await check('reasoning-max-tokens', async () => {
  const r = await thinker.chat.completions.create({ model: 'base', messages: [question], max_tokens: 2 });
  assert.equal(r.choices[0].message.reasoning_content, 'The user');
  assert.equal(r.choices[0].message.content, null);
  assert.equal(r.choices[0].finish_reason, 'length');
});

await check('reasoning-multi-turn', async () => {
  // the message as the SDK gave it, reasoning_content and all (the Go
  // side checks that the runtime got it)
  const r = await thinker.chat.completions.create({ model: 'base', messages: [question, thought, { role: 'user', content: 'Again' }] });
  assert.equal(r.choices[0].message.content, 'Hello!');
});

await check('responses', async () => {
  const r = await client.responses.create({
    model: 'base',
    instructions: 'Be brief.',
    input: [{ role: 'user', content: [{ type: 'input_text', text: 'Say hello' }] }],
    max_output_tokens: 64,
    temperature: 0,
    store: false,
    metadata: { k: 'v' },
  });
  assert.equal(r.object, 'response');
  assert.ok(r.id.startsWith('resp_'), r.id);
  assert.equal(r.status, 'completed');
  assert.equal(r.model, 'tiny-llama');
  assert.equal(r.output_text, want);
  assert.equal(r.output[0].type, 'message');
  assert.equal(r.output[0].content[0].type, 'output_text');
  assert.equal(r.instructions, 'Be brief.');
  assert.equal(r.max_output_tokens, 64);
  assert.deepEqual(r.metadata, { k: 'v' });
  assert.equal(r.usage.output_tokens, 6);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + 6);
  assert.equal(r.usage.input_tokens_details.cached_tokens, 0);
});

await check('responses-incomplete', async () => {
  const r = await client.responses.create({ model: 'base', input: 'Say hello', max_output_tokens: 3 });
  assert.equal(r.status, 'incomplete');
  assert.equal(r.incomplete_details.reason, 'max_output_tokens');
  assert.equal(r.output_text, 'Hello from the');
});

await check('responses-stream', async () => {
  const stream = await client.responses.create({ model: 'base', input: 'Say hello', stream: true });
  const types = [];
  let text = '', done = null, seq = -1;
  for await (const ev of stream) {
    types.push(ev.type);
    assert.equal(ev.sequence_number, seq + 1);
    seq = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') done = ev.response;
  }
  assert.equal(text, want);
  assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
  assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed']);
  assert.equal(done.output[0].content[0].text, want);
  assert.equal(done.usage.output_tokens, 6);
});

await check('responses-stream-helper', async () => {
  // the SDK's own accumulation of the events
  const stream = client.responses.stream({ model: 'base', input: 'Say hello' });
  let text = '';
  stream.on('response.output_text.delta', (ev) => { text += ev.delta; });
  const r = await stream.finalResponse();
  assert.equal(text, want);
  assert.equal(r.output[0].content[0].text, want); // (the helper's final response has no output_text without parseable input)
  assert.equal(r.status, 'completed');
});

await check('responses-tools', async () => {
  // function tools offered, and a call and its output handed back
  const r = await client.responses.create({
    model: 'base',
    tools: [{ type: 'function', name: 'get_weather', description: 'Weather of a city.', strict: true,
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false } }],
    input: [
      { role: 'user', content: 'Weather in Bern?' },
      { type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: '{"city":"Bern"}' },
      { type: 'function_call_output', call_id: 'call_1', output: '{"temp":19}' },
    ],
  });
  assert.equal(r.output_text, want);
  assert.equal(r.tools[0].name, 'get_weather');
});

await check('responses-refused', async () => {
  await assert.rejects(client.responses.create({ model: 'base', input: 'hi', conversation: 'resp_1' }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'conversation');
    return true;
  });
  // a server without a conversation store finds none
  await assert.rejects(client.responses.create({ model: 'base', input: 'hi', conversation: 'conv_1' }), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(client.responses.create({ model: 'base', input: 'hi', tools: [{ type: 'web_search' }] }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'tools[0].type');
    return true;
  });
});

const store = new OpenAI({ apiKey: process.env.NOZZLE_STORE_KEY, baseURL: process.env.NOZZLE_STORE_URL + '/v1', maxRetries: 0 });
const other = new OpenAI({ apiKey: process.env.NOZZLE_STORE_OTHER_KEY, baseURL: process.env.NOZZLE_STORE_URL + '/v1', maxRetries: 0 });

await check('responses-stored', async () => {
  const r1 = await store.responses.create({ model: 'base', instructions: 'Be brief.', input: 'My name is Ada.' });
  assert.equal(r1.store, true);
  const got = await store.responses.retrieve(r1.id);
  assert.equal(got.id, r1.id);
  assert.equal(got.output_text, want);
  assert.deepEqual(got.output, r1.output);
  const r2 = await store.responses.create({ model: 'base', previous_response_id: r1.id, input: [{ role: 'user', content: 'What is my name?' }] });
  assert.equal(r2.previous_response_id, r1.id);
  const s3 = await store.responses.create({ model: 'base', previous_response_id: r2.id, input: 'Once more.', stream: true });
  let r3 = null;
  for await (const ev of s3) if (ev.type === 'response.completed') r3 = ev.response;
  assert.equal((await store.responses.retrieve(r3.id)).output[0].content[0].text, want);

  // the conversation's items, newest first by default, paged by the SDK
  const items = [];
  for await (const item of store.responses.inputItems.list(r3.id, { limit: 2 })) items.push(item);
  assert.deepEqual(items.map((i) => i.type), ['message', 'message', 'message', 'message', 'message']);
  assert.deepEqual(items.map((i) => i.role), ['user', 'assistant', 'user', 'assistant', 'user']);
  assert.equal(items[0].content[0].text, 'Once more.');
  assert.equal(items[4].content[0].type, 'input_text');
  assert.equal(items[4].content[0].text, 'My name is Ada.');
  const page = await store.responses.inputItems.list(r3.id, { order: 'asc', limit: 1 });
  assert.equal(page.data[0].id, items[4].id);
  assert.equal(page.has_more, true);

  // another tenant finds nothing
  await assert.rejects(other.responses.retrieve(r1.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(other.responses.create({ model: 'base', input: 'hi', previous_response_id: r1.id }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.param, 'previous_response_id');
    return true;
  });

  // deleted: gone, and not to be continued
  await store.responses.delete(r3.id);
  await assert.rejects(store.responses.retrieve(r3.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(store.responses.delete(r3.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(store.responses.create({ model: 'base', input: 'hi', previous_response_id: r3.id }), (e) => e instanceof OpenAI.NotFoundError);

  // store: false is not kept
  const gone = await store.responses.create({ model: 'base', input: 'hi', store: false });
  assert.equal(gone.store, false);
  await assert.rejects(store.responses.retrieve(gone.id), (e) => e instanceof OpenAI.NotFoundError);
});

await check('responses-retrieve-stream', async () => {
  // a stored response streamed back: the live stream's events, numbered from 0
  const r = await store.responses.create({ model: 'base', input: 'Say hello' });
  const s = await store.responses.retrieve(r.id, { stream: true });
  let text = '', seq = -1, done = null;
  for await (const ev of s) {
    assert.equal(ev.sequence_number, seq + 1);
    seq = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') done = ev.response;
  }
  assert.equal(text, want);
  assert.equal(done.id, r.id);
  assert.deepEqual(done.output, r.output);
  assert.deepEqual(done.usage, r.usage);
  // resumed after an event: only those after it
  const rest = [];
  for await (const ev of await store.responses.retrieve(r.id, { stream: true, starting_after: seq - 1 })) rest.push(ev);
  assert.deepEqual(rest.map((e) => [e.type, e.sequence_number]), [['response.completed', seq]]);
  // the SDK's stream helper over a stored response
  const final = await store.responses.stream({ response_id: r.id }).finalResponse();
  assert.equal(final.id, r.id);
  assert.equal(final.output[0].content[0].text, want);
  await assert.rejects(other.responses.retrieve(r.id, { stream: true }), (e) => e instanceof OpenAI.NotFoundError);
});

await check('batches', async () => {
  // upload a batch's input, run it, read its output
  const lines = [
    { custom_id: 'greet', method: 'POST', url: '/v1/chat/completions', body: { model: 'base', messages: [{ role: 'user', content: 'Say hello' }] } },
    { custom_id: 'again', method: 'POST', url: '/v1/chat/completions', body: { model: 'base', messages: [{ role: 'user', content: 'Once more' }], max_tokens: 3 } },
  ];
  const jsonl = lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
  const file = await store.files.create({ file: await toFile(Buffer.from(jsonl), 'batch.jsonl'), purpose: 'batch' });
  assert.equal(file.object, 'file');
  assert.equal(file.purpose, 'batch');
  assert.equal(file.bytes, Buffer.byteLength(jsonl));
  assert.equal(file.filename, 'batch.jsonl');
  assert.equal((await store.files.retrieve(file.id)).id, file.id);
  assert.equal(await (await store.files.content(file.id)).text(), jsonl);
  await assert.rejects(other.files.retrieve(file.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(store.files.create({ file: await toFile(Buffer.from(jsonl), 'x.jsonl'), purpose: 'fine-tune' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'purpose');

  let batch = await store.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { job: 'sdk' } });
  assert.equal(batch.object, 'batch');
  assert.equal(batch.status, 'validating');
  assert.equal(batch.expires_at, batch.created_at + 24 * 3600);
  assert.deepEqual(batch.metadata, { job: 'sdk' });
  assert.equal(batch.model, 'base'); // the model its first line names
  for (let i = 0; i < 200 && !['completed', 'failed', 'expired', 'cancelled'].includes(batch.status); i++) {
    await new Promise((r) => setTimeout(r, 50));
    batch = await store.batches.retrieve(batch.id);
  }
  assert.equal(batch.status, 'completed', JSON.stringify(batch));
  assert.deepEqual(batch.request_counts, { total: 2, completed: 2, failed: 0 });
  assert.equal(batch.model, 'base');
  assert.ok(batch.in_progress_at && batch.finalizing_at && batch.completed_at);
  assert.equal(batch.usage.total_tokens, batch.usage.input_tokens + batch.usage.output_tokens);
  assert.equal(batch.error_file_id, null);
  const out = (await (await store.files.content(batch.output_file_id)).text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(out.map((o) => o.custom_id), ['greet', 'again']); // in input order
  for (const o of out) {
    assert.equal(o.response.status_code, 200);
    assert.equal(o.error, null);
    assert.ok(o.id.startsWith('batch_req_'));
    assert.equal(o.response.body.object, 'chat.completion');
  }
  assert.equal(out.find((o) => o.custom_id === 'greet').response.body.choices[0].message.content, 'Hello from the fake runtime.');
  const outFile = await store.files.retrieve(batch.output_file_id);
  assert.equal(outFile.purpose, 'batch_output');

  const listed = [];
  for await (const b of store.batches.list({ limit: 1 })) listed.push(b.id);
  assert.ok(listed.includes(batch.id));
  const files = await store.files.list({ purpose: 'batch' });
  assert.ok(files.data.some((f) => f.id === file.id));
  await assert.rejects(store.batches.cancel(batch.id), (e) => e instanceof OpenAI.ConflictError);
  await assert.rejects(other.batches.retrieve(batch.id), (e) => e instanceof OpenAI.NotFoundError);
  const del = await store.files.delete(file.id);
  assert.deepEqual(del, { id: file.id, object: 'file', deleted: true });
  await assert.rejects(store.files.retrieve(file.id), (e) => e instanceof OpenAI.NotFoundError);
});

await check('conversations', async () => {
  const conv = await store.conversations.create({ metadata: { topic: 'names' }, items: [{ type: 'message', role: 'developer', content: 'Be brief.' }] });
  assert.equal(conv.object, 'conversation');
  assert.match(conv.id, /^conv_/);
  assert.deepEqual(conv.metadata, { topic: 'names' });
  assert.ok(Number.isInteger(conv.created_at));
  // two responses in it: the second sees the first
  const r1 = await store.responses.create({ model: 'base', conversation: conv.id, input: 'My name is Ada.' });
  assert.deepEqual(r1.conversation, { id: conv.id });
  const s2 = await store.responses.create({ model: 'base', conversation: { id: conv.id }, input: [{ role: 'user', content: 'What is my name?' }], stream: true });
  let r2;
  for await (const ev of s2) if (ev.type === 'response.completed') r2 = ev.response;
  assert.deepEqual(r2.conversation, { id: conv.id });
  assert.equal(r2.output[0].content[0].text, want);
  // its items, newest first by default, a page at a time (auto-paging)
  const items = [];
  for await (const item of store.conversations.items.list(conv.id, { limit: 2 })) items.push(item);
  assert.deepEqual(items.map((i) => i.type), ['message', 'message', 'message', 'message', 'message']);
  assert.deepEqual(items.map((i) => i.role), ['assistant', 'user', 'assistant', 'user', 'developer']);
  assert.equal(items[0].id, r2.output[0].id);
  assert.equal(items[1].content[0].text, 'What is my name?');
  assert.equal(items[2].id, r1.output[0].id);
  assert.equal(items[3].content[0].type, 'input_text');
  const asc = await store.conversations.items.list(conv.id, { order: 'asc', limit: 1 });
  assert.equal(asc.data[0].id, items[4].id);
  assert.equal(asc.has_more, true);
  const one = await store.conversations.items.retrieve(items[1].id, { conversation_id: conv.id });
  assert.deepEqual(one, items[1]);
  // add, update, delete an item
  const added = await store.conversations.items.create(conv.id, { items: [{ type: 'message', role: 'user', content: 'Noted.' }] });
  assert.equal(added.object, 'list');
  assert.equal(added.data.length, 1);
  assert.match(added.data[0].id, /^msg_/);
  const updated = await store.conversations.update(conv.id, { metadata: { topic: 'ada' } });
  assert.deepEqual(updated.metadata, { topic: 'ada' });
  assert.deepEqual((await store.conversations.retrieve(conv.id)).metadata, { topic: 'ada' });
  const after = await store.conversations.items.delete(added.data[0].id, { conversation_id: conv.id });
  assert.equal(after.id, conv.id);
  await assert.rejects(store.conversations.items.retrieve(added.data[0].id, { conversation_id: conv.id }), (e) => e instanceof OpenAI.NotFoundError);
  // conversation and previous_response_id together: refused, naming it
  await assert.rejects(store.responses.create({ model: 'base', conversation: conv.id, previous_response_id: r1.id, input: 'hi' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'conversation');
  // another tenant's: not found
  await assert.rejects(other.conversations.retrieve(conv.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(other.responses.create({ model: 'base', conversation: conv.id, input: 'hi' }), (e) => e instanceof OpenAI.NotFoundError);
  // deleted: gone
  const del = await store.conversations.delete(conv.id);
  assert.deepEqual(del, { id: conv.id, object: 'conversation.deleted', deleted: true });
  await assert.rejects(store.conversations.retrieve(conv.id), (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(store.conversations.items.list(conv.id), (e) => e instanceof OpenAI.NotFoundError);
});

await check('responses-stored-tools', async () => {
  // a tool-calling loop through previous_response_id
  const tools = [{ type: 'function', name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } }];
  const r1 = await store.responses.create({ model: 'base', tools, input: 'Weather in Bern?' });
  const r2 = await store.responses.create({
    model: 'base', tools, previous_response_id: r1.id,
    input: [{ type: 'function_call_output', call_id: 'call_1', output: '{"temp":19}' }],
  });
  const items = await store.responses.inputItems.list(r2.id, { order: 'asc' });
  assert.deepEqual(items.data.map((i) => i.type), ['message', 'message', 'function_call_output']);
  assert.equal(items.data[2].call_id, 'call_1');
});

console.log('all ok');
