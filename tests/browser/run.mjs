// The real-browser test (issue 10): headless Chromium (Debian's `chromium`, installed by
// scripts/bootstrap.sh) loads a page from another origin that uses the official `openai`
// package with a user token, through the gateway; the same page from an origin the client
// does not allow must be refused by the browser's CORS check.
//
//   node tests/browser/run.mjs --gateway URL --token JWT --allowed-port A --other-port B --out DIR
//
// Serves the page on 127.0.0.1:A and 127.0.0.1:B, prints one JSON line
// {"allowed": <page result>, "other": <page result>} and saves screenshots under DIR.
import { build } from "esbuild";
import { createServer } from "node:http";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    gateway: { type: "string" },
    token: { type: "string" },
    "allowed-port": { type: "string" },
    "other-port": { type: "string" },
    out: { type: "string" },
  },
});

const bundle = await build({
  entryPoints: [join(here, "app.mjs")],
  bundle: true,
  format: "esm",
  platform: "browser",
  write: false,
  logLevel: "error",
});
const files = {
  "/": ["text/html", readFileSync(join(here, "index.html"))],
  "/app.js": ["text/javascript", bundle.outputFiles[0].contents],
};

function serve(port) {
  const server = createServer((req, res) => {
    const file = files[new URL(req.url, "http://x").pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  return new Promise((resolve) => server.listen(Number(port), "127.0.0.1", () => resolve(server)));
}

const servers = [await serve(args["allowed-port"]), await serve(args["other-port"])];
mkdirSync(args.out, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const results = {};
  for (const [name, port] of [["allowed", args["allowed-port"]], ["other", args["other-port"]]]) {
    const page = await browser.newPage();
    const hash = new URLSearchParams({ gateway: args.gateway, token: args.token });
    await page.goto(`http://127.0.0.1:${port}/#${hash}`);
    await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 30_000 });
    results[name] = await page.evaluate(() => window.__result);
    await page.screenshot({ path: join(args.out, `browser-${name}.png`) });
    await page.close();
  }
  console.log(JSON.stringify(results));
} finally {
  await browser.close();
  for (const s of servers) s.close();
}
