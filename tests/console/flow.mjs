// The console's real-browser walkthrough (issue #13), run by
// tests/e2e/console.rs against a live agentflow: Debian's chromium driven by
// playwright-core. Prints one JSON object: {"ok": true, ...facts} or
// {"ok": false, "step": ..., "error": ...}; exits 1 on failure.
//
// Env: BASE_URL, ADMIN_USER, ADMIN_PASSWORD, SHOTS_DIR, CHROMIUM (path).
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.BASE_URL;
const shots = process.env.SHOTS_DIR;
const adminUser = process.env.ADMIN_USER;
const adminPassword = process.env.ADMIN_PASSWORD;
const bobPassword = "bob-browser-password";
const XSS_NAME = `"><script>window.__xss=1</script><img src=x onerror="window.__xss=2">'`;
const XSS_LOGIN = `<script>window.__xss=3</script>"'><img src=x onerror=__xss=4>`;

const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const facts = { steps: [], load_ms: {} };
let step = "start";
const dirs = [];

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function browserFor(name) {
  const dir = mkdtempSync(join(tmpdir(), `af-console-${name}-`));
  dirs.push(dir);
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  page.on("dialog", (d) => { problems.push(`dialog: ${d.message()}`); d.dismiss(); });
  // Script errors and CSP violations count; a refused request (the 401 of a
  // refused sign-in, /favicon.ico) is logged as "Failed to load resource".
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
  return { context, page, problems };
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function go(page, path, label) {
  const started = Date.now();
  await page.goto(base + path, { waitUntil: "load" });
  if (label) facts.load_ms[label] = Date.now() - started;
}

async function signIn(page, user, password) {
  await go(page, "/admin/login");
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("#sign-in button[type=submit]")]);
}

function userRow(page, name) {
  return page.locator(`#users tr[data-username="${name}"]`);
}

