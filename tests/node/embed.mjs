// Calls the service with the official `openai` npm package, unchanged but for baseURL.
// Usage: node embed.mjs BASE_URL API_KEY < texts.json ; prints the vectors it got as JSON.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const texts = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => (data += chunk));
  process.stdin.on("end", () => resolve(data));
}));

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

// Default arguments: the client asks for base64 and decodes it itself.
const byDefault = await client.embeddings.create({ model: "text-embedding-3-small", input: texts });
const asFloat = await client.embeddings.create({
  model: "text-embedding-3-small",
  input: texts,
  encoding_format: "float",
});
const truncated = await client.embeddings.create({ model: "text-embedding-3-small", input: texts[0], dimensions: 32 });
const models = [];
for await (const model of client.models.list()) models.push(model.id);

let authError = null;
try {
  await new OpenAI({ baseURL, apiKey: "sk-wrong-key-123456", maxRetries: 0 }).embeddings.create({
    model: "any",
    input: "hello",
  });
} catch (error) {
  authError = { status: error.status, code: error.code, type: error.type };
}

const vectors = (response) => response.data.map((item) => Array.from(item.embedding));
console.log(JSON.stringify({
  model: byDefault.model,
  usage: byDefault.usage,
  indices: byDefault.data.map((item) => item.index),
  byDefault: vectors(byDefault),
  asFloat: vectors(asFloat),
  truncated: vectors(truncated),
  models,
  authError,
}));
