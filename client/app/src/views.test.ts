import { describe, expect, it } from "vitest";
import { HISTORY, pushTick } from "./context";
import { activeRoutes, slots } from "./views/dashboard";
import { categoryLabel, hue, initials, retryDelay } from "./views/games";
import { relayNames } from "./views/route";
import type { Tick } from "./types";

const tick = (secs: number, states: ("up" | "suspect" | "waiting")[] = []): Tick => ({
  secs,
  node_rtt_ms: null,
  primary: 0,
  duplicating: false,
  paths: states.map((state, id) => ({ id, state, rtt_ms: 1, rttvar_ms: 0, loss_pct: 0, probes_answered: 1, probes_sent: 1, first: 0, late: 0 })),
  packets_up: 0,
  packets_down: 0,
  bytes_up: 0,
  bytes_down: 0,
  duplicates: 0,
  dropped: 0,
  direct: null,
  accelerated: null,
  via_exit_ms: null,
  verdict: "",
});

describe("views", () => {
  it("names each relay of a route once, skipping direct paths", () => {
    const n = (name: string) => ({ id: `id-${name}`, name, server_name: "", region: "eu", control_addr: "", data_addr: "" });
    expect(relayNames({ relays: [null, n("fra-2"), n("ams-1"), n("fra-2")] })).toEqual(["fra-2", "ams-1"]);
    expect(relayNames({ relays: [null, null] })).toEqual([]);
  });

  it("keeps the last HISTORY ticks", () => {
    let ticks: Tick[] = [];
    for (let i = 0; i < HISTORY + 10; i++) ticks = pushTick(ticks, tick(i));
    expect(ticks.length).toBe(HISTORY);
    expect(ticks[0].secs).toBe(10);
    expect(ticks[HISTORY - 1].secs).toBe(HISTORY + 9);
  });

  it("counts answering paths as active routes", () => {
    expect(activeRoutes(undefined)).toBe(0);
    expect(activeRoutes(tick(0, ["up", "up"]))).toBe(2);
    expect(activeRoutes(tick(0, ["up", "suspect"]))).toBe(1);
    expect([slots(0), slots(45), slots(500)]).toEqual([10, 45, HISTORY]);
  });

  it("game tiles: initials and a stable hue", () => {
    expect(initials("Counter-Strike 2")).toBe("CS");
    expect(initials("Dota 2")).toBe("D2");
    expect(initials("Valorant")).toBe("VA");
    expect(hue("cs2")).toBe(hue("cs2"));
    expect(hue("cs2")).toBeLessThan(360);
    expect(categoryLabel("mmo")).toBe("MMO");
    expect(categoryLabel("battle-royale")).toBe("Battle royale");
    expect(categoryLabel("shooter")).toBe("Shooter");
  });

  it("retries an unreachable billing with backoff, capped at a minute", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 20].map(retryDelay)).toEqual([2, 4, 8, 16, 32, 60, 60, 60]);
  });
});
