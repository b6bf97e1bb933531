// The browser app of the Chromium test: the official `openai` package, called straight from
// a page with a user token its backend minted (gateway URL and token come in the URL hash).
// Bundled for the page by run.mjs with esbuild.
import OpenAI from "openai";

const params = new URLSearchParams(location.hash.slice(1));
const client = new OpenAI({
  baseURL: `${params.get("gateway")}/v1`,
  apiKey: params.get("token"),
  dangerouslyAllowBrowser: true,
  maxRetries: 0,
});
const ask = { model: "client-test", messages: [{ role: "user", content: "Say hello" }], max_tokens: 16 };

async function run() {
  const out = {};
  try {
    const { data, response } = await client.chat.completions.create(ask).withResponse();
    out.completion = {
      text: data.choices[0].message.content,
      servedModel: response.headers.get("x-gateway-served-model"),
      requestId: response.headers.get("x-request-id"),
      // The client's own limits, as OpenAI's headers (exposed by CORS).
      limitRequests: response.headers.get("x-ratelimit-limit-requests"),
      remainingRequests: response.headers.get("x-ratelimit-remaining-requests"),
    };
    // What the user has left, as the page would show it (the gateway's own endpoint; a GET with
    // an Authorization header, preflighted).
    const usage = await fetch(`${params.get("gateway")}/v1/usage`, {
      headers: { authorization: `Bearer ${params.get("token")}` },
    });
    const mine = await usage.json();
    out.usage = { status: usage.status, user: mine.user, rpm: mine.limits?.rpm, minuteRequests: mine.minute_requests };
    const stream = await client.chat.completions.create({ ...ask, stream: true });
    let text = "";
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      text += chunk.choices[0]?.delta?.content ?? "";
    }
    out.stream = { text, chunks };
    // The Responses API, whole and streamed, and a stored response deleted (a DELETE,
    // preflighted).
    const answer = await client.responses.create({ model: "client-test", input: "Say hello", max_output_tokens: 16 });
    await client.responses.delete(answer.id);
    let gone = false;
    try {
      await client.responses.retrieve(answer.id);
    } catch (e) {
      gone = e.status === 404;
    }
    let streamed = "";
    let completed = null;
    const events = await client.responses.create({ model: "client-test", input: "Say hello", stream: true });
    for await (const event of events) {
      if (event.type === "response.output_text.delta") streamed += event.delta;
      if (event.type === "response.completed") completed = event.response;
    }
    const completedText = completed?.output?.[0]?.content?.[0]?.text ?? null;
    out.response = { text: answer.output_text, gone, streamed, completedText };
  } catch (e) {
    out.error = { name: e.constructor.name, message: String(e.message) };
  }
  document.getElementById("result").textContent = JSON.stringify(out, null, 2);
  window.__result = out;
}

run();
