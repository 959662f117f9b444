import { explain } from "../errors";
import type { CallArgs, CommandName } from "../bridge";
import type { Ctx } from "../context";
import { h, mount } from "../dom";
import { bytes, date, duration } from "../format";
import { lang, t } from "../i18n";
import type { Me, Payment, Plan } from "../types";

/** Plan, expiry, trial, plans to pay for, promo code, payment history. */
export function subscription(ctx: Ctx): HTMLElement {
  const current = h("section", { class: "card plan-card", "data-testid": "plan" }, h("p", { class: "muted" }, t("common.loading")));
  const plans = h("div", { class: "plans" });
  const history = h("section", { class: "card" }, h("h2", {}, t("sub.history")));
  const info = h("div", {});
  const fail = (e: unknown) => ctx.toast(t("common.error"), explain(e), "error");

  const act = <K extends CommandName>(cmd: K, ...args: CallArgs<K>) => async () => {
    try {
      const r = (await ctx.bridge.call(cmd, ...args)) as Record<string, unknown>;
      if (cmd === "pay") {
        const i = (r.instructions ?? r) as { text?: string; pay_url?: string; comment?: string };
        mount(info, h("div", { class: "banner" }, h("b", {}, t("sub.paywith")), " ", i.text ?? "", i.pay_url ? h("span", { class: "mono small" }, ` ${i.pay_url}`) : null, i.comment ? h("span", { class: "mono small" }, ` ${i.comment}`) : null));
      }
      await load();
    } catch (e) {
      fail(e);
    }
  };

  const promo = h("input", { placeholder: "PROMO-CODE", "data-testid": "promo", class: "mono" });

  async function load(): Promise<void> {
    try {
      const [me, pl, pay] = await Promise.all([
        // Billing's JSON, passed through untyped by the core (see types.ts).
        ctx.bridge.call("me") as Promise<Me>,
        ctx.bridge.call("plans") as Promise<{ plans: Plan[] }>,
        ctx.bridge.call("payments") as Promise<{ payments: Payment[] }>,
      ]);
      const s = me.subscription;
      const days = s ? Math.floor(s.seconds_left / 86400) : 0;
      mount(
        current,
        h("div", { class: "plan-main" },
          h("div", {},
            h("div", { class: "muted small" }, t("sub.plan")),
            h("div", { class: "plan-name", "data-testid": "plan-name" }, s ? s.plan : t("sub.none")),
            s ? h("span", { class: `badge ${s.status === "active" ? "live" : "warn"}` }, s.status) : null,
          ),
          s
            ? h("div", { class: "plan-until" },
                h("div", { class: "muted small" }, t("sub.until")),
                h("div", {}, date(s.period_end, lang())),
                h("div", { class: "muted small" }, t("sub.left", { d: days })),
                h("div", { class: "meter" }, h("i", { style: `width:${Math.min(100, (s.seconds_left / Math.max(1, s.period_end - s.started_at)) * 100)}%` })),
              )
            : null,
        ),
        h("div", { class: "muted small" }, t("sub.usage", { n: me.usage.sessions_total, t: duration(me.usage.seconds_total), b: bytes(me.usage.bytes_up + me.usage.bytes_down) })),
        h("div", { class: "actions left" },
          me.trial_available ? h("button", { class: "btn primary", onclick: act("start_trial") }, t("sub.trial")) : null,
          s && s.status === "active" && s.plan !== "trial" ? h("button", { class: "btn", onclick: act("cancel_plan") }, t("sub.cancel")) : null,
        ),
      );
      mount(
        plans,
        ...pl.plans
          .filter((p) => p.price)
          .map((p) =>
            h("div", { class: `card plan-offer${p.name === "yearly" ? " best" : ""}` },
              h("div", { class: "plan-name" }, p.name),
              h("div", { class: "price" }, p.price ?? "", h("span", { class: "muted small" }, ` ${p.currency}`)),
              h("ul", { class: "muted small" }, h("li", {}, t("sub.days", { n: p.days })), h("li", {}, t("sub.sessions", { n: p.max_sessions })), h("li", {}, t("sub.pathlimit", { n: p.path_limit }))),
              h("button", { class: "btn primary wide", onclick: act("pay", { plan: p.name }) }, t("sub.pay")),
            ),
          ),
      );
      mount(
        history,
        h("h2", {}, t("sub.history")),
        pay.payments.length === 0
          ? h("p", { class: "muted" }, t("sub.nohistory"))
          : h("table", { class: "table" }, h("tbody", {}, pay.payments.map((p) => h("tr", {}, h("td", {}, date(p.created_at, lang())), h("td", {}, p.plan), h("td", {}, `${p.amount} ${p.currency}`), h("td", {}, h("span", { class: "badge" }, p.status)))))),
      );
    } catch (e) {
      mount(current, h("p", { class: "form-error" }, explain(e)));
    }
  }
  void load();
  return h(
    "div",
    { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, t("sub.title"))),
    current,
    info,
    h("h2", { class: "section-title" }, t("sub.plans")),
    plans,
    h("div", { class: "cols" },
      h("section", { class: "card" },
        h("h2", {}, t("sub.promo")),
        h("form", { class: "inline", onsubmit: (e: Event) => { e.preventDefault(); void act("redeem", { code: promo.value })(); } }, promo, h("button", { class: "btn", type: "submit" }, t("sub.redeem"))),
      ),
      history,
    ),
  );
}
