// Small JavaScript helpers of the glue (glue/js.rs binds them): each does in one call what would
// take several calls across the wasm boundary from Rust, each with its strings copied, or a Rust
// closure that the JS side must keep and later free.

/** Sets on `headers` each pair of `lines` ("name\nvalue\n..."; values hold no line break). */
export function setHeaders(headers, lines) {
  const parts = lines.split("\n");
  for (let i = 0; i + 1 < parts.length; i += 2) headers.set(parts[i], parts[i + 1]);
}

/** Aborts `controller` with a `TimeoutError` after `ms`; returns the timer, for `cancelTimer`. */
export function abortAfter(controller, ms) {
  return setTimeout(() => controller.abort(new DOMException("Deadline passed", "TimeoutError")), ms);
}

/** Stops a timer of `abortAfter`. */
export function cancelTimer(timer) {
  clearTimeout(timer);
}

/** Whether `signal` was aborted by the timer of `abortAfter`. */
export function timedOut(signal) {
  return signal.aborted && signal.reason instanceof DOMException && signal.reason.name === "TimeoutError";
}

/**
 * Watches the client of one request. If `signal` aborts (the client left) before the returned
 * `end` is called, calls `left(id)`. Keeps the invocation alive (`ctx.waitUntil`: the runtime
 * cancels a request whose client left, but not its `waitUntil` work) until then, and until
 * the promise `left` returns or `end` is given (if any) settles.
 */
export function watch(ctx, signal, left, id) {
  let end;
  ctx.waitUntil(
    new Promise((resolve) => {
      end = resolve;
      signal.addEventListener("abort", () => resolve(left(id)), { once: true });
    }),
  );
  return end;
}

/** A promise that resolves when `signal` aborts (never, if it does not). */
export function whenAborted(signal) {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/** Sends `method` to `url` with the API `key` and no body, aborted by `signal`: resolves to [the
 * response, its body read whole (a Uint8Array)]. */
export async function call(method, url, key, signal) {
  const response = await fetch(url, { method, headers: { authorization: `Bearer ${key}` }, signal });
  return [response, new Uint8Array(await response.arrayBuffer())];
}

/**
 * POSTs `body` (JSON bytes) to `url` with the API `key`, aborted by `signal`. Resolves to
 * [the response, when its headers arrived (Unix ms), its body read whole (a Uint8Array), or
 * null for a served stream (2xx and `stream`), whose body is read as it flows].
 */
export async function post(url, key, body, signal, stream, extra) {
  const headers = { "content-type": "application/json", authorization: `Bearer ${key}` };
  for (let i = 0; extra && i + 1 < extra.length; i += 2) headers[extra[i]] = extra[i + 1];
  const response = await fetch(url, {
    method: "POST",
    headers,
    body,
    signal,
  });
  const headersAt = Date.now();
  const whole = !(stream && response.ok);
  return [response, headersAt, whole ? new Uint8Array(await response.arrayBuffer()) : null];
}

/**
 * POSTs `body` (JSON text) to the operator's webhook `url`: resolves to the answer's status, or
 * 0 when none came within `ms` or the call failed (never its error, which may hold the URL).
 */
export async function notify(url, body, ms) {
  try {
    const headers = { "content-type": "application/json" };
    const response = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(ms) });
    await response.body?.cancel();
    return response.status;
  } catch {
    return 0;
  }
}
