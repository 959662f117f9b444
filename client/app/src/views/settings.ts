import { explain } from "../errors";
import type { Ctx } from "../context";
import { h } from "../dom";
import { t, type Key } from "../i18n";
import type { Settings } from "../types";

/** Start with the system, FPS boost, language, theme, redundancy, paths, capture mode, logs folder. */
export function settings(ctx: Ctx): HTMLElement {
  const st = ctx.model.state;
  const s: Settings = { ...st.settings };
  const desktop = ctx.bridge.kind === "tauri";
  const toggle = (key: "autostart" | "minimise_to_tray" | "notifications" | "fps_boost", label: string, desktopOnly = false) =>
    h("label", { class: "row check" },
      h("input", { type: "checkbox", checked: s[key], "data-testid": `set-${key}`, onchange: (e: Event) => (s[key] = (e.target as HTMLInputElement).checked) }),
      h("span", {}, label, desktopOnly && !desktop ? h("span", { class: "muted small" }, ` (${t("set.desktop_only")})`) : null),
    );
  const select = <K extends "language" | "theme" | "redundancy" | "capture">(key: K, label: string, options: [string, string][]) =>
    h("label", { class: "row" },
      h("span", {}, label),
      h("select", { "data-testid": `set-${key}`, onchange: (e: Event) => ((s[key] as string) = (e.target as HTMLSelectElement).value) },
        options.map(([v, l]) => h("option", { value: v, selected: s[key] === v }, l)),
      ),
    );
  const text = (key: "proxy_listen" | "game_server", label: string) =>
    h("label", { class: "row" }, h("span", {}, label), h("input", { class: "mono", value: s[key], "data-testid": `set-${key}`, oninput: (e: Event) => (s[key] = (e.target as HTMLInputElement).value) }));
  const save = h("button", { class: "btn primary", "data-testid": "settings-save" }, t("set.save"));
  save.addEventListener("click", async () => {
    try {
      ctx.model.state.settings = await ctx.bridge.call("save_settings", s);
      ctx.render();
      ctx.toast(t("set.saved"));
    } catch (e) {
      ctx.toast(t("common.error"), explain(e), "error");
    }
  });
  return h(
    "div",
    { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, t("set.title")), save),
    h("div", { class: "cols" },
      h("section", { class: "card form" },
        h("h2", {}, t("set.general")),
        toggle("autostart", t("set.autostart"), true),
        toggle("minimise_to_tray", t("set.tray"), true),
        toggle("notifications", t("set.notifications")),
        toggle("fps_boost", t("set.fps_boost")),
        h("p", { class: "muted small", "data-testid": "set-fps_boost-hint" }, t("set.fps_boost.hint")),
        select("language", t("set.language"), [["en", "English"], ["ru", "Русский"]]),
        select("theme", t("set.theme"), [["system", t("set.theme.system")], ["dark", t("set.theme.dark")], ["light", t("set.theme.light")]]),
        h("label", { class: "row" }, h("span", {}, t("set.logs")), h("code", { class: "folder", "data-testid": "logs-dir" }, st.logs_dir)),
        h("label", { class: "row" }, h("span", {}, t("set.config")), h("code", { class: "folder" }, st.config_dir)),
      ),
      h("section", { class: "card form stacked" },
        h("h2", {}, t("set.connection")),
        select("redundancy", t("set.redundancy"), (["adaptive", "single", "duplicate"] as const).map((r) => [r, t(`set.red.${r}` as Key)])),
        h("label", { class: "row" }, h("span", {}, t("set.paths")),
          h("select", { "data-testid": "set-paths", onchange: (e: Event) => (s.paths = Number((e.target as HTMLSelectElement).value)) }, [1, 2, 3, 4].map((n) => h("option", { value: n, selected: s.paths === n }, String(n))))),
        select("capture", t("set.capture"), st.capture_modes.map((m) => [m, t(`set.cap.${m}` as Key)])),
        text("proxy_listen", t("set.proxy_listen")),
        text("game_server", t("set.game_server")),
      ),
    ),
    h("p", { class: "muted small" }, `PLG Booster ${st.version} · ${ctx.bridge.kind === "tauri" ? "desktop" : "browser (test bridge)"}`),
  );
}
