import { explain } from "../errors";
import type { Ctx } from "../context";
import { h, mount } from "../dom";
import { t } from "../i18n";
import type { RouteView } from "../types";
import { historyCard } from "./history";
import { routeMap } from "./routemap";

/** The nodes relaying a route's paths, each once, by name. */
export function relayNames(r: Pick<RouteView, "relays">): string[] {
  return [...new Set(r.relays.flatMap((x) => (x ? [x.name] : [])))];
}

/** The region picked for a game ("" = Auto), remembered on this computer. */
export function pickedRegion(slug: string): string {
  try {
    return localStorage.getItem(`plg.region.${slug}`) ?? "";
  } catch {
    return "";
  }
}

function rememberRegion(slug: string, region: string): void {
  try {
    if (region) localStorage.setItem(`plg.region.${slug}`, region);
    else localStorage.removeItem(`plg.region.${slug}`);
  } catch {
    // Storage off: the pick lasts for this screen only.
  }
}

/** Candidate nodes, the recommended exit, the relay paths and what improvement to expect. */
export function route(ctx: Ctx): HTMLElement {
  const picked = ctx.model.picked ?? (ctx.model.session ? { slug: ctx.model.session.game, name: ctx.model.session.game_name } : null);
  if (!picked) return h("div", { class: "page" }, h("h1", {}, t("route.title")), h("p", { class: "muted" }, t("route.pick")));
  const body = h("div", { class: "stack" }, h("p", { class: "muted" }, t("common.loading")));
  const region = pickedRegion(picked.slug);
  const show = (r: RouteView) => {
    const connected = ctx.model.session;
    const connect = h("button", { class: "btn primary big", "data-testid": "connect" }, t("route.connect"));
    const error = h("div", { class: "form-error", role: "alert" });
    connect.addEventListener("click", async () => {
      connect.setAttribute("disabled", "");
      connect.textContent = t("route.connecting");
      error.textContent = "";
      try {
        ctx.model.session = await ctx.bridge.call("connect", { game: r.game, node: r.nodes[0]?.id, region: region || undefined });
        ctx.model.ticks = [];
        ctx.model.summary = null;
        ctx.model.route = null;
        ctx.go("dashboard");
      } catch (e) {
        error.textContent = explain(e);
        connect.removeAttribute("disabled");
        connect.textContent = t("route.connect");
      }
    });
    mount(
      body,
      routeMap(r.relays.map((relay) => ({ relay })), r.nodes[0] ?? null, r.game_name),
      // Right under the route, so it is on screen at the default 1120×740 window.
      h("div", { class: "actions" }, regionPicker(r), error, connected ? null : connect),
      h("div", { class: "cols" },
        h("section", { class: "card" },
          h("h2", {}, t("route.nodes")),
          h("table", { class: "table", "data-testid": "route-nodes" },
            h("thead", {}, h("tr", {}, h("th", {}, t("route.node")), h("th", {}, t("route.region")), h("th", {}, t("route.address")), h("th", {}, t("route.ping")), h("th", {}, ""))),
            h("tbody", {},
              r.nodes.map((n) =>
                h("tr", {},
                  h("td", { title: n.id }, h("b", {}, n.name)),
                  h("td", {}, n.region || "—"),
                  h("td", { class: "mono small" }, n.control_addr),
                  n.ping_ms == null
                    ? h("td", { class: "muted", title: t("route.ping.pending") }, "—")
                    : h("td", { "data-testid": "node-ping" }, `${n.ping_ms.toFixed(1)} ms${n.loss_percent ? ` · ${n.loss_percent.toFixed(0)} %` : ""}${n.to_game_ms == null ? "" : ` + ${n.to_game_ms.toFixed(1)} ms`}`),
                  h("td", {}, h("span", { class: `badge ${n.recommended ? "live" : ""}` }, n.recommended ? t("route.exit") : t("route.backup"))),
                ),
              ),
            ),
          ),
          h("p", { class: "note" }, t("route.pending.note")),
        ),
        h("section", { class: "card" },
          h("h2", {}, t("route.paths")),
          h("p", {}, t("route.paths.text", { n: r.paths, policy: r.redundancy })),
          h("ul", { class: "plain", "data-testid": "route-paths" },
            r.relays.map((relay, n) => {
              const exit = r.nodes[0]?.name ?? "—";
              return h("li", {}, relay ? t("route.path.via", { n, relay: relay.name, exit }) : t("route.path.direct", { n, exit }));
            }),
          ),
          h("h2", {}, t("route.improvement")),
          h("p", { "data-testid": "route-summary" }, r.summary),
          h("p", { class: r.measurable ? "" : "note" }, r.measurable ? t("route.improvement.measured") : t("route.improvement.pending")),
          h("details", {}, h("summary", { class: "small muted" }, `${t("route.destinations")}: ${r.destinations.length}`), h("p", { class: "mono small" }, r.destinations.join("  "))),
        ),
      ),
      historyCard(ctx, r.game, 5),
    );
  };
  // Auto, or one of the regions with a node; picking one previews the route there.
  const regionPicker = (r: RouteView): HTMLElement => {
    const select = h("select", { "data-testid": "region", "aria-label": t("route.pick_region") },
      h("option", { value: "" }, t("route.region.auto")),
      r.regions.map((x) => h("option", { value: x }, x)),
    );
    select.value = r.regions.includes(region) ? region : "";
    select.addEventListener("change", () => {
      rememberRegion(picked.slug, select.value);
      ctx.model.route = null;
      ctx.render();
    });
    return h("label", { class: "region-pick small" }, `${t("route.pick_region")} `, select);
  };
  if (ctx.model.route && ctx.model.route.game === picked.slug) show(ctx.model.route);
  else
    ctx.bridge
      .call("route", { game: picked.slug, region: region || undefined })
      .then((r) => {
        ctx.model.route = r;
        show(r);
      })
      .catch((e) => mount(body, h("p", { class: "form-error", "data-testid": "route-error" }, explain(e))));
  return h("div", { class: "page" }, h("header", { class: "page-head" }, h("h1", {}, t("route.title")), h("span", { class: "muted" }, picked.name)), body);
}
