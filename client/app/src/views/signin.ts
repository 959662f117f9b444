import { explain } from "../errors";
import type { Ctx } from "../context";
import { h } from "../dom";
import { t } from "../i18n";

let mode: "in" | "up" = "up";

/** Sign in / sign up, with the trial offer on sign-up. */
export function signIn(ctx: Ctx): HTMLElement {
  const billing = h("input", { id: "billing", type: "url", value: ctx.model.state.default_billing_url, required: true });
  const email = h("input", { id: "email", type: "email", autocomplete: "username", required: true, placeholder: "you@example.com", "data-testid": "email" });
  const password = h("input", {
    id: "password",
    type: "password",
    autocomplete: mode === "up" ? "new-password" : "current-password",
    required: true,
    minlength: 8,
    "data-testid": "password",
  });
  const trial = h("input", { id: "trial", type: "checkbox", checked: true, "data-testid": "trial" });
  const error = h("div", { class: "form-error", role: "alert", "data-testid": "signin-error" });
  const submit = h("button", { class: "btn primary wide", type: "submit", "data-testid": "signin-submit" }, mode === "up" ? t("signin.submit.up") : t("signin.submit.in"));

  const form = h(
    "form",
    {
      class: "signin-form",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        submit.setAttribute("disabled", "");
        error.textContent = "";
        try {
          await ctx.bridge.call("sign_in", {
            billing_url: billing.value,
            email: email.value,
            password: password.value,
            register: mode === "up",
            trial: mode === "up" && trial.checked,
          });
          ctx.model.state = await ctx.bridge.call("state");
          ctx.model.view = "games";
          ctx.render();
        } catch (err) {
          error.textContent = explain(err);
          submit.removeAttribute("disabled");
        }
      },
    },
    h("div", { class: "tabs" },
      (["up", "in"] as const).map((m) =>
        h("button", { type: "button", class: `tab${mode === m ? " active" : ""}`, "data-testid": `tab-${m}`, onclick: () => { mode = m; ctx.render(); } }, m === "up" ? t("signin.tab.up") : t("signin.tab.in")),
      ),
    ),
    h("label", { for: "email" }, t("signin.email")),
    email,
    h("label", { for: "password" }, t("signin.password")),
    password,
    mode === "up" ? h("label", { class: "check trial-offer" }, trial, h("span", {}, t("signin.trial"))) : null,
    h("details", { class: "server" }, h("summary", {}, `${t("signin.billing")}: ${ctx.model.state.default_billing_url}`), billing),
    error,
    submit,
  );

  return h(
    "div",
    { class: "signin" },
    h(
      "section",
      { class: "signin-hero" },
      h("div", { class: "brand big" }, h("span", { class: "logo" }, "▶"), h("span", {}, "PLG ", h("b", {}, "Booster"))),
      h("h1", {}, t("signin.title")),
      h("p", { class: "muted" }, t("signin.subtitle")),
      h("ul", { class: "hero-points" },
        h("li", {}, "⇄ ", t("route.paths")),
        h("li", {}, "◔ ", t("dash.ping"), " · ", t("dash.loss"), " · ", t("dash.jitter")),
        h("li", {}, "★ ", t("signin.trial")),
      ),
    ),
    h("section", { class: "signin-card card" }, form),
  );
}
