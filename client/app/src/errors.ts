// What the gamer reads when a command fails: the error's own sentence plus advice that names
// a button or screen of this app (every code billing or the app core can return to a gamer;
// errors.test.ts holds the list to docs/billing.md).

import { toCmdError } from "./bridge";
import { t, type Key } from "./i18n";

/** Advice for a code: a sentence with `{b}`, the label of the button or screen it names. */
export interface Advice {
  text: Key;
  button: Key;
}

const A = (text: Key, button: Key): Advice => ({ text, button });

/** Every error code a gamer can meet, with its advice. */
export const ADVICE: Record<string, Advice> = {
  // billing (docs/billing.md § Errors)
  no_active_plan: A("advice.no_active_plan", "nav.subscription"),
  trial_used: A("advice.trial_used", "nav.subscription"),
  unknown_plan: A("advice.unknown_plan", "nav.subscription"),
  invalid_promo_code: A("advice.promo", "nav.subscription"),
  unknown_promo_code: A("advice.promo", "nav.subscription"),
  promo_unavailable: A("advice.promo", "nav.subscription"),
  promo_already_redeemed: A("advice.promo", "nav.subscription"),
  payments_unavailable: A("advice.payments_unavailable", "sub.pay"),
  provider_unavailable: A("advice.payments_unavailable", "sub.pay"),
  nothing_to_cancel: A("advice.nothing_to_cancel", "nav.subscription"),
  invalid_credentials: A("advice.invalid_credentials", "signin.tab.up"),
  email_taken: A("advice.email_taken", "signin.tab.in"),
  invalid_email: A("advice.fix_field", "signin.submit.up"),
  weak_password: A("advice.fix_field", "signin.submit.up"),
  bad_request: A("advice.update", "nav.settings"),
  invalid_token: A("advice.sign_in_again", "signin.out"),
  invalid_refresh_token: A("advice.sign_in_again", "signin.out"),
  refresh_token_reused: A("advice.sign_in_again", "signin.out"),
  account_banned: A("advice.account_banned", "signin.out"),
  rate_limited: A("advice.rate_limited", "nav.dashboard"),
  internal: A("advice.internal", "nav.dashboard"),
  not_found: A("advice.update", "nav.settings"),
  unknown_game: A("advice.pick_game", "nav.games"),
  game_not_ready: A("advice.pick_game", "nav.games"),
  unknown_session: A("advice.session_gone", "nav.dashboard"),
  session_limit_reached: A("advice.session_limit_reached", "dash.disconnect"),
  payload_too_large: A("advice.update", "nav.settings"),
  unsupported_media_type: A("advice.update", "nav.settings"),
  // the app core and the session controller
  billing_unreachable: A("advice.billing_unreachable", "games.retry"),
  billing_protocol: A("advice.update", "nav.settings"),
  no_node: A("advice.no_node", "nav.route"),
  node_refused: A("advice.node", "nav.route"),
  node_unreachable: A("advice.node", "nav.route"),
  game_server_needed: A("advice.game_server_needed", "nav.settings"),
  capture_failed: A("advice.capture", "nav.settings"),
  capture_unavailable: A("advice.capture", "nav.settings"),
  not_signed_in: A("advice.sign_in_again", "signin.out"),
  login_expired: A("advice.sign_in_again", "signin.out"),
  already_connected: A("advice.already_connected", "dash.disconnect"),
  already_connecting: A("advice.already_connecting", "nav.dashboard"),
  bad_settings: A("advice.save", "set.save"),
  save_failed: A("advice.save", "set.save"),
  no_game: A("advice.pick_game", "nav.games"),
};

/** Billing codes only admins and nodes can get (the app never calls those endpoints). */
export const NOT_FOR_GAMERS = [
  "invalid_name", "invalid_region", "invalid_public_key", "invalid_address", "invalid_game", "invalid_filter",
  "invalid_label", "invalid_days", "invalid_ttl", "too_many_reports", "bad_notification", "invalid_join_token",
  "invalid_node_secret", "invalid_signature", "forbidden", "unknown_account", "unknown_node", "unknown_join_token",
  "promo_code_taken", "slug_taken",
];

/** The advice for `code` in the current language, if it has any. */
export function advice(code: string): string | null {
  const a = ADVICE[code];
  return a ? t(a.text, { b: `“${t(a.button)}”` }) : null;
}

/** An error as the gamer reads it: its sentence, then what to do. */
export function explain(e: unknown): string {
  const c = toCmdError(e);
  const msg = c.message.trim();
  const what = advice(c.code);
  if (!what) return msg;
  const sentence = /[.!?…]$/.test(msg) ? msg : `${msg}.`;
  return `${sentence.charAt(0).toUpperCase()}${sentence.slice(1)} ${what}`;
}
