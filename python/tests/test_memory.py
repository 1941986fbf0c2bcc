"""No memory growth over 1000 repeated solves (results are handed to NumPy through capsules;
a leak there, in the statistics objects or in a failed solve would show up here)."""

import gc
import os

import numpy as np
import pytest

import loaq
from conftest import layer


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_memory_growth_over_1000_solves():
    W, Xh, X = layer(5, m=128, n=64, T=128)
    bad = np.full((64, 64), np.nan)

    def one_round(i):  # one solve per round, cycling through every kind of call
        kind = i % 4
        if kind == 0:
            acc = loaq.CalibrationAccumulator(W.shape[1])
            acc.add_batch(Xh, X)
            return loaq.gptaq(W, acc, bits=4, group_size=32).weight[0, 0] + acc.hessian[0, 0]
        if kind == 1:
            st = loaq.ObjectiveStats(loaq.LinearOutput(), n=W.shape[1])
            st.add(Xh, X)
            return loaq.solve_objective(W, st, bits=4, return_target=True).target[0, 0]
        if kind == 2:
            try:
                loaq.gptq(W, bad)
            except loaq.NonFiniteInputError:
                return 0.0
        return loaq.gptq(W, 2 * Xh.T @ Xh, bits=3, act_order=True).codes[0, 0]

    for i in range(100):  # warm up allocator pools and caches
        one_round(i)
    gc.collect()
    before = rss_bytes()
    for i in range(1000):
        one_round(i)
    gc.collect()
    growth = rss_bytes() - before
    # One round allocates ~0.1-0.2 MB of results and statistics; leaking any would add ≥ 30 MB.
    print(f"RSS growth over 1000 rounds: {growth / 2**20:.2f} MiB")
    assert growth < 8 * 2**20
