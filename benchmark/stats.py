"""Statistics over seeds: mean and sample std, Welch's t interval, and "within noise".

Example: python -c "from benchmark.stats import within_noise; print(within_noise([0.990, 0.991], [0.985, 0.986]))"
"""

from __future__ import annotations

import math
import statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# Two-sided 95 % quantiles of Student's t by degrees of freedom (a table: scipy is not a dependency).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}


def t_975(df: float) -> float:
    """The table's quantile at the largest tabulated df not above ``df`` (conservative); 1.96 past 60."""
    if df >= 120:
        return 1.96
    return T_975[max(k for k in T_975 if k <= max(df, 1))]


def within_noise(a: list[float], b: list[float]) -> tuple[bool, float, float]:
    """(within noise?, |difference of means|, half-width of its 95 % Welch t interval), from per-seed values.

    Within noise = the interval contains zero: the seeds cannot tell the two apart. With 3 seeds each the
    interval is wide (t ~ 2.8-4.3), as it should be. Both spreads zero: only an exact tie is within noise.
    """
    (mean_a, std_a), (mean_b, std_b) = mean_std(a), mean_std(b)
    var_a, var_b = std_a ** 2 / len(a), std_b ** 2 / len(b)
    diff = abs(mean_a - mean_b)
    if var_a + var_b == 0:
        return diff == 0, diff, 0.0
    # Welch-Satterthwaite degrees of freedom; a group of one seed contributes no variance and no df.
    terms = [v ** 2 / (len(x) - 1) for v, x in ((var_a, a), (var_b, b)) if len(x) > 1 and v > 0]
    df = (var_a + var_b) ** 2 / sum(terms) if terms else 1
    band = t_975(df) * math.sqrt(var_a + var_b)
    return diff <= band, diff, band
