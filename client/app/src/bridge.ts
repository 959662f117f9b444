// How the window talks to plg_app_core: through Tauri's IPC in the desktop app, or over HTTP
// to the test bridge (plg-app-bridge) in a browser. Both reach the same `App::dispatch`, which
// parses the name and arguments into the Rust `Command` these types are generated from.

import type { AppEvent, CmdError, Command, Replies } from "./types";

/** A command's name. */
export type CommandName = Command["cmd"];
/** The arguments of command `K` (`never` if it takes none). */
export type ArgsOf<K extends CommandName> = Extract<Command, { cmd: K }> extends { args: infer A } ? A : never;
/** `call`'s arguments after the name: none, or the command's. */
export type CallArgs<K extends CommandName> = [ArgsOf<K>] extends [never] ? [] : [args: ArgsOf<K>];

export interface Bridge {
  readonly kind: "tauri" | "http";
  call<K extends CommandName>(cmd: K, ...args: CallArgs<K>): Promise<Replies[K]>;
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
    async call<K extends CommandName>(cmd: K, ...rest: CallArgs<K>): Promise<Replies[K]> {
      try {
        return (await t.core.invoke("call", { cmd, args: rest[0] ?? null })) as Replies[K];
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
    async call<K extends CommandName>(cmd: K, ...rest: CallArgs<K>): Promise<Replies[K]> {
      const args = rest[0];
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
      return body as Replies[K];
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
