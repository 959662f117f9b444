#!/usr/bin/env python3
"""Writes wifi-stall.trace: 10 s of a Wi-Fi-like one-way path in 10 ms steps.

Run from this directory: `python3 wifi-stall.py > wifi-stall.trace` (seeded: the same file
every time). The model, per 10 ms step:
  - base delay 3 ms plus a log-normal airtime term (median 2 ms, sigma 0.6), so most steps
    are 4-8 ms with a tail towards 15 ms;
  - 2 % of steps a retransmission spike: +15..30 ms;
  - 0.8 % of steps start a loss run of 1..3 steps (10-30 ms with everything lost);
  - one 300 ms stall from 1500 ms to 1800 ms: the radio is off the air, datagrams queue and
    all leave together at the end, so a datagram arriving t ms into the stall waits 300 - t ms
    on top of the base delay.
The trace loops (`10000 end`). Format: docs/simulator.md § Trace replay.
"""
import math
import random

STEP = 10
LENGTH = 10_000
STALL = (1500, 1800)

rng = random.Random(1)
print("# Wi-Fi-like one-way trace, 10 s in 10 ms steps, written by wifi-stall.py (seed 1).")
print("# t_ms  delay_ms | loss ; a 300 ms stall at 1500-1800 ms; loops at 10 s.")
loss_left = 0
for t in range(0, LENGTH, STEP):
    base = 3.0 + 2.0 * math.exp(0.6 * rng.gauss(0.0, 1.0))
    spike = rng.random() < 0.02
    extra = rng.uniform(15.0, 30.0)
    starts_loss = rng.random() < 0.008
    run = rng.randint(1, 3)
    if STALL[0] <= t < STALL[1]:
        print(f"{t} {STALL[1] - t + base:.1f}  # stall")
        continue
    if loss_left == 0 and starts_loss:
        loss_left = run
    if loss_left > 0:
        loss_left -= 1
        print(f"{t} loss")
        continue
    print(f"{t} {base + (extra if spike else 0.0):.1f}")
print(f"{LENGTH} end")
