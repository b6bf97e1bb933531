// The floor any Worker-based gateway pays: forward the request to the upstream as it is.
// With `?io`, the I/O floor: what a gateway that counts tokens cannot skip, with no decision
// (the twin of bench/common/wasm-passthrough's `?io`, in JS).
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.search === "?io") return io(request, env.UPSTREAM + url.pathname);
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
