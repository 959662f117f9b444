// End-to-end: the built frontend, served by plg-app-bridge against a local demo mesh (real
// billing, relay nodes and an echo game server on loopback), driven in headless Chromium:
// sign up (with the trial) → pick the game → route → connect → live numbers change →
// disconnect → summary; then subscription and settings (language switch). Screenshots of
// every screen go to $SCREENSHOTS (if set).
//
// Env: BRIDGE_BIN (default ../../target/debug/plg-app-bridge under CARGO_TARGET_DIR),
// CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (a folder; unset = no screenshots).

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const app = resolve(here, "..");
const target = process.env.CARGO_TARGET_DIR ?? join(app, "src-tauri", "target");
const bin = process.env.BRIDGE_BIN ?? join(target, "debug", "plg-app-bridge");
const shots = process.env.SCREENSHOTS ? resolve(process.env.SCREENSHOTS) : null;
const STEP = 20_000;

let passed = 0;
let failed = 0;
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
    throw e;
  }
}
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function startBridge() {
  return new Promise((ok, fail) => {
    const p = spawn(bin, ["--dist", join(app, "dist")], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, PLG_LOG: process.env.PLG_LOG ?? "warn" } });
    const timer = setTimeout(() => fail(new Error("the bridge did not print its address within 60 s")), 60_000);
    let out = "";
    p.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/bridge (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        ok({ proc: p, url: m[1] });
      }
    });
    p.on("error", (e) => fail(new Error(`cannot start the bridge ${bin}: ${e.message} (build it: cargo build -p plg-app-bridge)`)));
    p.on("exit", (code) => fail(new Error(`the bridge exited (${code}) before serving: ${out}`)));
  });
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.waitForTimeout(300); // let the last render settle
  await page.screenshot({ path: join(shots, `${name}.png`) });
}

const text = (page, id) => page.getByTestId(id).innerText();

