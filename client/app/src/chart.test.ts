import { describe, expect, it } from "vitest";
import { axisLabel, linePath, niceMax } from "./chart";

describe("chart", () => {
  it("niceMax rounds up to 1, 2, 2.5, 5 steps and respects the floor", () => {
    expect(niceMax([0.3], 1)).toBe(1);
    expect(niceMax([13], 1)).toBe(20);
    expect(niceMax([21, null, 3], 1)).toBe(25);
    expect(niceMax([260], 1)).toBe(500);
    expect(niceMax([], 5)).toBe(5);
  });
  it("axis labels drop trailing zeros", () => {
    expect(axisLabel(0)).toBe("0");
    expect(axisLabel(2.5)).toBe("2.5");
    expect(axisLabel(0.2)).toBe("0.2");
    expect(axisLabel(10)).toBe("10");
  });

  it("linePath right-aligns values and breaks at gaps", () => {
    // 3 slots over width 100: x = 0, 50, 100; height 10, max 10.
    expect(linePath([0, 10], 3, 100, 10, 10)).toBe("M50.0,10.0L100.0,0.0");
    expect(linePath([5, null, 5], 3, 100, 10, 10)).toBe("M0.0,5.0M100.0,5.0");
    // Values above max are clipped to the top.
    expect(linePath([20], 1, 100, 10, 10)).toBe("M0.0,0.0");
    expect(linePath([], 3, 100, 10, 10)).toBe("");
  });
});
