import { toCmdError } from "../bridge";
import type { Ctx } from "../context";
import { h, mount } from "../dom";
import { t } from "../i18n";

let search = "";
let category = "";

/** A stable hue per game for its tile. */
export function hue(slug: string): number {
  let x = 0;
  for (const c of slug) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  return x % 360;
}

export function initials(name: string): string {
  const words = name.replace(/[^\p{L}\p{N} ]/gu, " ").split(/\s+/).filter(Boolean);
  return (words.length > 1 ? words[0][0] + words[1][0] : (words[0] ?? "?").slice(0, 2)).toUpperCase();
}

const CATEGORY_LABELS: Record<string, string> = { mmo: "MMO", moba: "MOBA", "battle-royale": "Battle royale", fps: "FPS", rts: "RTS" };

/** A category slug as a label: known acronyms upper-cased, otherwise capitalised. */
export function categoryLabel(c: string): string {
  return CATEGORY_LABELS[c] ?? c.charAt(0).toUpperCase() + c.slice(1).replace(/-/g, " ");
}

function pick(ctx: Ctx, g: { slug: string; name: string }): void {
  ctx.model.picked = { slug: g.slug, name: g.name };
  ctx.model.route = null;
  ctx.go("route");
}

/** Catalog grid with search, categories and the "running" badge. */
export function games(ctx: Ctx): HTMLElement {
  const grid = h("div", { class: "grid", "data-testid": "games-grid" }, h("p", { class: "muted" }, t("common.loading")));
  const chips = h("div", { class: "chips" });
  const count = h("span", { class: "muted small" });
  const banner = h("div", {});
  const load = async () => {
    try {
      const r = await ctx.bridge.call("games", { search, category });
      mount(
        chips,
        ...["", ...r.categories].map((c) =>
          h("button", { class: `chip${category === c ? " active" : ""}`, onclick: () => { category = c; void load(); } }, c ? categoryLabel(c) : t("games.all")),
        ),
      );
      count.textContent = t("games.count", { n: r.games.length });
      const running = r.games.filter((g) => g.running);
      mount(
        banner,
        ...running.slice(0, 1).map((g) =>
          h("div", { class: "banner", "data-testid": "detected-banner" }, h("span", { class: "dot live" }), h("span", {}, t("games.detected", { name: g.name })), h("button", { class: "btn primary small", onclick: () => pick(ctx, g) }, t("games.accelerate"))),
        ),
      );
      if (r.games.length === 0) return mount(grid, h("p", { class: "muted" }, t("games.none")));
      mount(
        grid,
        ...r.games.map((g) =>
          h(
            "button",
            { class: "tile", "data-testid": `game-${g.slug}`, onclick: () => pick(ctx, g) },
            h("div", { class: "tile-art", style: `--h:${hue(g.slug)}` }, initials(g.name)),
            h("div", { class: "tile-body" },
              h("div", { class: "tile-name" }, g.name),
              h("div", { class: "tile-meta muted small" }, g.category ? categoryLabel(g.category) : "—", g.regions.length ? ` · ${g.regions.map((r) => r.toUpperCase()).join(" ")}` : ""),
            ),
            g.running ? h("span", { class: "badge live" }, t("games.running")) : null,
          ),
        ),
      );
    } catch (e) {
      mount(grid, h("p", { class: "form-error" }, toCmdError(e).message));
    }
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const input = h("input", {
    type: "search",
    class: "search",
    placeholder: t("games.search"),
    value: search,
    "data-testid": "games-search",
    oninput: (e: Event) => {
      search = (e.target as HTMLInputElement).value;
      clearTimeout(timer);
      timer = setTimeout(() => void load(), 150);
    },
  });
  void load();
  return h("div", { class: "page" }, h("header", { class: "page-head" }, h("h1", {}, t("games.title")), count), banner, h("div", { class: "toolbar" }, input, chips), grid);
}
