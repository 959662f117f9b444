import { describe, expect, it } from "vitest";
import { bytes, delta, duration, ms, pct } from "./format";

describe("format", () => {
  it("bytes", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(1023)).toBe("1023 B");
    expect(bytes(1536)).toBe("1.50 KB");
    expect(bytes(50 * 1024 * 1024)).toBe("50.0 MB");
  });
  it("duration", () => {
    expect(duration(0)).toBe("00:00");
    expect(duration(61.9)).toBe("01:01");
    expect(duration(3723)).toBe("1:02:03");
    expect(duration(-5)).toBe("00:00");
  });
  it("ms and pct", () => {
    expect(ms(null)).toBe("—");
    expect(ms(0.123)).toBe("0.12 ms");
    expect(ms(4.56)).toBe("4.6 ms");
    expect(ms(42.4)).toBe("42 ms");
    expect(pct(0)).toBe("0.0 %");
    expect(pct(0.25)).toBe("0.25 %");
    expect(pct(12.34)).toBe("12.3 %");
    expect(pct(Number.NaN)).toBe("—");
  });
  it("delta", () => {
    expect(delta(40, 30, "ms")).toBe("−10.0 ms");
    expect(delta(0.1, 0.35, "ms")).toBe("+0.25 ms");
    expect(delta(1, 1, "%")).toBe("±0.00 %");
  });
});
