// The Worker's entry module (wrangler.toml `main`): the Rust build's fetch handler as it is, and
// its two Durable Objects in classes that take RPC calls.
//
// A Durable Object takes RPC calls only if its class extends `DurableObject`, which the classes
// wasm-bindgen generates cannot. Each class here holds the generated one and passes on `call`:
// one JSON text in, the reply's text out, handled synchronously in Rust (glue/bucket.rs,
// glue/meter.rs; called from glue/objects.rs). A call through `fetch` instead costs a Request and
// a Response on each side and a body read on each (about 0.13 ms a call in the overhead
// benchmark); `fetch` stays, for isolates of a previous deployment during a rollout.
import { DurableObject } from "cloudflare:workers";
import gateway, { BucketDo as Bucket, MeterDo as Meter } from "../build/index.js";

export default gateway;

/** The class that takes RPC calls for the generated class `Inner`. */
function takingRpc(Inner) {
  return class extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env);
      this.inner = new Inner(ctx, env);
    }

    call(text) {
      return this.inner.call(text);
    }

    fetch(request) {
      return this.inner.fetch(request);
    }
  };
}

export const BucketDo = takingRpc(Bucket);
export const MeterDo = takingRpc(Meter);
