import { describe, expect, it } from "vitest";
import { httpBridge, pickBridge, toCmdError } from "./bridge";
import type { Settings, Summary } from "./types";

function fakeFetch(status: number, body: unknown, seen: { url?: string; init?: RequestInit } = {}): typeof fetch {
  return (async (url: string, init: RequestInit) => {
    seen.url = url;
    seen.init = init;
    return new Response(JSON.stringify(body), { status });
  }) as unknown as typeof fetch;
}

describe("bridge", () => {
  it("posts the command's arguments and returns the answer", async () => {
    const seen: { url?: string; init?: RequestInit } = {};
    const b = httpBridge("http://x", fakeFetch(200, { ok: 1 }, seen));
    expect(await b.call("games", { search: "cs", category: "" })).toEqual({ ok: 1 });
    expect(seen.url).toBe("http://x/api/call/games");
    expect(seen.init?.body).toBe('{"search":"cs","category":""}');
  });

  it("turns error bodies into CmdErrors", async () => {
    const b = httpBridge("", fakeFetch(422, { error: { code: "invalid_credentials", message: "wrong password" } }));
    const creds = { billing_url: "http://b", email: "a@b", password: "wrong password", register: false, trial: false };
    await expect(b.call("sign_in", creds)).rejects.toEqual({ code: "invalid_credentials", message: "wrong password" });
    const b2 = httpBridge("", fakeFetch(502, "gateway"));
    await expect(b2.call("state")).rejects.toEqual({ code: "http", message: "HTTP 502" });
  });

  it("sends no arguments for commands without any", async () => {
    const seen: { url?: string; init?: RequestInit } = {};
    const b = httpBridge("", fakeFetch(200, null, seen));
    expect(await b.call("disconnect")).toBeNull();
    expect(seen.init?.body).toBe("null");
  });

  it("types each command's arguments (checked by tsc in `npm run build`)", () => {
    const b = httpBridge("", fakeFetch(200, {}));
    const never = () => {
      // @ts-expect-error: no such command
      void b.call("nope");
      // @ts-expect-error: connect needs a game
      void b.call("connect");
      // @ts-expect-error: state takes no arguments
      void b.call("state", {});
      // @ts-expect-error: not a language
      const lang: Settings["language"] = "de";
      // @ts-expect-error: the reply of `connect` is a SessionInfo, not a Summary
      const _s: Promise<Summary> = b.call("connect", { game: "demo" });
      void [lang, _s];
    };
    expect(typeof never).toBe("function");
  });

  it("normalises thrown values", () => {
    expect(toCmdError(new Error("boom"))).toEqual({ code: "failed", message: "boom" });
    expect(toCmdError("x")).toEqual({ code: "failed", message: "x" });
  });

  it("picks Tauri when its global exists", async () => {
    const calls: unknown[] = [];
    const tauri = {
      core: { invoke: async (cmd: string, args: unknown) => (calls.push([cmd, args]), 7) },
      event: { listen: async () => undefined },
    };
    const b = pickBridge({ __TAURI__: tauri, location: { origin: "http://o" } });
    expect(b.kind).toBe("tauri");
    expect(await b.call("state")).toBe(7);
    expect(calls).toEqual([["call", { cmd: "state", args: null }]]);
    expect(pickBridge({ location: { origin: "http://o" } }).kind).toBe("http");
  });
});
