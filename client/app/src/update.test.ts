import { describe, expect, it } from "vitest";
import { setLang } from "./i18n";
import type { UpdateView } from "./types";
import { promptModel } from "./update";

const view = (over: Partial<UpdateView>): UpdateView => ({
  current: "0.1.0",
  phase: "available",
  available: "0.1.1",
  notes: null,
  last_check: 1,
  message: null,
  ...over,
});

describe("update prompt", () => {
  it("offers Install and restart for a new version, and not during a session", () => {
    setLang("en");
    const idle = promptModel(view({}), false, false);
    expect(idle?.text).toBe("PLG Booster 0.1.1 is available (you have 0.1.0).");
    expect(idle?.install).toEqual({ disabled: false });
    expect(idle?.hint).toBeNull();
    const live = promptModel(view({}), true, false);
    expect(live?.install).toEqual({ disabled: true });
    expect(live?.hint).toBe("Disconnect first: installing restarts the app.");
  });

  it("says nothing when up to date, after Later, or when only a check failed", () => {
    for (const phase of ["idle", "checking", "up_to_date"] as const) {
      expect(promptModel(view({ phase, available: null }), false, false), phase).toBeNull();
    }
    expect(promptModel(view({}), false, true)).toBeNull();
    expect(promptModel(view({ phase: "failed", available: null, message: "offline" }), false, false)).toBeNull();
  });

  it("shows a refused install with the reason, in Russian too", () => {
    const msg = "the update was refused: the downloaded file does not match its signature";
    setLang("en");
    const m = promptModel(view({ phase: "failed", message: msg }), false, false);
    expect(m?.error).toBe(true);
    expect(m?.text).toContain(msg);
    expect(m?.install).toEqual({ disabled: false });
    setLang("ru");
    expect(promptModel(view({ phase: "installing" }), false, false)?.text).toContain("Устанавливается 0.1.1");
    setLang("en");
  });
});
