import billingDoc from "../../../docs/billing.md?raw";
import { describe, expect, it } from "vitest";
import { ADVICE, NOT_FOR_GAMERS, explain } from "./errors";
import { dictionaries, setLang } from "./i18n";

// Every code in billing's error table (docs/billing.md).
const documented = (): string[] => {
  const doc: string = billingDoc;
  const table = doc.slice(doc.indexOf("| status | codes |"));
  const rows = table.slice(0, table.indexOf("\n\n")).split("\n").slice(2);
  return [...new Set(rows.flatMap((r: string) => [...r.split("|")[2].matchAll(/`([a-z_]+)`/g)].map((m) => m[1])))];
};

describe("errors", () => {
  it("every billing code a gamer can meet has advice; the rest are named as admin/node-only", () => {
    const codes = documented();
    expect(codes.length).toBeGreaterThan(40);
    const unclassified = codes.filter((c) => !(c in ADVICE) && !NOT_FOR_GAMERS.includes(c));
    expect(unclassified).toEqual([]);
    // No stale entries either: each listed billing code is still documented.
    for (const c of NOT_FOR_GAMERS) expect(codes).toContain(c);
  });

  it("advice exists in both languages and names a button or screen that exists", () => {
    for (const [code, a] of Object.entries(ADVICE)) {
      for (const d of Object.values(dictionaries)) {
        const text = (d as Record<string, string>)[a.text];
        expect(text, `${code} ${a.text}`).toBeTruthy();
        expect(text, `${code}: advice without {b}`).toContain("{b}");
        expect((d as Record<string, string>)[a.button], `${code} ${a.button}`).toBeTruthy();
      }
    }
  });

  it("reads as sentences: the error, then what to do", () => {
    setLang("en");
    expect(explain({ code: "no_active_plan", message: "no active plan: start the trial or buy a plan" })).toBe(
      "No active plan: start the trial or buy a plan. Start the free trial or pick a plan: “Subscription”.",
    );
    setLang("ru");
    expect(explain({ code: "already_connected", message: "already connected to Demo; disconnect first" })).toBe(
      "Already connected to Demo; disconnect first. Сначала нажмите “Отключить”.",
    );
    setLang("en");
    expect(explain({ code: "something_new", message: "odd." })).toBe("odd.");
    expect(explain(new Error("boom"))).toBe("boom");
  });
});
