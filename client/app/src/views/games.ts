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

/** Seconds to wait before the `attempt`-th retry (from 0): 2, 4, 8, … capped at 60. */
export function retryDelay(attempt: number): number {
  return Math.min(60, 2 ** Math.min(attempt + 1, 6));
}

/** Catalog grid with search, categories and the "running" badge. When billing cannot be
 * reached it shows the saved catalog (or says so) and retries with backoff until it answers. */
export function games(ctx: Ctx): HTMLElement {
  const grid = h("div", { class: "grid", "data-testid": "games-grid" }, h("p", { class: "muted" }, t("common.loading")));
  const chips = h("div", { class: "chips" });
  const count = h("span", { class: "muted small" });
  const banner = h("div", {});
  const offline = h("div", {});
  let attempt = 0;
  let retry: ReturnType<typeof setTimeout> | undefined;
  /** Shows `text(s)` with a countdown and a "try now" button; loads again when it runs out. */
  const scheduleRetry = (into: HTMLElement, text: (s: number) => string) => {
    clearTimeout(retry);
    let left = retryDelay(attempt++);
    const line = h("span", {}, text(left));
    mount(
      into,
      h("div", { class: "banner warn", "data-testid": "games-offline" }, line,
        h("button", { class: "btn small", "data-testid": "games-retry", onclick: () => { clearTimeout(retry); void load(); } }, t("games.retry"))),
    );
    const tick = () => {
      // Stop when the screen is gone.
      if (!into.isConnected) return;
      if (--left <= 0) return void load();
      line.textContent = text(left);
      retry = setTimeout(tick, 1000);
    };
    retry = setTimeout(tick, 1000);
  };
  const load = async () => {
    clearTimeout(retry);
    try {
      const r = await ctx.bridge.call("games", { search, category });
      if (r.offline_since != null) {
        const when = new Date(r.offline_since * 1000).toLocaleString();
        scheduleRetry(offline, (s) => t("games.offline_cached", { when, s }));
      } else {
        attempt = 0;
        mount(offline);
      }
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
      const err = toCmdError(e);
      if (err.code === "billing_unreachable") {
        mount(grid);
        scheduleRetry(offline, (s) => t("games.offline", { s }));
      } else {
        mount(grid, h("p", { class: "form-error" }, err.message));
      }
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
  return h("div", { class: "page" }, h("header", { class: "page-head" }, h("h1", {}, t("games.title")), count), offline, banner, h("div", { class: "toolbar" }, input, chips), grid);
}
