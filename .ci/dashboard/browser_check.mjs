// The dashboard in a real browser: Debian's chromium driven by puppeteer-core, with axe-core
// checking every page. Usage: node browser_check.mjs URL ADMIN_TOKEN S3_ENDPOINT OUT_DIR
// Saves a screenshot of every page in OUT_DIR; exits non-zero on the first failed check.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import puppeteer from "puppeteer-core";

const require = createRequire(import.meta.url);
const [url, adminToken, s3Endpoint, outDir] = process.argv.slice(2);
fs.mkdirSync(outDir, { recursive: true });
const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const admin = { authorization: `Bearer ${adminToken}`, "content-type": "application/json" };

let checks = 0;
function check(ok, message) {
  if (!ok) throw new Error(`dashboard check failed: ${message}`);
  checks += 1;
}

async function api(method, route, body, headers = admin) {
  const response = await fetch(url + route, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: response.status, json };
}

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage();
// The narrowest window the pages are made for: nothing may be wider than it.
await page.setViewport({ width: 1280, height: 900 });
page.on("pageerror", (e) => { throw new Error(`script error on ${page.url()}: ${e.message}`); });

// Every page is checked by axe; serious and critical findings fail the run.
async function audit(name) {
  const [documentWidth, windowWidth] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  check(documentWidth <= windowWidth, `${name} is ${documentWidth} px wide in a ${windowWidth} px window`);
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) console.log(`axe ${name}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
  check(bad.length === 0, `axe found ${bad.length} serious or critical problems on ${name}`);
  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
  console.log(`ok: ${name} (axe clean, screenshot saved)`);
}

async function go(route) {
  const response = await page.goto(url + route, { waitUntil: "networkidle0" });
  return response;
}

async function submit(selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), page.click(selector)]);
}

try {
  // Sign in: /dashboard sends a stranger to the sign-in form.
  await go("/dashboard");
  check(page.url().endsWith("/dashboard/sign-in"), `not redirected to sign-in: ${page.url()}`);
  await audit("sign-in");
  await page.type("#token", "wrong-token");
  await submit("button[type=submit]");
  check((await page.content()).includes("not the admin token"), "a wrong token is refused");
  await page.type("#token", adminToken);
  await submit("button[type=submit]");
  check(page.url().endsWith("/dashboard"), `signed in lands on the workspaces: ${page.url()}`);
  await audit("workspaces");

  // Data, sent the way an integration sends it: one batch with one invalid object.
  const created = await api("POST", "/eddy/v1/workspaces/default/api-keys", { name: "browser-test" });
  const rest = { authorization: `Bearer ${created.json.key}`, "content-type": "application/json" };
  const users = [];
  for (let i = 0; i < 40; i++) users.push({ external_id: `web-${i}`, email: `web${i}@example.com`, first_name: `Web${i}`, plan: i % 3 === 0 ? "pro" : "free", visits: i });
  users.push({ user_alias: { alias_name: "anon-42", alias_label: "amplitude_id" }, _update_existing_only: false, favourite_colour: "teal" });
  users.push({ plan: "nobody" });
  const events = users.slice(0, 40).map((u, i) => ({ external_id: u.external_id, name: i % 2 ? "played" : "opened", time: new Date().toISOString() }));
  const purchases = [{ external_id: "web-1", product_id: "book", currency: "EUR", price: 9.5, quantity: 2, time: new Date().toISOString() }];
  const track = await api("POST", "/users/track", { attributes: users, events, purchases }, rest);
  check(track.status === 201 && track.json.errors && track.json.errors.length === 1, `track: ${JSON.stringify(track.json)}`);
  const refusal = track.json.errors[0];

  // Overview.
  await go("/dashboard/default");
  const overview = await page.content();
  check(overview.includes("41</span> profiles"), "the overview counts 41 profiles");
  await audit("overview");

  // API log: the request, and the refused object beside Braze's error text.
  await go("/dashboard/default/log");
  const log = await page.$eval("table.log", (t) => t.innerText);
  check(log.includes("POST /users/track"), "the track request is in the log");
  check(log.includes(`${refusal.input_array}[${refusal.index}]`) && log.includes(refusal.type), `the refused object and its error: ${log.slice(0, 400)}`);
  check(log.includes("nobody"), "the refused object is shown");
  await audit("log");
  await page.select("#status", "errors");
  await submit("form.filters button");
  check((await page.$eval("main", (m) => m.innerText)).includes("POST /users/track"), "status filter keeps the refused request");
  await page.click("table.log a");
  await page.waitForSelector("h1");
  check((await page.content()).includes("Refused objects"), "the entry page shows refused objects");
  await audit("log-entry");

  // Users: look a user up by alias.
  await go("/dashboard/default/users");
  await audit("users");
  await page.type("#q", "amplitude_id:anon-42");
  await submit("form.filters button");
  const profileText = await page.$eval("main", (m) => m.innerText);
  check(profileText.includes("favourite_colour") && profileText.includes("teal"), "the alias finds the profile");
  await go("/dashboard/default/users?q=web-1");
  const webOne = await page.$eval("main", (m) => m.innerText);
  check(webOne.includes("book") && webOne.includes("played"), "the profile shows purchases and events");
  await audit("user");

  // Segments: build one in the builder; its live size equals the API's.
  await go("/dashboard/default/segments/new");
  // Before any condition, the builder asks for one instead of calling the filter invalid.
  await page.waitForFunction(() => document.getElementById("size").textContent.includes("add a condition"), { timeout: 10000 });
  await page.type("#name", "pro web users");
  await page.click("[data-builder] button.secondary");
  const row = "[data-builder] .builder-row";
  await page.waitForSelector(row);
  const inputs = await page.$$(`${row} input`);
  await inputs[0].type("plan");
  await inputs[1].type("pro");
  const filter = { and: [{ attribute: "plan", op: "equals", value: "pro" }] };
  const expected = (await api("POST", "/eddy/v1/workspaces/default/segments/size", { filter })).json.size;
  await page.waitForFunction((n) => document.getElementById("size").dataset.size === String(n), { timeout: 10000 }, expected);
  check(expected === 14, `the API sizes the segment at 14 (got ${expected})`);
  check(JSON.parse(await page.$eval("#filter", (t) => t.value)).and[0].value === "pro", "the builder writes the filter");
  await audit("segment-builder");
  await submit("#segment-form button[type=submit]");
  check((await page.content()).includes("14 users in it now"), "the saved segment has the same size");
  await go("/dashboard/default/segments");
  await audit("segments");

  // Cohorts and partners: generate, then rotate a Data Import Key.
  await api("PUT", "/eddy/v1/partners/amplitude", { partner_api_key: "amplitude-partner-key" });
  await go("/dashboard/default/cohorts");
  await submit("td.actions form button");
  const firstKey = await page.$eval("#new-key", (e) => e.textContent.trim());
  const importWith = (key) => api("POST", "/partners/amplitude/cohorts", { partner_api_key: "amplitude-partner-key", client_secret: key, cohort_id: "c-1", name: "Power users", created_at: new Date().toISOString() }, { "content-type": "application/json" });
  check((await importWith(firstKey)).status < 300, "the generated key imports a cohort");
  await submit("td.actions form button");
  const secondKey = await page.$eval("#new-key", (e) => e.textContent.trim());
  check(secondKey !== firstKey, "rotating makes a new key");
  check((await importWith(firstKey)).status === 401, "the rotated key stops working");
  check((await importWith(secondKey)).status < 300, "the new key works");
  await go("/dashboard/default/cohorts");
  check((await page.content()).includes("Power users"), "the cohort is listed");
  await audit("cohorts");

  // Currents: a connector to the test S3 server, created with the form; its state changes.
  await fetch(`${s3Endpoint}/dashboard-currents`, { method: "PUT" });
  await go("/dashboard/default/currents");
  await page.type("#c-name", "s3-from-browser");
  await page.select("#c-type", "s3");
  await page.type("#c-bucket", "dashboard-currents");
  await page.type("#c-region", "us-east-1");
  await page.type("#c-endpoint", s3Endpoint);
  await page.type("#c-access_key_id", "testing");
  await page.type("#c-secret_access_key", "testing");
  await submit("form.create button[type=submit]");
  const stateOf = () => page.$eval('tr[data-connector="s3-from-browser"] [data-state]', (e) => e.textContent.trim());
  check((await stateOf()) === "active", `the new connector is active (${await stateOf()})`);
  await api("POST", "/users/track", { events: [{ external_id: "web-2", name: "played", time: new Date().toISOString() }] }, rest);
  await submit('tr[data-connector="s3-from-browser"] form[action$="/flush"] button');
  const delivered = await page.$eval('tr[data-connector="s3-from-browser"] td.num', (e) => e.textContent.trim());
  check(Number(delivered.replace(/,/g, "")) > 0, `flushing delivers (delivered ${delivered})`);
  await submit('tr[data-connector="s3-from-browser"] form[action$="/pause"] button');
  check((await stateOf()) === "paused", "pausing changes the state");
  // A connector whose store answers with a long error (its URL names a long path): the row
  // still fits the window, the error folds, and every action stays on screen.
  const longPath = "much-too-deeply-nested-prefix/".repeat(20);
  const failing = await api("POST", "/eddy/v1/workspaces/default/currents", { name: "s3-unreachable", type: "s3",
    bucket: "nowhere", region: "us-east-1", endpoint: `http://127.0.0.1:9/${longPath}`, access_key_id: "testing", secret_access_key: "testing",
    validate: false });
  check(failing.status === 201, `the unreachable connector is created (${failing.status} ${JSON.stringify(failing.json)})`);
  await api("POST", "/users/track", { events: [{ external_id: "web-2", name: "played", time: new Date().toISOString() }] }, rest);
  await api("POST", "/eddy/v1/workspaces/default/currents/s3-unreachable/flush");
  await go("/dashboard/default/currents");
  const error = await page.$eval('tr[data-connector="s3-unreachable"] td.error', (e) => e.textContent.trim());
  check(error.length > 120, `the connector shows its long error (${error.length} characters)`);
  const actionsVisible = await page.$$eval('tr[data-connector="s3-unreachable"] td.actions button', (buttons) =>
    buttons.every((b) => { const r = b.getBoundingClientRect(); return r.right <= window.innerWidth && r.left >= 0; }));
  check(actionsVisible, "every action of the connector is on screen");
  await audit("currents");

  // API keys: create one (shown once), use it, revoke it.
  await go("/dashboard/default/keys");
  await page.type("#key-name", "made-in-browser");
  await submit("form[action$='/keys'] button[type=submit]");
  const madeKey = await page.$eval("#new-key", (e) => e.textContent.trim());
  const withKey = { authorization: `Bearer ${madeKey}`, "content-type": "application/json" };
  check((await api("POST", "/users/track", { attributes: [{ external_id: "by-new-key", a: 1 }] }, withKey)).status === 201, "the new key works");
  await audit("keys");
  const revoke = await page.$$eval("tbody tr", (rows) => rows.findIndex((r) => r.innerText.includes("made-in-browser")));
  const buttons = await page.$$("tbody tr form button");
  await Promise.all([page.waitForNavigation({ waitUntil: "networkidle0" }), buttons[revoke].click()]);
  check((await api("POST", "/users/track", { attributes: [{ external_id: "by-new-key", a: 2 }] }, withKey)).status === 401, "the revoked key stops working");

  // Templates and campaigns.
  await go("/dashboard/default/templates");
  await page.$eval("#template", (t) => { t.value = "Hello {{${first_name}}}!"; });
  await page.type("#user", "web-3");
  await submit("main form button[type=submit]");
  check((await page.$eval("#output", (e) => e.textContent)).includes("Hello Web3!"), "the playground renders for the user");
  await audit("templates");
  await go("/dashboard/default/campaigns");
  await audit("campaigns");
  // A campaign created from the form's example definition opens on its own page.
  await submit("form[action$='/campaigns'] button[type=submit]");
  check((await page.$eval("h1", (h) => h.textContent)).includes("Campaign Welcome"), "the example campaign is created");
  await audit("campaign");
  // Its messages previewed for a stored user, as they would be sent.
  await page.type("#preview-user", "web-3");
  await submit("form[action$='/preview'] button[type=submit]");
  check((await page.$$eval("pre.output", (pres) => pres.map((p) => p.textContent).join("\n"))).includes("Web3"), "the campaign is previewed for the user");
  await audit("campaign-preview");

  // Messaging settings: a content block saved from its form is listed with its content.
  await go("/dashboard/default/messaging");
  await page.type("#block-name", "browser-block");
  await page.$eval("#block-content", (t) => { t.value = "Hello {{${first_name}}}"; });
  await submit("form[action$='/messaging/content-blocks'] button[type=submit]");
  check((await page.content()).includes("content block browser-block saved"), "a content block is saved from the dashboard");
  check((await api("GET", "/eddy/v1/workspaces/default/content-blocks/browser-block")).status === 200, "the saved block is in the admin API");
  await audit("messaging");

  // Keyboard: the skip link is the first stop and leads to the content.
  await go("/dashboard/default");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.classList.contains("skip")), "the first Tab reaches the skip link");

  // Sign out: the session ends.
  await submit("form.signout button");
  await go("/dashboard/default");
  check(page.url().endsWith("/dashboard/sign-in"), "signed out");
  console.log(`dashboard: ${checks} checks passed; screenshots in ${outDir}`);
} finally {
  await browser.close();
}
