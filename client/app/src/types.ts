// Shapes of what plg_app_core sends. Everything that is a Rust type is generated from it with
// ts-rs (src/generated/, written by `cargo test -p plg-app-core --test bindings`; CI fails if
// it is stale) and only re-exported here.

export type * from "./generated";
import type { GameView } from "./generated";

/** A catalog entry on the games screen. */
export type Game = GameView;

// Billing's own JSON (`me`, `plans`, `payments`) reaches the app untyped (`serde_json::Value`
// in plg_client::BillingClient), so these stay hand-written; their replies are `unknown` in
// the generated `Replies`.

export interface Subscription {
  plan: string;
  status: string;
  started_at: number;
  period_end: number;
  cancelled_at: number | null;
  seconds_left: number;
  max_sessions: number;
}

export interface Me {
  email: string;
  subscription: Subscription | null;
  trial_available: boolean;
  usage: { sessions_total: number; seconds_total: number; bytes_up: number; bytes_down: number };
}

export interface Plan {
  name: string;
  days: number;
  price: string | null;
  currency: string;
  max_sessions: number;
  path_limit: number;
}

export interface Payment {
  payment_id: string;
  plan: string;
  amount: string;
  currency: string;
  status: string;
  created_at: number;
}