async function noXss(page) {
  return page.evaluate(() => window.__xss === undefined);
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const admin = await browserFor("admin");
  const bob = await browserFor("bob");
  const a = admin.page;
  const b = bob.page;

  step = "admin signs in";
  await go(a, "/admin");
  check(a.url().endsWith("/admin/login"), `an anonymous /admin goes to sign in, got ${a.url()}`);
  await shot(a, "01-sign-in");
  await signIn(a, adminUser, adminPassword);
  check(new URL(a.url()).pathname === "/admin/users", `superuser lands on users, got ${a.url()}`);
  const cookies = await admin.context.cookies();
  const access = cookies.find((c) => c.name === "af_access");
  check(access && access.httpOnly && access.sameSite === "Strict", `token cookie is HttpOnly+Strict: ${JSON.stringify(access)}`);
  check((await a.evaluate(() => document.cookie)) === "", "no cookie is readable by scripts");
  facts.steps.push("admin signed in");

  step = "create bob inactive";
  await a.fill("#new-user input[name=username]", "bob");
  await a.fill("#new-user input[name=password]", bobPassword);
  await a.uncheck("#new-user input[name=is_active]");
  await Promise.all([a.waitForNavigation({ waitUntil: "load" }), a.click("#new-user button[type=submit]")]);
  check((await userRow(a, "bob").locator("td").nth(1).innerText()) === "no", "bob is inactive");
  await go(a, "/admin/users", "users");
  await shot(a, "02-users");
  facts.steps.push("bob created inactive");

  step = "bob cannot sign in";
  await signIn(b, "bob", bobPassword);
  check(new URL(b.url()).pathname === "/admin/login", "inactive bob stays on sign in");
  const refusal = await b.locator(".notice.error").innerText();
  check(/not active/i.test(refusal), `inactive bob is told why: ${refusal}`);
  await shot(b, "03-bob-inactive");
  facts.steps.push("inactive bob refused");

  step = "activate bob";
  await Promise.all([a.waitForNavigation({ waitUntil: "load" }), userRow(a, "bob").locator("button[value=activate]").click()]);
  check((await userRow(a, "bob").locator("td").nth(1).innerText()) === "yes", "bob is active");
  facts.steps.push("bob activated");

  step = "bob signs in and creates an API key";
  await signIn(b, "bob", bobPassword);
  check(new URL(b.url()).pathname === "/admin/account", `bob lands on his account, got ${b.url()}`);
  await b.fill("#new-key-form input[name=name]", "laptop");
  await Promise.all([b.waitForNavigation({ waitUntil: "load" }), b.click("#new-key-form button[type=submit]")]);
  const key = await b.inputValue("#new-key");
  check(key.startsWith("sk-"), `the key is shown: ${key}`);
  await shot(b, "04-api-key-shown-once");
  await b.click("button[data-copy=new-key]");
  // The button changes once the clipboard write settles (a promise): wait
  // for it rather than read the label right after the click.
  const copied = await b
    .locator("button[data-copy=new-key]", { hasText: "Copied" })
    .waitFor({ timeout: 5000 })
    .then(() => true, () => false);
  check(copied, "the copy button works");
  const whoami = await fetch(base + "/v1/whoami", { headers: { "x-api-key": key } });
  const who = await whoami.json();
  check(whoami.status === 200 && who.claims.username === "bob", `the key authenticates: ${whoami.status} ${JSON.stringify(who)}`);
  await go(b, "/admin/account", "account");
  check((await b.locator("#new-key").count()) === 0, "the key is shown once only");
  check(!(await b.content()).includes(key), "the full key is not on the page again");
  check((await b.locator("#keys tbody tr").count()) === 1, "the key is listed, masked");
  facts.steps.push("bob's key works and was shown once");

  step = "bob opens the admin users page";
  await go(b, "/admin/users");
  check(new URL(b.url()).pathname === "/admin/account", `bob is shown his own account, got ${b.url()}`);
  const html = await b.content();
  check(!html.includes("data-username") && !html.includes(adminUser + "</td>"), "no admin data on bob's page");
  check((await b.locator("nav a[href='/admin/users']").count()) === 0, "no Users link for bob");
  await shot(b, "05-bob-own-account");
  facts.steps.push("bob sees only his account");

  step = "XSS in a variable name";
  await b.fill("#new-variable input[name=name]", XSS_NAME);
  await b.fill("#new-variable input[name=value]", "harmless");
  await b.selectOption("#new-variable select[name=type]", "generic");
  await Promise.all([b.waitForNavigation({ waitUntil: "load" }), b.click("#new-variable button[type=submit]")]);
  const shown = await b.locator("#variables td.name").first().innerText();
  check(shown === XSS_NAME, `the variable name renders as text: ${shown}`);
  check(await noXss(b), "the variable name did not run");
  facts.steps.push("variable name rendered as text");

  step = "superuser deactivates bob";
  await go(a, "/admin/users");
  await Promise.all([a.waitForNavigation({ waitUntil: "load" }), userRow(a, "bob").locator("button[value=deactivate]").click()]);
  check((await userRow(a, "bob").locator("td").nth(1).innerText()) === "no", "bob is inactive again");
  facts.steps.push("bob deactivated");

  step = "bob's next action signs him out";
  await b.fill("#new-key-form input[name=name]", "second");
  await Promise.all([b.waitForNavigation({ waitUntil: "load" }), b.click("#new-key-form button[type=submit]")]);
  check(new URL(b.url()).pathname === "/admin/login", `bob is sent to sign in, got ${b.url()}`);
  const ended = await b.locator(".notice.error").innerText();
  check(/session has ended/i.test(ended), `bob is told: ${ended}`);
  check(!(await bob.context.cookies()).some((c) => c.name === "af_access"), "bob's token cookie is gone");
  await shot(b, "06-bob-signed-out");
  facts.steps.push("bob signed out");

  step = "XSS in a login username";
  await b.fill("input[name=username]", XSS_LOGIN);
  await b.fill("input[name=password]", "whatever-password");
  await Promise.all([b.waitForNavigation({ waitUntil: "load" }), b.click("#sign-in button[type=submit]")]);
  check((await b.inputValue("input[name=username]")) === XSS_LOGIN, "the username is kept as text");
  check(await noXss(b), "the login username did not run");
  facts.steps.push("login username rendered as text");

  step = "the audit page shows the events";
  await go(a, "/admin/audit", "audit");
  const types = await a.locator("#audit td.type").allInnerTexts();
  for (const t of ["login.succeeded", "user.created", "login.failed", "user.changed", "api_key.created", "api_key.first_used", "variable.created"]) {
    check(types.includes(t), `the audit page lists ${t}: ${types.join(",")}`);
  }
  const text = await a.locator("#audit").innerText();
  check(text.includes(XSS_LOGIN), "the hostile username is in the trail as text");
  check(await noXss(a), "nothing ran on the audit page");
  await shot(a, "07-audit");
  await a.selectOption("#audit-filter select[name=type]", "user.changed");
  await a.fill("#audit-filter input[name=user]", "bob");
  await Promise.all([a.waitForNavigation({ waitUntil: "load" }), a.click("#audit-filter button[type=submit]")]);
  const filtered = await a.locator("#audit td.type").allInnerTexts();
  check(filtered.length === 2 && filtered.every((t) => t === "user.changed"), `filtered: ${filtered}`);
  facts.audit_types = types;
  facts.steps.push("audit page lists the flow");

  step = "plugins page";
  await go(a, "/admin/plugins", "plugins");
  const plugins = await a.locator("#plugins tbody tr").count();
  check(plugins >= 1, "plugins are listed");
  facts.plugin_rows = plugins;
  await shot(a, "08-plugins");

  step = "no script errors";
  const problems = [...admin.problems, ...bob.problems];
  check(problems.length === 0, `browser problems: ${problems.join(" | ")}`);

  await admin.context.close();
  await bob.context.close();
  facts.ok = true;
}

try {
  await main();
  console.log(JSON.stringify(facts));
} catch (e) {
  console.log(JSON.stringify({ ok: false, step, error: String(e && e.stack || e), ...facts }));
  process.exitCode = 1;
} finally {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  setTimeout(() => process.exit(process.exitCode || 0), 100).unref();
}
