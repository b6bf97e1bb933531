// Test-only entry module: the gateway's entry (src/index.js, over build/) unchanged, plus two
// test routes for the end-to-end suite, in the real workerd runtime. Never deployed:
// wrangler.toml's main is src/index.js.
//
// POST /__test/bucket-fault/<account:model> {"delay_ms":N,"error":bool,"fail_writes":bool}
//   makes one bucket's Durable Object slow, failing, or unable to write to its SQLite.
// POST /__test/bucket-fetch/<account:model> (a bucket call's JSON)
//   sends the call through the bucket object's `fetch`, as an isolate of a previous deployment
//   does during a rollout, and answers the object's answer.
// ANY /__test/client-leaves/<ms>/<path>
//   calls the gateway's <path> as a client that leaves after <ms>. Locally workerd learns that
//   a client left only from its caller (it never reads a finished request's socket), so the
//   call goes through this worker's own loopback binding (ctx.exports) and is aborted by the
//   caller, as Cloudflare's edge does in production. Answers {"left": true} or {"left": false,
//   "status"}.
import Gateway, { BucketDo as RealBucketDo } from "__ROOT__/src/index.js";
import { BucketDo as WasmBucket } from "__ROOT__/build/index.js";
export { MeterDo } from "__ROOT__/src/index.js";

const FAULT_PATH = "/__test/bucket-fault/";
const FETCH_PATH = "/__test/bucket-fetch/";
const LEAVING_PATH = "/__test/client-leaves/";

export default class extends Gateway {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname.startsWith(FAULT_PATH)) {
      const name = decodeURIComponent(url.pathname.slice(FAULT_PATH.length));
      const stub = this.env.BUCKET.get(this.env.BUCKET.idFromName(`bucket:${name}`));
      return stub.fetch("https://bucket/__fault", { method: "POST", body: await request.text() });
    }
    if (url.pathname.startsWith(FETCH_PATH)) {
      const name = decodeURIComponent(url.pathname.slice(FETCH_PATH.length));
      const stub = this.env.BUCKET.get(this.env.BUCKET.idFromName(`bucket:${name}`));
      const answer = await stub.fetch("https://bucket/", { method: "POST", body: await request.text() });
      return new Response(await answer.text(), { status: answer.status });
    }
    if (url.pathname.startsWith(LEAVING_PATH)) {
      const [ms, ...path] = url.pathname.slice(LEAVING_PATH.length).split("/");
      const call = new Request(new URL(`/${path.join("/")}`, url), {
        method: request.method,
        headers: request.headers,
        body: request.method === "GET" ? undefined : await request.arrayBuffer(),
        signal: AbortSignal.timeout(Number(ms)),
      });
      try {
        const answer = await this.ctx.exports.default.fetch(call);
        await answer.arrayBuffer();
        return Response.json({ left: false, status: answer.status });
      } catch (e) {
        return Response.json({ left: true, error: e.name });
      }
    }
    return super.fetch(request);
  }
}

export class BucketDo extends RealBucketDo {
  constructor(state, env) {
    super(state, env);
    const fault = { delay_ms: 0, error: false, fail_writes: false };
    // The object's Rust side again, on a state whose SQLite writes can be made to fail.
    this.inner = new WasmBucket(withFailingWrites(state, fault), env);
    this.fault = fault;
  }

  async fetch(request) {
    if (new URL(request.url).pathname === "/__fault") {
      Object.assign(this.fault, await request.json());
      return new Response("ok");
    }
    return super.fetch(request);
  }

  async call(text) {
    if (this.fault.delay_ms > 0) {
      await new Promise((resolve) => setTimeout(resolve, this.fault.delay_ms));
    }
    if (this.fault.error) {
      throw new Error("injected bucket failure");
    }
    return super.call(text);
  }
}

// The object's state with `storage.sql.exec` refusing writes while `fault.fail_writes` is set.
function withFailingWrites(state, fault) {
  const bound = (target, value) => (typeof value === "function" ? value.bind(target) : value);
  const sql = new Proxy(state.storage.sql, {
    get(target, prop) {
      if (prop !== "exec") return bound(target, Reflect.get(target, prop));
      return (query, ...args) => {
        if (fault.fail_writes && /^\s*(INSERT|UPDATE|DELETE)/i.test(query)) {
          throw new Error("injected SQLite write failure");
        }
        return target.exec(query, ...args);
      };
    },
  });
  const storage = new Proxy(state.storage, {
    get: (target, prop) => (prop === "sql" ? sql : bound(target, Reflect.get(target, prop))),
  });
  return new Proxy(state, {
    get: (target, prop) => (prop === "storage" ? storage : bound(target, Reflect.get(target, prop))),
  });
}
