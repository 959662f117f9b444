import "./styles.css";
import { pickBridge, toCmdError } from "./bridge";
import type { Ctx, Model, View } from "./context";
import { pushTick } from "./context";
import { h, mount } from "./dom";
import { setLang, t } from "./i18n";
import type { AppEvent } from "./types";
import { signIn } from "./views/signin";
import { games } from "./views/games";
import { route } from "./views/route";
import { dashboard } from "./views/dashboard";
import { subscription } from "./views/subscription";
import { settings } from "./views/settings";
import { updatePrompt } from "./update";

const bridge = pickBridge(window as unknown as Parameters<typeof pickBridge>[0]);
const root = document.getElementById("app")!;

function applyTheme(theme: string): void {
  const dark = theme === "dark" || (theme === "system" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}

let model: Model;

const toasts = h("div", { class: "toasts", "data-testid": "toasts" });

const ctx: Ctx = {
  bridge,
  get model() {
    return model;
  },
  go(view: View) {
    model.view = view;
    render();
  },
  render,
  toast(title, body, kind = "info") {
    const el = h("div", { class: `toast ${kind}`, role: "status" }, h("strong", {}, title), body ? h("div", {}, body) : null);
    toasts.append(el);
    setTimeout(() => el.remove(), 6000);
  },
};

const views: Record<View, (c: Ctx) => HTMLElement> = { games, route, dashboard, subscription, settings };

function nav(): HTMLElement {
  const items: [View, string, string][] = [
    ["games", t("nav.games"), "▦"],
    ["route", t("nav.route"), "⇄"],
    ["dashboard", t("nav.dashboard"), "◔"],
    ["subscription", t("nav.subscription"), "★"],
    ["settings", t("nav.settings"), "⚙"],
  ];
  const s = model.session;
  return h(
    "aside",
    { class: "sidebar" },
    h("div", { class: "brand" }, h("span", { class: "logo" }, "▶"), h("span", {}, "PLG ", h("b", {}, "Booster"))),
    h(
      "nav",
      {},
      items.map(([v, label, icon]) =>
        h(
          "button",
          { class: `nav-item${model.view === v ? " active" : ""}`, "data-testid": `nav-${v}`, onclick: () => ctx.go(v) },
          h("span", { class: "nav-icon" }, icon),
          label,
          v === "dashboard" && s ? h("span", { class: "dot live" }) : null,
        ),
      ),
    ),
    h(
      "div",
      { class: `conn ${s ? "on" : "off"}`, "data-testid": "conn-status" },
      h("span", { class: `dot ${s ? "live" : ""}` }),
      h("div", {}, h("div", { class: "conn-title" }, s ? t("status.connected") : t("status.idle")), s ? h("div", { class: "muted small" }, s.game_name) : null),
    ),
    h(
      "div",
      { class: "account" },
      h("div", { class: "small muted ellipsis", title: model.state.account?.email ?? "" }, model.state.account?.email ?? ""),
      h(
        "button",
        {
          class: "link small",
          "data-testid": "sign-out",
          onclick: async () => {
            await bridge.call("sign_out");
            model.state = await bridge.call("state");
            render();
          },
        },
        t("signin.out"),
      ),
    ),
  );
}

function render(): void {
  setLang(model.state.settings.language);
  applyTheme(model.state.settings.theme);
  if (!model.state.account) {
    mount(root, signIn(ctx), toasts);
    return;
  }
  const main = h("main", { class: "content", "data-view": model.view }, views[model.view](ctx));
  mount(root, h("div", { class: "shell" }, nav(), main), toasts);
}

/** Re-renders only the dashboard's content when a tick arrives (keeps the rest still). */
function refreshDashboard(): void {
  const main = root.querySelector("main.content");
  if (main && model.view === "dashboard") mount(main, dashboard(ctx));
}

function onEvent(ev: AppEvent): void {
  switch (ev.type) {
    case "tick":
      model.ticks = pushTick(model.ticks, ev.data);
      refreshDashboard();
      break;
    case "connected":
      model.session = ev.data;
      model.ticks = [];
      model.summary = null;
      render();
      break;
    case "session":
      // The node or relays changed (failover, relay moved, renewal): the header, the paths
      // and the tray follow; the chart keeps its history.
      model.session = ev.data;
      render();
      break;
    case "ended":
      model.session = null;
      model.summary = ev.data;
      render();
      break;
    case "notice":
      // `secs`: where on the session's timeline it came (the charts mark it there).
      model.notices = [{ ...ev.data, at: new Date().toLocaleTimeString(), secs: model.session ? model.ticks[model.ticks.length - 1]?.secs : undefined }, ...model.notices].slice(0, 20);
      // Minor notices (a primary path change) only go to the dashboard's event list.
      if (ev.data.notify) ctx.toast(ev.data.title, ev.data.body, ev.data.kind === "destination_refused" || ev.data.kind === "node_lost" ? "error" : "info");
      refreshDashboard();
      break;
    case "detected":
      model.state.detected = ev.data;
      if (model.view === "games") render();
      break;
    case "settings":
      model.state.settings = ev.data;
      render();
      break;
    case "account":
      if (!ev.data) {
        model.state.account = null;
        render();
      }
      break;
  }
}

async function boot(): Promise<void> {
  try {
    const state = await bridge.call("state");
    model = {
      state,
      view: state.session ? "dashboard" : "games",
      session: state.session,
      ticks: [],
      summary: null,
      picked: null,
      route: null,
      notices: [],
    };
    const updateBar = h("div", { class: "update-bar", "data-testid": "update", hidden: true });
    document.body.append(updateBar);
    const onUpdate = updatePrompt(bridge, updateBar, () => model.session !== null);
    bridge.listen((ev) => {
      onEvent(ev);
      onUpdate(ev);
    });
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(model.state.settings.theme));
    render();
  } catch (e) {
    const err = toCmdError(e);
    mount(root, h("div", { class: "fatal" }, h("h1", {}, "PLG Booster"), h("p", {}, err.message)));
  }
}

void boot();
