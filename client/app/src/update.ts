// The "update available → Install and restart" prompt: a small bar of its own, outside the
// views (they re-render; it stays). The back end decides when to check and refuses to install
// during a session (plg_app_core::update); this only shows the state and asks for consent.

import type { Bridge } from "./bridge";
import { toCmdError } from "./bridge";
import { h, mount } from "./dom";
import { t } from "./i18n";
import type { AppEvent, UpdateView } from "./types";

/** What the bar shows for `view` while a session is (or is not) live; `null`: nothing. */
export interface PromptModel {
  text: string;
  /** The install button, if any; disabled during a session (with `hint` saying why). */
  install: { disabled: boolean } | null;
  hint: string | null;
  error: boolean;
}

export function promptModel(view: UpdateView, sessionLive: boolean, dismissed: boolean): PromptModel | null {
  const v = view.available ?? "";
  switch (view.phase) {
    case "available":
      if (dismissed) return null;
      return {
        text: t("update.available", { v, current: view.current }),
        install: { disabled: sessionLive },
        hint: sessionLive ? t("update.during_session") : null,
        error: false,
      };
    case "installing":
    case "installed":
      return { text: t("update.installing", { v }), install: null, hint: null, error: false };
    case "failed":
      // A failed *check* stays out of the way (the app works on); a failed install is shown.
      if (!view.available || dismissed) return null;
      return {
        text: t("update.failed", { msg: view.message ?? "" }),
        install: { disabled: sessionLive },
        hint: sessionLive ? t("update.during_session") : null,
        error: true,
      };
    default:
      return null;
  }
}

/** Mounts the bar into `host` and keeps it current; feed it every app event. */
export function updatePrompt(bridge: Bridge, host: HTMLElement, sessionLive: () => boolean): (ev: AppEvent) => void {
  let view: UpdateView | null = null;
  let dismissed = false;
  const draw = () => {
    const m = view && promptModel(view, sessionLive(), dismissed);
    if (!m) {
      mount(host);
      host.hidden = true;
      return;
    }
    host.hidden = false;
    const install = m.install
      ? h(
          "button",
          {
            class: "btn primary",
            "data-action": "install-update",
            disabled: m.install.disabled,
            title: m.hint ?? undefined,
            onclick: () => {
              bridge.call("install_update").catch((e) => {
                const err = toCmdError(e);
                if (view) view = { ...view, phase: "failed", message: err.message };
                draw();
              });
            },
          },
          t("update.install"),
        )
      : null;
    const later = m.install
      ? h("button", { class: "btn", onclick: () => ((dismissed = true), draw()) }, t("update.later"))
      : null;
    mount(
      host,
      h("div", { class: m.error ? "banner warn" : "banner" }, h("span", {}, m.text), m.hint ? h("small", {}, m.hint) : null, install, later),
    );
  };
  bridge
    .call("update")
    .then((v) => ((view = v), draw()))
    .catch(() => undefined);
  return (ev) => {
    if (ev.type === "update") {
      // A new version on offer asks again even if an older offer was put off.
      if (ev.data.available !== view?.available) dismissed = false;
      view = ev.data;
      draw();
    } else if (ev.type === "connected" || ev.type === "ended") {
      draw();
    }
  };
}
