// Shapes of what plg_app_core sends (core/src/lib.rs, session.rs, settings.rs, notice.rs).

export interface Settings {
  autostart: boolean;
  language: "en" | "ru";
  theme: "system" | "dark" | "light";
  redundancy: "adaptive" | "single" | "duplicate";
  paths: number;
  capture: "proxy" | "tun" | "windivert";
  proxy_listen: string;
  game_server: string;
  minimise_to_tray: boolean;
  notifications: boolean;
  last_game: string;
}

export interface AccountView {
  email: string;
  billing_url: string;
}

export interface NodeInfo {
  id: string;
  server_name: string;
  region: string;
  control_addr: string;
  data_addr: string;
}

export interface SessionInfo {
  session_id: string;
  game: string;
  game_name: string;
  node: NodeInfo;
  capture: string;
  local_addr: string | null;
  paths: number;
  /** For each path, the node relaying it to the exit (null: straight to the exit). */
  relays: (string | null)[];
  redundancy: string;
  started_at: number;
  expires_at: number;
  probing: boolean;
}

export interface StateView {
  account: AccountView | null;
  default_billing_url: string;
  settings: Settings;
  session: SessionInfo | null;
  detected: string[];
  config_dir: string;
  logs_dir: string;
  capture_modes: string[];
  version: string;
}

export interface Sample {
  rtt_ms: number;
  loss_pct: number;
  jitter_ms: number;
  probes: number;
}

export interface PathTick {
  id: number;
  state: "up" | "suspect" | "waiting";
  rtt_ms: number | null;
  rttvar_ms: number;
  loss_pct: number;
  probes_answered: number;
  probes_sent: number;
}

export interface Tick {
  secs: number;
  node_rtt_ms: number | null;
  primary: number;
  duplicating: boolean;
  paths: PathTick[];
  packets_up: number;
  packets_down: number;
  bytes_up: number;
  bytes_down: number;
  duplicates: number;
  dropped: number;
  direct: Sample | null;
  accelerated: Sample | null;
}

export interface Average {
  rtt_ms: number;
  loss_pct: number;
  jitter_ms: number;
  samples: number;
}

export interface Summary {
  duration_secs: number;
  bytes_up: number;
  bytes_down: number;
  packets_up: number;
  packets_down: number;
  failovers: number;
  node_rtt_ms: number | null;
  before: Average | null;
  after: Average | null;
  ended_by: string;
}

export interface Notice {
  kind: string;
  notify: boolean;
  title: string;
  body: string;
}

export interface Game {
  slug: string;
  name: string;
  category: string | null;
  regions: string[];
  process_names: string[];
  running: boolean;
}

export interface RouteView {
  game: string;
  game_name: string;
  destinations: string[];
  nodes: { id: string; region: string; control_addr: string; recommended: boolean; ping_ms: number | null; loss_percent: number | null }[];
  paths: number;
  /** For each planned path, the node relaying it to the exit (null: straight to the exit). */
  relays: (string | null)[];
  redundancy: string;
  measurable: boolean;
}

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

export type AppEvent =
  | { type: "tick"; data: Tick }
  | { type: "connected"; data: SessionInfo }
  | { type: "session"; data: SessionInfo }
  | { type: "ended"; data: Summary }
  | { type: "notice"; data: Notice }
  | { type: "detected"; data: string[] }
  | { type: "settings"; data: Settings }
  | { type: "account"; data: AccountView | null };

export interface CmdError {
  code: string;
  message: string;
}
