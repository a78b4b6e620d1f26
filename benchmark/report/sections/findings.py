"""Findings worded from the numbers: the winner and its margin, bidirectionality, depth, loss, the notebook.

Example: rnnbench report --out reports/   # the "## Findings" section

Best runs are chosen by validation and compared on test; the winner and the notebook comparison use seed
means where every architecture of the task has seeds.
"""

from __future__ import annotations

from ...catalog import arch_order_key
from ...notebook import NOTEBOOK_REFERENCE
from ...schema import Metric
from ...stats import within_noise
from ..markdown import Figures, pct
from ..select import best_of, best_run, candidates, headline, longest_length, reported_archs, reported_tasks
from ..snapshot import RunRecord, Snapshot

TIE_POINTS = 0.1  # findings call a margin below this many points a tie (one seed per configuration)


def _winner_line(task: str, numbers: dict[str, tuple[float, list[float]]]) -> list[str]:
    """The winner by ``headline``'s numbers, its margin, and whether the seeds can tell it from the runner-up."""
    scored = [(acc, arch) for arch, (acc, _) in numbers.items()]
    if not scored:
        return []
    scored.sort(key=lambda item: (-item[0], arch_order_key(item[1])))
    metric = "mean bit accuracy" if task == "addition" else "test accuracy"
    (top, winner), lines = scored[0], []
    seeds = numbers[winner][1]
    basis = f"mean of {len(seeds)} seeds" if seeds else "best trial"
    if len(scored) == 1:
        return [f"- **{task}**: only {winner} has a finished run ({metric} {pct(top)} %, {basis})."]
    second, runner_up = scored[1]
    margin = 100 * (top - second)
    tied = [arch for acc, arch in scored if 100 * (top - acc) < TIE_POINTS]
    if len(tied) > 1:
        lines.append(f"- **{task}**: {', '.join(tied)} tie within {TIE_POINTS:g} points at {pct(top)} % {metric} "
                     f"({basis}); the weakest, {scored[-1][1]}, reaches {pct(scored[-1][0])} %.")
    else:
        noise = ""
        if len(seeds) >= 2 and len(numbers[runner_up][1]) >= 2:
            same = within_noise(seeds, numbers[runner_up][1])[0]
            noise = (", within the seeds' noise (95 % Welch t)" if same else ", beyond the seeds' noise (95 % "
                     "Welch t)")
        lines.append(f"- **{task}**: {winner} wins with {pct(top)} % {metric} ({basis}), {margin:.2f} points ahead "
                     f"of {runner_up} ({pct(second)} %){noise}; the weakest, {scored[-1][1]}, reaches "
                     f"{pct(scored[-1][0])} %.")
    return lines


def _pair_line(task: str, what: str, pairs: list[tuple[str, RunRecord | None, str, RunRecord | None]]) -> list[str]:
    """One finding comparing pairs of best runs (label a, run a, label b, run b) on test accuracy."""
    diffs = []
    for label_a, a, label_b, b in pairs:
        if a is None or b is None or a.metric(Metric.TEST_ACC) is None or b.metric(Metric.TEST_ACC) is None:
            continue
        diffs.append((label_a, label_b, 100 * (b.metric(Metric.TEST_ACC) - a.metric(Metric.TEST_ACC))))
    if not diffs:
        return []
    helped = [d for d in diffs if d[2] >= TIE_POINTS]
    hurt = [d for d in diffs if d[2] <= -TIE_POINTS]
    detail = ", ".join(f"{x} → {y} {d:+.2f}" for x, y, d in diffs)
    if len(helped) == len(diffs):
        verdict = "helped"
    elif len(hurt) == len(diffs):
        verdict = "hurt"
    elif not helped and not hurt:
        verdict = f"made no difference beyond {TIE_POINTS:g} points"
    else:
        verdict = f"helped in {len(helped)} of {len(diffs)} cases and hurt in {len(hurt)}"
    return [f"- **{task}**: {what} {verdict} ({detail} points)."]


def _notebook_line(task: str, numbers: dict[str, tuple[float, list[float]]]) -> list[str]:
    refs = [(arch, NOTEBOOK_REFERENCE.get(task, {}).get(arch), acc) for arch, (acc, _) in numbers.items()]
    refs = [(arch, ref, acc) for arch, ref, acc in refs if ref is not None]
    if not refs:
        return []
    beaten = [arch for arch, ref, acc in refs if 100 * acc > ref]
    top, ref, acc = max(refs, key=lambda item: (100 * item[2] - item[1], item[0]))
    closest = "largest gain" if beaten else "closest"
    basis = "seed means" if numbers[top][1] else "best trials"
    return [f"- **{task}**: beats the notebook for {len(beaten)} of {len(refs)} architectures it "
            f"reported ({basis}); {closest}: {top} {100 * acc - ref:+.2f} points ({pct(acc)} % "
            f"against {ref:.2f} %)."]


def _length_line(snap: Snapshot, task: str, bests: dict[str, RunRecord | None]) -> list[str]:
    at = {arch: longest_length(snap, run) for arch, run in bests.items() if run is not None}
    at = {arch: value for arch, value in at.items() if value is not None}
    if not at:
        return []
    length = max(value[0] for value in at.values())
    perfect = [arch for arch, value in at.items() if value[0] == length and value[1] >= 0.999]
    best_arch = max(at, key=lambda arch: (at[arch][0] == length, at[arch][1]))
    return [f"- **{task}**: at length {length}, {len(perfect)} of {len(at)} architectures keep "
            f"≥ 99.9 % bit accuracy; best {best_arch} at {pct(at[best_arch][1])} %."]


def findings(snap: Snapshot, figures: Figures) -> str:
    """Findings worded from the numbers: best runs chosen by validation and compared on test; the winner and the
    notebook comparison by seed means where every architecture of the task has seeds."""
    lines: list[str] = []
    for task in reported_tasks(snap):
        archs = reported_archs(snap, task)
        numbers = headline(snap, task, archs)
        lines += _winner_line(task, numbers)
        bests = {arch: best_run(snap, task, arch) for arch in archs}
        pairs = [(uni, bests.get(uni), f"bi{uni}", bests.get(f"bi{uni}")) for uni in ("rnn", "lstm", "gru")]
        lines += _pair_line(task, "bidirectionality", pairs)
        depth = []
        for arch in archs:
            pool = candidates(snap, task, arch)
            shallow = best_of(r for r in pool if r.param("num_layers") == "1")
            deep = best_of(r for r in pool if r.param("num_layers") not in ("", "1"))
            if shallow and deep:
                depth.append((f"{arch} 1 layer", shallow, f"{deep.param('num_layers')} layers", deep))
        lines += _pair_line(task, "depth (best 1-layer vs best deeper trial)", depth)
        losses = [(f"{arch} ce", best_run(snap, task, arch, loss="ce"), "mse", best_run(snap, task, arch, loss="mse"))
                  for arch in archs]
        lines += _pair_line(task, "MSE instead of cross-entropy", losses)
        lines += _notebook_line(task, numbers)
        if task == "addition":
            lines += _length_line(snap, task, bests)
    if not lines:
        return ""
    return "\n".join(["## Findings", "", *lines, ""])
