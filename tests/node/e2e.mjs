// The official openai Node SDK against a running Relay: chat streaming and the Responses API.
// Usage: RELAY_URL=http://127.0.0.1:PORT/v1 RELAY_KEY=... MODEL=llama3.2 node e2e.mjs
// Prints one JSON object with what each call produced; the pytest side asserts on it.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.RELAY_URL, apiKey: process.env.RELAY_KEY, maxRetries: 0 });
const model = process.env.MODEL;
const out = {};

const stream = await client.chat.completions.create({
  model, stream: true, stream_options: { include_usage: true },
  messages: [{ role: "user", content: "Hi" }],
});
let text = "";
let usage = null;
for await (const chunk of stream) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
out.chatStream = { text, usage };

const runner = client.chat.completions.stream({ model, messages: [{ role: "user", content: "Hi" }] });
const completion = await runner.finalChatCompletion();
out.chatHelper = { text: completion.choices[0].message.content, finish: completion.choices[0].finish_reason };

const created = await client.responses.create({ model, input: "Hi" });
out.response = { text: created.output_text, status: created.status };

const events = [];
const responseStream = await client.responses.create({ model, input: "Hi", stream: true });
for await (const event of responseStream) events.push(event.type);
out.responseEvents = events;

const helper = client.responses.stream({ model, input: "Hi", previous_response_id: created.id });
const final = await helper.finalResponse();
out.responseHelper = { text: final.output_text, previous: final.previous_response_id };

try {
  await client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] });
} catch (error) {
  out.error = { name: error.constructor.name, status: error.status, code: error.code };
}

console.log(JSON.stringify(out));
