// The app's long session (issue 14): the bridge's demo mesh issues 60-second tickets, the
// app connects the demo game through the same handlers the window uses (`/api/call/*`, i.e.
// `plg_app_core::App`), and a game sends 64 sequence-numbered packets a second through the
// session's local port for 220 s. The app must renew at least five times without a word
// from the gamer, and every packet must come back exactly once with no gap over 250 ms.
//
// Env: BRIDGE_BIN (default under CARGO_TARGET_DIR), LONG_SECONDS (default 220).

import { spawn } from "node:child_process";
import dgram from "node:dgram";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const app = resolve(here, "..");
const target = process.env.CARGO_TARGET_DIR ?? join(app, "src-tauri", "target");
const bin = process.env.BRIDGE_BIN ?? join(target, "debug", "plg-app-bridge");
const seconds = Number(process.env.LONG_SECONDS ?? 220);
const RATE = 64;

function startBridge() {
  return new Promise((ok, fail) => {
    const p = spawn(bin, ["--dist", join(app, "dist"), "--ticket-ttl-secs", "60"], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, PLG_LOG: process.env.PLG_LOG ?? "warn" },
    });
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
    p.on("error", (e) => fail(new Error(`cannot start the bridge ${bin}: ${e.message}`)));
  });
}

const bridge = await startBridge();
async function call(cmd, args = {}) {
  const r = await fetch(`${bridge.url}/api/call/${cmd}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(args),
  });
  const body = await r.json();
  if (!r.ok || body?.error) throw new Error(`${cmd}: ${JSON.stringify(body)}`);
  return body;
}

let code = 0;
try {
  const state = await call("state");
  await call("sign_in", {
    billing_url: state.default_billing_url,
    email: `long-${Date.now()}@demo.plg`,
    password: "correct horse battery staple",
    register: true,
    trial: true,
  });
  const info = await call("connect", { game: "demo" });
  const [host, port] = [info.local_addr.replace(/:\d+$/, ""), Number(info.local_addr.match(/:(\d+)$/)[1])];
  console.log(`connected: session ${info.session_id} via ${info.node.id}, game port ${info.local_addr}, ticket until ${info.expires_at}`);

  const total = seconds * RATE;
  const copies = new Uint32Array(total);
  let last = Date.now();
  let longest = 0;
  const sock = dgram.createSocket("udp4");
  sock.on("message", (msg) => {
    if (msg.length < 8) return;
    const seq = Number(msg.readBigUInt64BE(0));
    if (seq < total) copies[seq]++;
    const now = Date.now();
    longest = Math.max(longest, now - last);
    last = now;
  });
  await new Promise((ok) => sock.bind(0, "127.0.0.1", ok));

  const expiries = new Set([info.expires_at]);
  const poll = setInterval(async () => {
    try {
      const s = await call("state");
      if (s.session) expiries.add(s.session.expires_at);
    } catch (e) {
      console.log(`state: ${e.message}`);
    }
  }, 2_000);
  const t0 = Date.now();
  for (let seq = 0; seq < total; seq++) {
    const pkt = Buffer.alloc(32);
    pkt.writeBigUInt64BE(BigInt(seq), 0);
    sock.send(pkt, port, host);
    const due = t0 + ((seq + 1) * 1000) / RATE;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((ok) => setTimeout(ok, wait));
  }
  // The last echoes: wait until every packet is back, at most 2 s.
  const settle = Date.now() + 2_000;
  while (copies.some((c) => c === 0) && Date.now() < settle) await new Promise((ok) => setTimeout(ok, 50));
  clearInterval(poll);
  const s = await call("state");
  if (s.session) expiries.add(s.session.expires_at);
  const lost = copies.filter((c) => c === 0).length;
  const doubled = copies.filter((c) => c > 1).length;
  const renewals = expiries.size - 1;
  console.log(`app long session: ${((Date.now() - t0) / 1000).toFixed(0)} s, ${total} packets, ${renewals} renewals, lost ${lost}, duplicated ${doubled}, longest gap ${longest} ms`);
  const problems = [];
  if (!s.session) problems.push("the session ended");
  if (renewals < 5) problems.push(`only ${renewals} renewals`);
  if (lost > 0) problems.push(`${lost} packets lost`);
  if (doubled > 0) problems.push(`${doubled} packets delivered twice`);
  if (longest > 250) problems.push(`longest gap ${longest} ms`);
  await call("disconnect");
  sock.close();
  if (problems.length) {
    console.log(`FAIL ${problems.join("; ")}`);
    code = 1;
  } else {
    console.log("ok   the app stayed connected across the renewals");
  }
} catch (e) {
  console.log(`FAIL ${e?.stack ?? e}`);
  code = 1;
} finally {
  bridge.proc.kill("SIGTERM");
}
process.exit(code);
