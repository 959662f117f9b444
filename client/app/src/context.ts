// What every screen gets: the bridge, the shared model and navigation.

import type { Bridge } from "./bridge";
import type { RouteView, StateView, Summary, Tick, SessionInfo, Notice } from "./types";

export type View = "games" | "route" | "dashboard" | "subscription" | "settings";

export interface Model {
  state: StateView;
  view: View;
  session: SessionInfo | null;
  /** The last ticks, oldest first (at most HISTORY). */
  ticks: Tick[];
  summary: Summary | null;
  /** Game picked on the games screen, for the route screen. */
  picked: { slug: string; name: string } | null;
  route: RouteView | null;
  /** Recent notices, newest first, with the local time they came. */
  notices: (Notice & { at: string; secs?: number })[];
}

export const HISTORY = 60;

export interface Ctx {
  bridge: Bridge;
  model: Model;
  go(view: View): void;
  render(): void;
  toast(title: string, body?: string, kind?: "error" | "info"): void;
}

/** Appends a tick, keeping the last `HISTORY`. */
export function pushTick(ticks: Tick[], t: Tick): Tick[] {
  const out = ticks.length >= HISTORY ? ticks.slice(ticks.length - HISTORY + 1) : ticks.slice();
  out.push(t);
  return out;
}
