import { toCmdError } from "../bridge";
import type { Ctx } from "../context";
import { h, mount } from "../dom";
import { t } from "../i18n";
import type { RouteView } from "../types";

/** The nodes relaying a route's paths, each once. */
export function relayNames(r: Pick<RouteView, "relays">): string[] {
  return [...new Set(r.relays.filter((x): x is string => x !== null))];
}

/** Candidate nodes, the recommended exit, the relay paths and what improvement to expect. */
export function route(ctx: Ctx): HTMLElement {
  const picked = ctx.model.picked ?? (ctx.model.session ? { slug: ctx.model.session.game, name: ctx.model.session.game_name } : null);
  if (!picked) return h("div", { class: "page" }, h("h1", {}, t("route.title")), h("p", { class: "muted" }, t("route.pick")));
  const body = h("div", { class: "stack" }, h("p", { class: "muted" }, t("common.loading")));
  const show = (r: RouteView) => {
    const connected = ctx.model.session;
    const connect = h("button", { class: "btn primary big", "data-testid": "connect" }, t("route.connect"));
    const error = h("div", { class: "form-error", role: "alert" });
    connect.addEventListener("click", async () => {
      connect.setAttribute("disabled", "");
      connect.textContent = t("route.connecting");
      error.textContent = "";
      try {
        ctx.model.session = await ctx.bridge.call("connect", { game: r.game, node: r.nodes[0]?.id });
        ctx.model.ticks = [];
        ctx.model.summary = null;
        ctx.model.route = null;
        ctx.go("dashboard");
      } catch (e) {
        error.textContent = toCmdError(e).message;
        connect.removeAttribute("disabled");
        connect.textContent = t("route.connect");
      }
    });
    mount(
      body,
      h("div", { class: "route-map card" },
        h("div", { class: "hop" }, h("div", { class: "hop-icon" }, "▣"), h("div", { class: "small" }, "PC")),
        h("div", { class: `wire${r.paths > 1 ? " double" : ""}` }, h("span", { class: "small muted" }, relayNames(r).length ? `⇄ ${relayNames(r).join(", ")}` : `${r.paths} × ⇄`)),
        h("div", { class: "hop exit" }, h("div", { class: "hop-icon" }, "⬢"), h("div", { class: "small" }, r.nodes[0]?.id ?? "—")),
        h("div", { class: "wire" }),
        h("div", { class: "hop" }, h("div", { class: "hop-icon" }, "◎"), h("div", { class: "small" }, r.game_name)),
      ),
      // Right under the route, so it is on screen at the default 1120×740 window.
      h("div", { class: "actions" }, error, connected ? null : connect),
      h("div", { class: "cols" },
        h("section", { class: "card" },
          h("h2", {}, t("route.nodes")),
          h("table", { class: "table", "data-testid": "route-nodes" },
            h("thead", {}, h("tr", {}, h("th", {}, t("route.node")), h("th", {}, t("route.region")), h("th", {}, t("route.address")), h("th", {}, t("route.ping")), h("th", {}, ""))),
            h("tbody", {},
              r.nodes.map((n) =>
                h("tr", {},
                  h("td", {}, h("b", {}, n.id)),
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
              const exit = r.nodes[0]?.id ?? "—";
              return h("li", {}, relay ? t("route.path.via", { n, relay, exit }) : t("route.path.direct", { n, exit }));
            }),
          ),
          h("h2", {}, t("route.improvement")),
          h("p", { "data-testid": "route-summary" }, r.summary),
          h("p", { class: r.measurable ? "" : "note" }, r.measurable ? t("route.improvement.measured") : t("route.improvement.pending")),
          h("h2", {}, t("route.destinations")),
          h("p", { class: "mono small" }, r.destinations.join("  ")),
        ),
      ),
    );
  };
  if (ctx.model.route && ctx.model.route.game === picked.slug) show(ctx.model.route);
  else
    ctx.bridge
      .call("route", { game: picked.slug })
      .then((r) => {
        ctx.model.route = r;
        show(r);
      })
      .catch((e) => mount(body, h("p", { class: "form-error", "data-testid": "route-error" }, toCmdError(e).message)));
  return h("div", { class: "page" }, h("header", { class: "page-head" }, h("h1", {}, t("route.title")), h("span", { class: "muted" }, picked.name)), body);
}
