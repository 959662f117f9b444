// The route in one picture: the gamer's PC, each path (straight, or through a relay node),
// the exit node and the game server, with node names and regions. Used before connecting
// (route screen) and live (dashboard), so both always draw the session's current route.

import { h } from "../dom";
import { t } from "../i18n";
import type { NodeInfo } from "../types";

/** A node as the picture labels it. */
export type Hop = Pick<NodeInfo, "name" | "region">;

/** One path in the picture. */
export interface MapPath {
  relay: Hop | null;
  /** Live: share of frames this path delivered first, 0..1 (`null`: nothing yet). */
  first?: number | null;
  /** Live: up / suspect / waiting. */
  state?: string;
  primary?: boolean;
}

/** "fra-1 · eu-central", or just the name. */
export function hopLabel(n: Hop): string {
  return n.region ? `${n.name} · ${n.region}` : n.name;
}

/** Share of first copies per path, 0..1 each (`null` where no frame came yet on any path). */
export function firstShares(paths: { first: number }[]): (number | null)[] {
  const total = paths.reduce((s, p) => s + p.first, 0);
  return paths.map((p) => (total > 0 ? p.first / total : null));
}

function node(icon: string, label: string, sub: string | null, cls = ""): HTMLElement {
  return h("div", { class: `hop ${cls}` }, h("div", { class: "hop-icon" }, icon), h("div", { class: "small" }, label), sub ? h("div", { class: "muted small" }, sub) : null);
}

/** PC → paths → exit → game server. */
export function routeMap(paths: MapPath[], exit: Hop | null, game: string): HTMLElement {
  return h(
    "div",
    { class: "route-map card", "data-testid": "route-map" },
    node("▣", t("map.pc"), null),
    h(
      "div",
      { class: "map-paths" },
      paths.map((p, i) =>
        h(
          "div",
          { class: `map-path ${p.state ?? ""}${p.primary ? " primary" : ""}`, "data-testid": "map-path" },
          h("span", { class: "map-label small muted" }, t("dash.path", { n: i })),
          h("div", { class: "wire" }),
          p.relay ? h("span", { class: "chip small", "data-testid": "map-relay" }, hopLabel(p.relay)) : null,
          p.relay ? h("div", { class: "wire" }) : null,
          p.first != null ? h("span", { class: "mono small", title: t("map.first.title") }, t("map.first", { pct: Math.round(p.first * 100) })) : null,
        ),
      ),
    ),
    exit ? node("⬢", exit.name, exit.region || null, "exit") : node("⬢", "—", null, "exit"),
    h("div", { class: "wire short" }),
    node("◎", game, null),
  );
}
