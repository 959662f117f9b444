import { explain } from "../errors";
import { lineChart, type Mark, type Series } from "../chart";
import type { Ctx } from "../context";
import { HISTORY } from "../context";
import { h } from "../dom";
import { bytes, delta, duration, ms, pct } from "../format";
import { t } from "../i18n";
import type { Summary, Tick } from "../types";
import { historyCard } from "./history";
import { firstShares, hopLabel, routeMap } from "./routemap";

const DIRECT = "#f59e0b";
const ACCEL = "#22c55e";
const PATH_COLORS = ["#22c55e", "#38bdf8", "#a78bfa", "#f472b6"];

/** Routes counted as active: paths answering probes. */
export function activeRoutes(tick: Tick | undefined): number {
  return tick ? tick.paths.filter((p) => p.state === "up").length : 0;
}

function stat(label: string, value: string, sub: string | null, testid: string): HTMLElement {
  return h("div", { class: "stat card" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value", "data-testid": testid }, value), sub ? h("div", { class: "stat-sub muted small" }, sub) : null);
}

function legend(series: Series[]): HTMLElement {
  return h("div", { class: "legend" }, series.map((s) => h("span", {}, h("i", { style: `background:${s.color}` }), s.name)));
}

/** Seconds shown: the session so far, at least 30, at most `HISTORY`. */
export function slots(ticks: number): number {
  return Math.min(HISTORY, Math.max(10, ticks));
}

function chartCard(title: string, series: Series[], unit: string, floor: number, testid: string, marks: Mark[] = []): HTMLElement {
  const n = slots(series[0]?.values.length ?? 0);
  return h("section", { class: "card chart-card", "data-testid": testid }, h("div", { class: "chart-head" }, h("h2", {}, title), legend(series)), lineChart(series, n, unit, floor, marks));
}

function summaryCard(s: Summary): HTMLElement {
  const row = (label: string, b: string, a: string, d: string) => h("tr", {}, h("td", {}, label), h("td", {}, b), h("td", {}, a), h("td", { class: "mono" }, d));
  return h(
    "section",
    { class: "card summary", "data-testid": "summary" },
    h("h2", {}, t("dash.summary")),
    s.before && s.after
      ? h("table", { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, t("dash.before")), h("th", {}, t("dash.after")), h("th", {}, t("dash.change")))),
          h("tbody", {},
            row(t("dash.ping"), ms(s.before.rtt_ms), ms(s.after.rtt_ms), delta(s.before.rtt_ms, s.after.rtt_ms, "ms")),
            row(t("dash.loss"), pct(s.before.loss_pct), pct(s.after.loss_pct), delta(s.before.loss_pct, s.after.loss_pct, "%")),
            row(t("dash.jitter"), ms(s.before.jitter_ms), ms(s.after.jitter_ms), delta(s.before.jitter_ms, s.after.jitter_ms, "ms")),
          ),
        )
      : null,
    h("div", { class: "kv" },
      h("div", {}, h("span", { class: "muted" }, t("dash.duration")), h("b", {}, duration(s.duration_secs))),
      h("div", {}, h("span", { class: "muted" }, t("dash.traffic")), h("b", {}, `↑ ${bytes(s.bytes_up)} ↓ ${bytes(s.bytes_down)}`)),
      h("div", {}, h("span", { class: "muted" }, t("dash.packets")), h("b", {}, `↑ ${s.packets_up} ↓ ${s.packets_down}`)),
      h("div", {}, h("span", { class: "muted" }, t("dash.nodertt")), h("b", {}, ms(s.node_rtt_ms))),
      h("div", {}, h("span", { class: "muted" }, t("dash.failovers")), h("b", {}, String(s.failovers))),
    ),
    s.before && s.after && s.after.rtt_ms > s.before.rtt_ms ? h("p", { class: "note" }, t("dash.loopback")) : null,
  );
}

