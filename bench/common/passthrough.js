// The floor any Worker-based gateway pays: forward the request to the upstream as it is.
// With `?io`, the I/O floor: what a gateway that counts tokens cannot skip, with no decision
// (the twin of bench/common/wasm-passthrough's `?io`, in JS). With `?features`, the features
// floor: the I/O floor plus the runtime work the gateway does on every request, still with no
// decision.
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.search === "?io") return io(request, env.UPSTREAM + url.pathname);
    if (url.search === "?features") return features(request, env.UPSTREAM + url.pathname, ctx);
    return fetch(new Request(env.UPSTREAM + url.pathname + url.search, request));
  },
};

// Reads the body whole and parses it (to know the model and count tokens), sends it again as a
// new request under a deadline, reads the answer whole and parses it (for its usage), and
// answers it in a new Response with a header the usage fills (no log line, no key of its own:
// the caller's is passed on).
async function io(request, upstream) {
  const chat = JSON.parse(await request.text());
  const resp = await fetch(upstream, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: request.headers.get("authorization") },
    body: JSON.stringify(chat),
    signal: AbortSignal.timeout(60000),
  });
  const text = await resp.text();
  const usage = JSON.parse(text).usage;
  return new Response(text, {
    status: resp.status,
    headers: { "content-type": "application/json", "x-usage-total-tokens": String(usage?.total_tokens ?? 0) },
  });
}

// The I/O floor with what the gateway keeps on for every request, the way it does it (glue/hold.rs,
// glue/upstream.rs, glue/respond.rs, glue/log.rs): the client watchdog (a `waitUntil` promise
// ended by an abort listener on `request.signal`), the deadline (a timer aborting the call's
// AbortController, cleared once answered), a random request id, the gateway's response headers
// and its one JSON log line. Every value a decision would make is a constant.
async function features(request, upstream, ctx) {
  const started = Date.now();
  const id = "gw-" + Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
  let end;
  ctx.waitUntil(
    new Promise((resolve) => {
      end = resolve;
      request.signal.addEventListener("abort", () => resolve(), { once: true });
    }),
  );
  const chat = JSON.parse(await request.text());
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException("Deadline passed", "TimeoutError")), 60000);
  const resp = await fetch(upstream, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: request.headers.get("authorization") },
    body: JSON.stringify(chat),
    signal: controller.signal,
  });
  const answer = new Uint8Array(await resp.arrayBuffer());
  clearTimeout(timer);
  const usage = JSON.parse(new TextDecoder().decode(answer)).usage ?? {};
  const headers = new Headers({
    "content-type": "application/json",
    "x-gateway-attempts": "1",
    "x-gateway-requested-model": chat.model,
    "x-gateway-served-model": chat.model,
    "x-gateway-upstream": "sim",
    "x-request-id": id,
  });
  console.log(
    JSON.stringify({
      level: "info",
      event: "request",
      request_id: id,
      client: "gateway-keys",
      user: null,
      requested_model: chat.model,
      served_model: chat.model,
      attempts: [{ bucket: `acct-a/${chat.model}`, outcome: "served" }],
      wait_ms: 0,
      status: resp.status,
      latency_ms: Date.now() - started,
      prompt_tokens: usage.prompt_tokens,
      completion_tokens: usage.completion_tokens,
      cost_usd: 0.000012,
    }),
  );
  end();
  return new Response(answer, { status: resp.status, headers });
}
