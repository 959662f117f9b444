import { describe, expect, it } from "vitest";
import { dictionaries, setLang, t } from "./i18n";

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe("i18n", () => {
  it("has every English key in Russian, with the same placeholders and real text", () => {
    const en = dictionaries.en as Record<string, string>;
    const ru = dictionaries.ru as Record<string, string>;
    expect(Object.keys(ru).sort()).toEqual(Object.keys(en).sort());
    for (const k of Object.keys(en)) {
      expect(placeholders(ru[k]), k).toEqual(placeholders(en[k]));
      expect(ru[k].trim().length, k).toBeGreaterThan(0);
    }
    // Mostly translated, not copied (brand names and a few symbols may stay).
    const same = Object.keys(en).filter((k) => en[k] === ru[k]);
    expect(same).toEqual(["app.name"]);
  });

  it("fills placeholders and switches language", () => {
    setLang("en");
    expect(t("dash.routes", { n: 2 })).toBe("2 routes active");
    setLang("ru");
    expect(t("dash.routes", { n: 2 })).toBe("Активных маршрутов: 2");
    setLang("de");
    expect(t("nav.games")).toBe("Games");
    expect(t("games.detected")).toBe("{name} is running.");
  });
});
