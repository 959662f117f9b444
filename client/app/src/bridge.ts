// How the window talks to plg_app_core: through Tauri's IPC in the desktop app, or over HTTP
// to the test bridge (plg-app-bridge) in a browser. Both reach the same `App::dispatch`.

import type { AppEvent, CmdError } from "./types";

export interface Bridge {
  readonly kind: "tauri" | "http";
  call<T>(cmd: string, args?: unknown): Promise<T>;
  listen(cb: (ev: AppEvent) => void): void;
}

interface TauriGlobal {
  core: { invoke(cmd: string, args: unknown): Promise<unknown> };
  event: { listen(name: string, cb: (e: { payload: unknown }) => void): Promise<unknown> };
}

/** Normalises whatever a failed call threw into a `CmdError`. */
export function toCmdError(e: unknown): CmdError {
  if (e && typeof e === "object" && "code" in e && "message" in e) {
    return { code: String((e as CmdError).code), message: String((e as CmdError).message) };
  }
  return { code: "failed", message: e instanceof Error ? e.message : String(e) };
}

function tauriBridge(t: TauriGlobal): Bridge {
  return {
    kind: "tauri",
    async call<T>(cmd: string, args?: unknown): Promise<T> {
      try {
        return (await t.core.invoke("call", { cmd, args: args ?? null })) as T;
      } catch (e) {
        throw toCmdError(e);
      }
    },
    listen(cb) {
      void t.event.listen("plg-event", (e) => cb(e.payload as AppEvent));
    },
  };
}

export function httpBridge(base: string, fetchFn: typeof fetch = fetch): Bridge {
  return {
    kind: "http",
    async call<T>(cmd: string, args?: unknown): Promise<T> {
      let resp: Response;
      try {
        resp = await fetchFn(`${base}/api/call/${cmd}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(args ?? null),
        });
      } catch (e) {
        throw toCmdError(e);
      }
      const body = await resp.json().catch(() => null);
      if (!resp.ok) throw toCmdError(body?.error ?? { code: "http", message: `HTTP ${resp.status}` });
      return body as T;
    },
    listen(cb) {
      const es = new EventSource(`${base}/api/events`);
      es.onmessage = (m) => cb(JSON.parse(m.data) as AppEvent);
    },
  };
}

/** The Tauri bridge inside the app, the HTTP bridge elsewhere. */
export function pickBridge(w: { __TAURI__?: TauriGlobal; location: { origin: string } }): Bridge {
  return w.__TAURI__ ? tauriBridge(w.__TAURI__) : httpBridge(w.location.origin);
}
