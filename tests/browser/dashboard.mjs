// The dashboard in a real browser (issue 11): headless Chromium opens /admin/ with the admin
// token (HTTP Basic, as a person would type it), finds a bucket's row, reads its state and
// counts, clicks its Clear button and waits until the page shows it available; and reads the
// clients' rows (each client's cells by its id) and the state of a bucket whose account has no
// key set (--unset); then sends a test alert from the page and reads what it says.
//
//   node tests/browser/dashboard.mjs --gateway URL --token ADMIN_TOKEN --bucket acct:model \
//     --unset acct:model --out DIR
//
// Prints one JSON line {"before", "after", "unset", "alertTest", "errors"} and saves screenshots
// under DIR.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    gateway: { type: "string" },
    token: { type: "string" },
    bucket: { type: "string" },
    unset: { type: "string" },
    out: { type: "string" },
  },
});
mkdirSync(args.out, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const context = await browser.newContext({
    httpCredentials: { username: "admin", password: args.token },
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(`${args.gateway}/admin/`);
  const row = page.locator(`tr[data-bucket="${args.bucket}"]`);
  await row.waitFor({ timeout: 15_000 });
  const read = async () => ({
    state: (await row.locator("td.state").innerText()).trim(),
    cells: await row.locator("td").allInnerTexts(),
    chartBars: await page.locator("#chart rect").count(),
    clients: await page.locator("#clients tbody tr").evaluateAll((rows) =>
      Object.fromEntries(rows.map((r) => [r.dataset.client, [...r.cells].map((c) => c.innerText.trim())])),
    ),
  });
  const before = await read();
  // A bucket whose account has no key set says so.
  const unset = (await page.locator(`tr[data-bucket="${args.unset}"] td.state`).innerText()).trim();
  await page.screenshot({ path: join(args.out, "dashboard-parked.png"), fullPage: true });
  await row.locator("button[data-clear]").click();
  await page.waitForFunction(
    (b) => document.querySelector(`tr[data-bucket="${b}"] td.state`)?.innerText.includes("available"),
    args.bucket,
    { timeout: 15_000 },
  );
  const after = await read();
  await page.screenshot({ path: join(args.out, "dashboard-cleared.png"), fullPage: true });
  // The operator checks the alert webhook from the page.
  await page.locator("#test-alert").click();
  await page.waitForFunction(() => /^(Delivered|Not delivered)/.test(document.querySelector("#alert-result")?.innerText), null, { timeout: 15_000 });
  const alertTest = (await page.locator("#alert-result").innerText()).trim();
  console.log(JSON.stringify({ before, after, unset, alertTest, errors }));
} finally {
  await browser.close();
}