/** Live ping / loss / jitter, direct vs accelerated, the paths, and the end-of-session summary. */
export function dashboard(ctx: Ctx): HTMLElement {
  const s = ctx.model.session;
  if (!s) {
    return h("div", { class: "page" }, h("header", { class: "page-head" }, h("h1", {}, t("dash.title"))), ctx.model.summary ? summaryCard(ctx.model.summary) : h("p", { class: "muted", "data-testid": "no-session" }, t("dash.none")), historyCard(ctx));
  }
  const ticks = ctx.model.ticks;
  const last = ticks[ticks.length - 1];
  const disconnect = h("button", { class: "btn danger", "data-testid": "disconnect" }, t("dash.disconnect"));
  disconnect.addEventListener("click", async () => {
    disconnect.setAttribute("disabled", "");
    try {
      const summary = await ctx.bridge.call("disconnect");
      ctx.model.session = null;
      ctx.model.summary = summary;
      ctx.render();
    } catch (e) {
      ctx.toast(t("common.error"), explain(e), "error");
      disconnect.removeAttribute("disabled");
    }
  });
  const probing = s.probing;
  const shares = last ? firstShares(last.paths) : [];
  // Events on the charts' timeline: where in the shown ticks each came.
  const marks = ctx.model.notices
    .filter((n) => n.secs != null)
    .map((n) => ({ at: ticks.findIndex((k) => k.secs >= n.secs!), label: n.title }))
    .filter((m) => m.at >= 0);
  const routes = activeRoutes(last);
  const primary = last?.paths.find((p) => p.id === last.primary);
  const viaExit = !probing && last?.via_exit_ms != null;
  const ping = probing ? last?.accelerated?.rtt_ms : viaExit ? last?.via_exit_ms : last?.node_rtt_ms;
  const loss = probing ? last?.accelerated?.loss_pct : primary?.loss_pct;
  const jitter = probing ? last?.accelerated?.jitter_ms : primary?.rttvar_ms;
  const cmp = (v: number | null | undefined) => (probing && v !== undefined && v !== null ? `${t("dash.direct")}: ` : null);
  const pathSeries = (f: (p: Tick["paths"][number]) => number | null): Series[] =>
    Array.from({ length: s.paths }, (_, i) => ({ name: t("dash.path", { n: i }), color: PATH_COLORS[i % 4], values: ticks.map((k) => (k.paths[i] ? f(k.paths[i]) : null)) }));
  const pair = (f: (x: NonNullable<Tick["direct"]>) => number): Series[] => [
    { name: t("dash.direct"), color: DIRECT, values: ticks.map((k) => (k.direct ? f(k.direct) : null)) },
    { name: t("dash.accel"), color: ACCEL, values: ticks.map((k) => (k.accelerated ? f(k.accelerated) : null)) },
  ];
  return h(
    "div",
    { class: "page" },
    h("header", { class: "page-head" },
      h("div", {}, h("h1", { "data-testid": "session-game" }, s.game_name), h("div", { class: "muted small", "data-testid": "session-via" }, t("dash.via", { node: hopLabel(s.node), capture: s.capture }))),
      h("div", { class: "head-right" }, h("span", { class: "timer mono", "data-testid": "duration" }, duration(last?.secs ?? 0)), disconnect),
    ),
    s.local_addr && !probing ? h("div", { class: "banner" }, t("dash.point", { addr: s.local_addr })) : null,
    h("div", { class: "stats" },
      stat(t("dash.ping"), ms(ping), probing ? `${cmp(ping)}${ms(last?.direct?.rtt_ms)}` : viaExit ? t("dash.via_exit") : t("dash.node"), "stat-ping"),
      stat(t("dash.loss"), pct(loss), probing ? `${cmp(loss)}${pct(last?.direct?.loss_pct)}` : null, "stat-loss"),
      stat(t("dash.jitter"), ms(jitter), probing ? `${cmp(jitter)}${ms(last?.direct?.jitter_ms)}` : null, "stat-jitter"),
      stat(t("dash.traffic"), `↑ ${bytes(last?.bytes_up ?? 0)}`, `↓ ${bytes(last?.bytes_down ?? 0)} · ${last?.packets_up ?? 0}/${last?.packets_down ?? 0} pkts`, "stat-traffic"),
    ),
    last?.verdict ? h("p", { class: "muted small", "data-testid": "route-verdict" }, last.verdict) : null,
    routeMap(
      Array.from({ length: s.paths }, (_, i) => {
        const p = last?.paths[i];
        return { relay: s.relays[i] ?? null, first: last ? shares[i] : null, state: p?.state, primary: last?.primary === i };
      }),
      s.node,
      s.game_name,
    ),
    h("div", { class: "cols" },
      h("section", { class: "card paths", "data-testid": "paths" },
        h("h2", { "data-testid": "routes-active" }, routes === 1 ? t("dash.route1") : t("dash.routes", { n: routes })),
        h("div", { class: "muted small" }, last?.duplicating ? t("dash.duplicating") : t("dash.single"), ` · ${s.redundancy}`),
        h("div", { class: "path-list" },
          (last?.paths ?? []).map((p) =>
            h("div", { class: "path" },
              h("span", { class: `dot ${p.state === "up" ? "live" : p.state === "suspect" ? "warn" : ""}` }),
              h("b", {}, t("dash.path", { n: p.id })),
              p.id === last!.primary ? h("span", { class: "badge live" }, t("dash.primary")) : null,
              h("span", { class: "small", "data-testid": "path-route" }, s.relays?.[p.id] ? t("dash.path.via", { relay: hopLabel(s.relays[p.id]!) }) : t("dash.path.direct")),
              h("span", { class: "muted small" }, t(`dash.state.${p.state}`)),
              h("span", { class: "mono" }, ms(p.rtt_ms)),
              h("span", { class: "mono muted small" }, `${pct(p.loss_pct)} · ${t("dash.probes", { a: p.probes_answered, s: p.probes_sent })}`),
            ),
          ),
        ),
        h("div", { class: "muted small", title: s.node.id }, `${hopLabel(s.node)} · ${s.node.data_addr}`),
        h("h2", { class: "events-title" }, t("dash.events")),
        h("ul", { class: "events", "data-testid": "events" },
          ctx.model.notices.length === 0 ? h("li", { class: "muted small" }, t("dash.noevents")) : null,
          ctx.model.notices.slice(0, 4).map((n) => h("li", { class: "small" }, h("span", { class: "mono muted" }, n.at), " ", h("b", {}, n.title), " — ", n.body)),
        ),
      ),
      chartCard(`${t("dash.ping")}${probing ? "" : ` — ${t("dash.node")}`}`, probing ? pair((x) => x.rtt_ms) : pathSeries((p) => p.rtt_ms), "ms", 1, "chart-ping", marks),
    ),
    h("div", { class: "cols" },
      chartCard(t("dash.loss"), probing ? pair((x) => x.loss_pct) : pathSeries((p) => p.loss_pct), "%", 5, "chart-loss", marks),
      chartCard(t("dash.jitter"), probing ? pair((x) => x.jitter_ms) : pathSeries((p) => p.rttvar_ms), "ms", 0.5, "chart-jitter"),
    ),
    probing ? null : h("p", { class: "note" }, t("dash.noprobe")),
  );
}
