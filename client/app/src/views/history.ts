// Past sessions with their before/after (the core's `history`, kept in history.json).

import { h } from "../dom";
import { duration } from "../format";
import { t } from "../i18n";
import type { HistoryEntry } from "../types";
import type { Ctx } from "../context";

/** "−35 %" / "+4 %" / "—": how the ping changed through PLG. */
export function gain(e: Pick<HistoryEntry, "reduction_percent">): string {
  const r = e.reduction_percent;
  if (r == null || !Number.isFinite(r)) return "—";
  return `${r >= 0 ? "−" : "+"}${Math.abs(r).toFixed(0)} %`;
}

const msOr = (v: number | null) => (v == null ? "—" : `${v.toFixed(1)} ms`);

/** A card listing past sessions (one game's when `game` is given), filled asynchronously. */
export function historyCard(ctx: Ctx, game?: string, limit = 8): HTMLElement {
  const body = h("div", {}, h("p", { class: "muted small" }, t("common.loading")));
  ctx.bridge
    .call("history", { game: game ?? "" })
    .then((list) => {
      const rows = list.slice(0, limit);
      body.replaceChildren(
        rows.length === 0
          ? h("p", { class: "muted small", "data-testid": "history-none" }, t("hist.none"))
          : h("table", { class: "table history", "data-testid": "history" },
              h("thead", {}, h("tr", {},
                h("th", {}, t("hist.when")), game ? null : h("th", {}, t("hist.game")), h("th", {}, t("hist.exit")),
                h("th", {}, t("hist.direct")), h("th", {}, t("hist.plg")), h("th", {}, t("hist.gain")), h("th", {}, t("hist.length")))),
              h("tbody", {},
                rows.map((e) =>
                  h("tr", {},
                    h("td", { class: "small" }, new Date(e.started_at * 1000).toLocaleString()),
                    game ? null : h("td", {}, e.game_name),
                    h("td", {}, e.region ? `${e.exit} · ${e.region}` : e.exit),
                    h("td", { class: "mono" }, msOr(e.direct_ms)),
                    h("td", { class: "mono" }, msOr(e.plg_ms)),
                    h("td", { class: `mono${(e.reduction_percent ?? 0) > 0 ? " good" : ""}` }, gain(e)),
                    h("td", { class: "small" }, duration(e.duration_secs)),
                  ),
                ),
              ),
            ),
      );
    })
    .catch(() => body.replaceChildren(h("p", { class: "muted small" }, t("hist.none"))));
  return h("section", { class: "card" }, h("h2", {}, t("hist.title")), body);
}