const bridge = await startBridge();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let code = 0;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "dark" });
  const page = await ctx.newPage();
  page.setDefaultTimeout(STEP);
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  await page.goto(bridge.url);

  await step("sign-in screen shows the trial offer", async () => {
    await page.getByTestId("signin-submit").waitFor();
    check(await page.getByTestId("trial").isChecked(), "trial checkbox on by default");
    await shot(page, "signin");
  });

  await step("a wrong password is refused with billing's message", async () => {
    await page.getByTestId("tab-in").click();
    await page.getByTestId("email").fill("nobody@demo.plg");
    await page.getByTestId("password").fill("not the password");
    await page.getByTestId("signin-submit").click();
    await page.getByTestId("signin-error").filter({ hasText: /./ }).waitFor();
    await page.getByTestId("tab-up").click();
  });

  await step("sign up with the trial → games", async () => {
    await page.getByTestId("email").fill(`gamer-${Date.now()}@demo.plg`);
    await page.getByTestId("password").fill("correct horse battery staple");
    await page.getByTestId("signin-submit").click();
    await page.getByTestId("game-demo").waitFor();
    const n = await page.locator(".tile").count();
    check(n > 10, `the catalog has many games (${n})`);
  });

  await step("the running demo game is detected and offered", async () => {
    // The bridge names its own process as the demo game's; detection runs every 3 s.
    await page.getByTestId("detected-banner").waitFor();
    check((await page.getByTestId("detected-banner").innerText()).includes("Local demo game"), "banner names the game");
    check((await page.getByTestId("game-demo").innerText()).includes("Running"), "tile has the Running badge");
    await shot(page, "games");
  });

  await step("search filters the grid", async () => {
    await page.getByTestId("games-search").fill("demo");
    await page.waitForFunction(() => document.querySelectorAll(".tile").length === 1);
    check((await page.locator(".tile").first().innerText()).includes("Local demo game"), "the demo game is the match");
  });

  await step("route: candidate nodes with the recommended exit", async () => {
    await page.getByTestId("game-demo").click();
    const rows = page.getByTestId("route-nodes").locator("tbody tr");
    await rows.first().waitFor();
    check((await rows.count()) >= 2, "two nodes offered");
    check((await rows.first().innerText()).includes("Recommended exit"), "first node recommended");
    const planned = await page.getByTestId("route-paths").innerText();
    check(/Path 0: straight to/.test(planned) && /Path 1: through node-/.test(planned), `second path through another node (${planned.replace(/\n/g, " / ")})`);
    const map = await page.getByTestId("route-map").innerText();
    check(/node-\d/.test(map) && !/node-[0-9a-f]{12}/.test(map), `the route picture names nodes by their names, not ids (${map.replace(/\n/g, " / ")})`);
    check((await page.getByTestId("map-path").count()) === 2, "the picture draws both paths");
    await shot(page, "route");
  });

  await step("region picker: Auto or a region with nodes; picking one previews the route there", async () => {
    const options = await page.getByTestId("region").locator("option").allInnerTexts();
    check(options.length === 2 && /Auto/.test(options[0]) && options[1] === "local", `choices: ${options.join(", ")}`);
    await page.getByTestId("region").selectOption("local");
    await page.getByTestId("route-nodes").locator("tbody tr").first().waitFor();
    check((await page.getByTestId("region").inputValue()) === "local", "the pick is kept");
    check((await page.getByTestId("route-nodes").locator("tbody tr").first().innerText()).includes("Recommended exit"), "an exit is recommended in the region");
  });

  await step("the whole route screen works at 1120×740 and 1366×768: Connect on screen, no sideways scroll", async () => {
    for (const [width, height] of [[1120, 740], [1366, 768]]) {
      await page.setViewportSize({ width, height });
      await page.evaluate(() => window.scrollTo(0, 0));
      const box = await page.getByTestId("connect").boundingBox();
      check(box && box.y >= 0 && box.y + box.height <= height, `Connect inside the ${width}×${height} window without scrolling (${box ? Math.round(box.y + box.height) : "none"} px)`);
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      check(wide <= width, `no horizontal scroll at ${width}×${height} (${wide} px)`);
      await shot(page, `route-${width}x${height}`);
    }
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  let first;
  await step("connect → live numbers", async () => {
    await page.getByTestId("connect").click();
    await page.getByTestId("disconnect").waitFor();
    await page.waitForFunction(() => !document.querySelector('[data-testid="stat-ping"]')?.textContent?.includes("—"), null, { timeout: STEP });
    first = { ping: await text(page, "stat-ping"), traffic: await text(page, "stat-traffic"), dur: await text(page, "duration") };
    check(/ms$/.test(first.ping), `ping shows milliseconds (${first.ping})`);
  });

  await step("the numbers keep changing, two routes active", async () => {
    await page.waitForFunction((t) => document.querySelector('[data-testid="stat-traffic"]')?.textContent !== t, first.traffic, { timeout: STEP });
    await page.waitForFunction(() => /2 routes active/.test(document.querySelector('[data-testid="routes-active"]')?.textContent ?? ""), null, { timeout: STEP });
    const later = await text(page, "duration");
    check(later !== first.dur, `duration advanced (${first.dur} → ${later})`);
    // Let the charts fill for the screenshot.
    await page.waitForTimeout(12_000);
    const paths = await page.getByTestId("paths").innerText();
    check(/Path 0/.test(paths) && /Path 1/.test(paths), "both paths listed");
    check(/straight to the exit/.test(paths) && /through node-/.test(paths), "path 1 relayed by another node");
    const map = await page.getByTestId("route-map").innerText();
    check(/% first/.test(map), `the picture shows which path delivered first (${map.replace(/\n/g, " / ")})`);
    await page.setViewportSize({ width: 1280, height: 1000 });
    await shot(page, "dashboard");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await step("failover: the exit dies, the labels follow the session to the other node", async () => {
    const state = await (await fetch(`${bridge.url}/api/call/state`, { method: "POST" })).json();
    const exit = state.session.node;
    const before = await text(page, "session-via");
    check(before.includes(exit.name), `header names the exit ${exit.name} (${before})`);
    const killed = await fetch(`${bridge.url}/test/kill-node`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ control_addr: exit.control_addr }) });
    check(killed.status === 204, `exit ${exit.name} killed (${killed.status})`);
    await page.waitForFunction((name) => !(document.querySelector('[data-testid="session-via"]')?.textContent ?? name).includes(name), exit.name, { timeout: 30_000 });
    const after = await text(page, "session-via");
    // (The events list, in the same card, rightly still names the dead node.)
    const paths = (await page.getByTestId("path-route").allInnerTexts()).join(" / ");
    const map = await page.getByTestId("route-map").innerText();
    check(/node-\d/.test(after) && !paths.includes(exit.name) && !map.includes(exit.name), `header, paths and picture follow: ${after} / ${paths} / ${map.replace(/\n/g, " / ")}`);
    check((await page.getByTestId("events").innerText()).length > 0, "the failover is in the events");
    await page.getByTestId("chart-mark").first().waitFor({ state: "attached", timeout: 15_000 });
    check((await page.getByTestId("chart-mark").count()) > 0, "and marked on the charts' timeline");
    await shot(page, "failover");
  });

  await step("disconnect → before/after summary", async () => {
    await page.getByTestId("disconnect").click();
    await page.getByTestId("summary").waitFor();
    const s = await page.getByTestId("summary").innerText();
    check(/Before \(direct\)/i.test(s) && /After \(PLG\)/i.test(s), "summary compares before and after");
    check((await text(page, "conn-status")).includes("Not connected"), "sidebar says not connected");
    await page.getByTestId("history").locator("tbody tr").first().waitFor();
    const row = await page.getByTestId("history").locator("tbody tr").first().innerText();
    check(/Local demo game/.test(row) && /ms/.test(row), `the session is in the history with before/after (${row.replace(/\s+/g, " ")})`);
    await shot(page, "summary");
  });

  await step("subscription shows the trial", async () => {
    await page.getByTestId("nav-subscription").click();
    await page.getByTestId("plan-name").filter({ hasText: "trial" }).waitFor();
    await page.locator(".plan-offer").first().waitFor();
    await shot(page, "subscription");
  });

  await step("settings: switch to Russian and back", async () => {
    await page.getByTestId("nav-settings").click();
    await page.getByTestId("logs-dir").waitFor();
    await shot(page, "settings");
    await page.getByTestId("set-language").selectOption("ru");
    await page.getByTestId("settings-save").click();
    await page.getByTestId("nav-games").filter({ hasText: "Игры" }).waitFor();
    await page.getByTestId("nav-games").click();
    await page.getByTestId("games-search").fill("");
    await page.waitForFunction(() => document.querySelectorAll(".tile").length > 10);
    check((await page.getByTestId("games-search").getAttribute("placeholder")) === "Поиск игр…", "Russian placeholder");
    await shot(page, "games-ru");
    await page.getByTestId("nav-settings").click();
    await page.getByTestId("set-language").selectOption("en");
    await page.getByTestId("set-theme").selectOption("light");
    await page.getByTestId("settings-save").click();
    await page.getByTestId("nav-games").filter({ hasText: "Games" }).waitFor();
    await shot(page, "settings-light");
  });

  await step("settings: FPS boost is off by default and kept when turned on", async () => {
    await page.getByTestId("nav-settings").click();
    const box = () => page.getByTestId("set-fps_boost");
    check(!(await box().isChecked()), "FPS boost off by default");
    check((await page.getByTestId("set-fps_boost-hint").textContent()).includes("GameMode"), "FPS boost hint");
    await box().check();
    await page.getByTestId("settings-save").click();
    await page.getByTestId("nav-games").click();
    await page.getByTestId("nav-settings").click();
    check(await box().isChecked(), "FPS boost saved");
    await box().uncheck();
    await page.getByTestId("settings-save").click();
  });
} catch {
  code = 1;
} finally {
  await browser.close();
  bridge.proc.kill("SIGINT");
  console.log(`${passed} passed, ${failed} failed`);
}
process.exit(code);
