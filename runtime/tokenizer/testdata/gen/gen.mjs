// Generates the golden files that runtime/tokenizer's tests compare against:
// token ids and decodings from Hugging Face's JS tokenizer
// (@huggingface/transformers) for every line of ../corpus.json, and chat
// templates rendered by @huggingface/jinja for ../chat_cases.json.
//
// Run offline from this folder: npm ci --ignore-scripts && node gen.mjs
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { env, PreTrainedTokenizer } from "@huggingface/transformers";
import { Template } from "@huggingface/jinja";

env.allowRemoteModels = false;
env.allowLocalModels = false;

const here = path.dirname(fileURLToPath(import.meta.url));
const td = path.join(here, "..");
const readJSON = (p) => JSON.parse(fs.readFileSync(p, "utf8"));
// A model file, or its gzip-compressed copy (name + ".gz") where the file
// itself is too large to commit.
const readMaybeGz = (p) => {
  if (fs.existsSync(p + ".gz")) return JSON.parse(zlib.gunzipSync(fs.readFileSync(p + ".gz")).toString("utf8"));
  return readJSON(p);
};
const readTokenizerJSON = (dir) => readMaybeGz(path.join(dir, "tokenizer.json"));
const readConfigJSON = (dir) => readMaybeGz(path.join(dir, "tokenizer_config.json"));

const corpus = readJSON(path.join(td, "corpus.json"));
const models = ["llama2", "llama3", "qwen3", "gemma2", "gemma3", "gpt4o"];
if (fs.existsSync(path.join(td, "demo", "tokenizer.json"))) models.push("demo");

// A tokenizer that does not recognise special tokens in the text: the
// special added tokens are removed from the added-token list (the model's
// vocabulary is unchanged), which is what Hugging Face's
// split_special_tokens=True does.
function withoutSpecialParsing(tj) {
  const copy = structuredClone(tj);
  copy.added_tokens = copy.added_tokens.filter((t) => !t.special);
  return copy;
}

const bench = {};
for (const name of models) {
  const dir = name === "demo" ? path.join(td, "demo") : path.join(td, "models", name);
  const tj = readTokenizerJSON(dir);
  const cfg = readConfigJSON(dir);
  const tok = new PreTrainedTokenizer(tj, cfg);
  const tokNoParse = new PreTrainedTokenizer(withoutSpecialParsing(tj), cfg);
  const dec = (ids, skip) => tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
  const lines = corpus.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: true });
    const raw = tok.encode(text, { add_special_tokens: false });
    const noParse = tokNoParse.encode(text, { add_special_tokens: false });
    return {
      text,
      ids,
      ids_no_special: raw,
      ids_no_parse: noParse,
      decode: ids.length ? dec(ids, false) : "",
      decode_skip: ids.length ? dec(ids, true) : "",
    };
  });
  fs.writeFileSync(path.join(td, "golden", `${name}.json`), JSON.stringify({ model: name, lines }, null, 0) + "\n");

  // Throughput of the JS tokenizer on the same corpus, for comparison with
  // the Go benchmark (BenchmarkEncode).
  const text = corpus.join("\n");
  const bytes = Buffer.byteLength(text, "utf8");
  for (let i = 0; i < 3; i++) tok.encode(text, { add_special_tokens: false });
  const t0 = process.hrtime.bigint();
  let n = 0;
  while (Number(process.hrtime.bigint() - t0) < 1e9) { tok.encode(text, { add_special_tokens: false }); n++; }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  bench[name] = +(bytes * n / secs / 1e6).toFixed(2);
  console.log(`${name}: ${lines.length} lines, JS encode ${bench[name]} MB/s`);
}
fs.writeFileSync(path.join(td, "golden", "js_bench.json"), JSON.stringify(bench, null, 1) + "\n");

// Chat templates.
const cfgOf = (m) => readConfigJSON(path.join(td, "models", m));
const tokenOf = (v) => (v && typeof v === "object" ? v.content : v) ?? null;
const templates = [
  { name: "llama2-chat", model: "llama2", source: fs.readFileSync(path.join(td, "templates", "llama2-chat.jinja"), "utf8") },
  { name: "llama3", model: "llama3", source: cfgOf("llama3").chat_template },
  { name: "llama3.2-instruct", model: "llama3", source: fs.readFileSync(path.join(td, "templates", "llama3.2-instruct.jinja"), "utf8"), vars: { date_string: "26 Jul 2024" } },
  { name: "mistral-v3-tools", model: "llama2", source: fs.readFileSync(path.join(td, "templates", "mistral-v3-tools.jinja"), "utf8") },
  { name: "qwen3", model: "qwen3", source: cfgOf("qwen3").chat_template },
  { name: "qwen3-no-thinking", model: "qwen3", source: cfgOf("qwen3").chat_template, vars: { enable_thinking: false } },
  // Gemma 2's tokenizer_config.json (as packaged) has no template: this is
  // google/gemma-2-9b-it's, which refuses a system message.
  { name: "gemma2-it", model: "gemma2", source: fs.readFileSync(path.join(td, "templates", "gemma2-it.jinja"), "utf8") },
  { name: "gemma3", model: "gemma3", source: cfgOf("gemma3").chat_template },
];
const cases = readJSON(path.join(td, "chat_cases.json"));
// A tool call's arguments reach the template as a dict, as transformers
// and the OpenAI-compatible servers hand them over (the API sends text).
function withArgumentObjects(messages) {
  return messages.map((m) => !m.tool_calls ? m : {
    ...m,
    tool_calls: m.tool_calls.map((c) => ({ ...c, function: { ...c.function, arguments: JSON.parse(c.function.arguments) } })),
  });
}
const chat = [];
const chatTokenizers = {};
for (const t of templates) {
  const cfg = cfgOf(t.model);
  chatTokenizers[t.model] ??= new PreTrainedTokenizer(readTokenizerJSON(path.join(td, "models", t.model)), cfg);
  const tok = chatTokenizers[t.model];
  const tpl = new Template(t.source);
  for (const c of cases) {
    for (const agp of [false, true]) {
      const vars = {
        messages: withArgumentObjects(c.messages),
        add_generation_prompt: agp,
        tools: null,
        documents: null,
        bos_token: tokenOf(cfg.bos_token) ?? "",
        eos_token: tokenOf(cfg.eos_token) ?? "",
        unk_token: tokenOf(cfg.unk_token) ?? "",
        pad_token: tokenOf(cfg.pad_token) ?? "",
        ...(c.vars ?? {}),
        ...(t.vars ?? {}),
      };
      let out = null, error = null;
      try { out = tpl.render(vars); } catch (e) { error = String(e.message); }
      // The rendered prompt's ids: special tokens parsed, none added.
      const ids = out === null ? null : tok.encode(out, { add_special_tokens: false });
      chat.push({ template: t.name, model: t.model, vars: t.vars ?? {}, case: c.name, add_generation_prompt: agp, prompt: out, ids, error });
    }
  }
}
fs.writeFileSync(path.join(td, "golden", "chat.json"), JSON.stringify(chat, null, 1) + "\n");
console.log(`chat: ${chat.length} renders, ${chat.filter((c) => c.error).length} refused`);
