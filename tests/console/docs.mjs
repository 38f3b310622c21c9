// The API docs page (/docs) in a real browser, run by tests/e2e/openapi.rs
// against a live agentflow: Debian's chromium driven by playwright-core
// (installed for the console test). The page must render the gateway's
// document, call nothing but this server, break no CSP rule, and "Try it
// out" must work. Prints one JSON object: {"ok": true, ...facts} or
// {"ok": false, "step": ..., "error": ...}; exits 1 on failure.
//
// Env: BASE_URL, DOCS_PATH (the page), CHROMIUM (path).
import { chromium } from "playwright-core";

const base = process.env.BASE_URL;
const facts = { operations: 0, external: [], problems: [] };
let step = "start";

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update"],
});
try {
  const page = await browser.newPage();
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith(base + "/") && !url.startsWith("data:")) facts.external.push(url);
  });
  // CSP violations and script errors are reported on the console.
  page.on("console", (m) => {
    if (m.type() === "error") facts.problems.push(m.text());
  });
  page.on("pageerror", (e) => facts.problems.push(e.message));

  step = "load";
  await page.goto(base + process.env.DOCS_PATH);
  await page.waitForSelector(".opblock", { timeout: 20000 });
  facts.title = (await page.textContent(".info .title")).trim();
  check(facts.title.startsWith("agentflow"), `title is ${facts.title}`);
  facts.operations = await page.locator(".opblock").count();
  check(facts.operations > 40, `only ${facts.operations} operations shown`);

  step = "try it out";
  const ping = page.locator(".opblock", { hasText: "/ping" }).first();
  await ping.locator(".opblock-summary").click();
  await ping.locator(".try-out__btn").click();
  await ping.locator(".execute").click();
  const status = ping.locator(".live-responses-table tbody .response-col_status").first();
  await status.waitFor({ timeout: 10000 });
  facts.ping = (await status.textContent()).trim();
  check(facts.ping === "200", `/ping answered ${facts.ping} in the page`);

  step = "schemas";
  // The schemas section (open by default) lists every component schema.
  // OpenAPI 3.1 documents get Swagger UI's JSON Schema 2020-12 renderer.
  const schema = ".models article.json-schema-2020-12";
  await page.waitForSelector(schema, { timeout: 10000 });
  facts.schemas = await page.locator(schema).count();
  check(facts.schemas > 20, `only ${facts.schemas} schemas shown`);

  step = "offline";
  check(facts.external.length === 0, `requests left the server: ${facts.external.join(", ")}`);
  check(facts.problems.length === 0, `console errors: ${facts.problems.join(" | ")}`);
  console.log(JSON.stringify({ ok: true, ...facts }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, step, error: String(e.message || e), ...facts }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
