"""Findings worded from the numbers: the winner and its margin, bidirectionality, depth, loss, the notebook.

Example: rnnbench report --out reports/   # the "## Findings" section

Best runs are chosen by validation and compared on test; the winner and the notebook comparison use seed
means where every architecture of the task has seeds. Every finding says what it rests on (how many runs),
and an effect (bidirectionality, depth, loss) is stated only where each side of a comparison has at least
``MIN_EVIDENCE`` runs: seeds of the best configuration, else completed trials.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...catalog import arch_order_key
from ...notebook import NOTEBOOK_REFERENCE
from ...registry import task_record
from ...schema import Metric
from ...stats import mean_std, within_noise
from ..markdown import Figures, pct, plural
from ..select import (
    best_of,
    best_run,
    candidates,
    headline,
    longest_length,
    reported_archs,
    reported_tasks,
    run_kind,
    seed_accs,
)
from ..snapshot import RunRecord, Snapshot

TIE_POINTS = 0.1  # findings call a margin below this many points a tie (one seed per configuration)
MIN_EVIDENCE = 2  # runs (seeds, else completed trials) each side of a comparison needs before an effect is claimed


@dataclass
class Side:
    """One side of a comparison: its best run, the completed runs it was chosen from, that run's seeds."""

    label: str
    best: RunRecord | None
    pool: list[RunRecord]
    seeds: list[float]

    @property
    def runs(self) -> int:
        return len(self.pool)


def _side(snap: Snapshot, label: str, runs: list[RunRecord]) -> Side:
    pool = [r for r in runs if best_of([r]) is r and r.metric(Metric.TEST_ACC) is not None]
    best = best_of(pool)
    return Side(label, best, pool, seed_accs(snap, best))


def _evidence(counts: list[int], noun: str) -> str:
    """'3 trials each', '2 to 6 trials each'."""
    low, high = min(counts), max(counts)
    return f"{plural(low, noun)} each" if low == high else f"{low} to {plural(high, noun)} each"


def _winner_line(task: str, numbers: dict[str, tuple[float, list[float]]], pools: dict[str, int],
                 kind: str) -> list[str]:
    """The winner by ``headline``'s numbers, its margin, whether the seeds tell it from the runner-up, and the
    runs it rests on."""
    scored = [(acc, arch) for arch, (acc, _) in numbers.items()]
    if not scored:
        return []
    scored.sort(key=lambda item: (-item[0], arch_order_key(item[1])))
    metric = task_record(task).metric_label("acc")
    (top, winner), lines = scored[0], []
    seeds = numbers[winner][1]
    basis = f"mean of {plural(len(seeds), 'seed')}" if seeds else kind
    rests = (f"rests on {_evidence([len(numbers[a][1]) for _, a in scored], 'seed')}" if seeds else
             f"rests on one {kind} per architecture, chosen from {_evidence([pools[a] for _, a in scored], 'run')}, "
             "no seeds")
    if len(scored) == 1:
        alone = (f"{plural(len(seeds), 'seed')}" if seeds
                 else f"one {kind}, chosen from {plural(pools[winner], 'run')}, no seeds")
        return [f"- **{task}**: only {winner} has a finished run ({metric} {pct(top)} %, {basis}; rests on {alone})."]
    second, runner_up = scored[1]
    margin = 100 * (top - second)
    weakest = f"; the weakest, {scored[-1][1]}, reaches {pct(scored[-1][0])} %" if len(scored) > 2 else ""
    thin = not seeds and min(pools[a] for _, a in scored) < MIN_EVIDENCE
    tied = [arch for acc, arch in scored if 100 * (top - acc) < TIE_POINTS]
    if thin:  # one run a side: a standing, not a result
        lines.append(f"- **{task}**: {winner} has the highest {metric}, {pct(top)} % ({basis}), {margin:.2f} points "
                     f"over {runner_up}{weakest}; not called a win: {rests}, and each architecture needs "
                     f"{MIN_EVIDENCE} runs.")
    elif len(tied) > 1:
        lines.append(f"- **{task}**: {', '.join(tied)} tie within {TIE_POINTS:g} points at {pct(top)} % {metric} "
                     f"({basis}){weakest} ({rests}).")
    else:
        noise = ""
        if len(seeds) >= 2 and len(numbers[runner_up][1]) >= 2:
            same = within_noise(seeds, numbers[runner_up][1])[0]
            noise = (", within the seeds' noise (95 % Welch t)" if same else ", beyond the seeds' noise (95 % "
                     "Welch t)")
        lines.append(f"- **{task}**: {winner} wins with {pct(top)} % {metric} ({basis}), {margin:.2f} points ahead "
                     f"of {runner_up} ({pct(second)} %){noise}{weakest} ({rests}).")
    return lines


def _compare(a: Side, b: Side) -> tuple[float, str] | None:
    """(b − a in points, 0 where the seeds cannot tell them apart; the difference and what it rests on), or None
    where a side has fewer than MIN_EVIDENCE runs."""
    if a.best is None or b.best is None:
        return None
    if len(a.seeds) >= MIN_EVIDENCE and len(b.seeds) >= MIN_EVIDENCE:
        diff = 100 * (mean_std(b.seeds)[0] - mean_std(a.seeds)[0])
        noise = ", within the seeds' noise" if within_noise(a.seeds, b.seeds)[0] else ""
        return (0.0 if noise else diff), f"{diff:+.2f}: {len(a.seeds)} vs {len(b.seeds)} seeds{noise}"
    if a.runs >= MIN_EVIDENCE and b.runs >= MIN_EVIDENCE:
        diff = 100 * (b.best.metric(Metric.TEST_ACC) - a.best.metric(Metric.TEST_ACC))
        return diff, f"{diff:+.2f}: best of {a.runs} vs best of {b.runs} runs"
    return None


def _pair_line(task: str, what: str, pairs: list[tuple[Side, Side]]) -> list[str]:
    """One finding comparing pairs of sides on test accuracy, stated only from pairs with enough runs a side."""
    diffs, thin = [], []
    for a, b in pairs:
        if a.best is None or b.best is None:
            continue
        compared = _compare(a, b)
        if compared is None:
            thin.append(f"{a.label} → {b.label} ({a.runs} vs {b.runs})")
        else:
            diffs.append((a.label, b.label, *compared))
    if not diffs and not thin:
        return []
    need = f"each side needs {MIN_EVIDENCE} runs (seeds or completed trials)"
    if not diffs:
        return [f"- **{task}**: {what}: not enough runs to state an effect ({need}; had {', '.join(thin)})."]
    helped = [d for d in diffs if d[2] >= TIE_POINTS]
    hurt = [d for d in diffs if d[2] <= -TIE_POINTS]
    detail = ", ".join(f"{x} → {y} {rests}" for x, y, _, rests in diffs)
    if len(helped) == len(diffs):
        verdict = "helped"
    elif len(hurt) == len(diffs):
        verdict = "hurt"
    elif not helped and not hurt:
        verdict = f"made no difference beyond {TIE_POINTS:g} points"
    else:
        verdict = f"helped in {len(helped)} of {len(diffs)} cases and hurt in {len(hurt)}"
    left_out = f"; left out, too few runs ({need}): {', '.join(thin)}" if thin else ""
    return [f"- **{task}**: {what} {verdict} (points: {detail}{left_out})."]


def _notebook_line(task: str, numbers: dict[str, tuple[float, list[float]]], kind: str) -> list[str]:
    refs = [(arch, NOTEBOOK_REFERENCE.get(task, {}).get(arch), acc) for arch, (acc, _) in numbers.items()]
    refs = [(arch, ref, acc) for arch, ref, acc in refs if ref is not None]
    if not refs:
        return []
    beaten = [arch for arch, ref, acc in refs if 100 * acc > ref]
    top, ref, acc = max(refs, key=lambda item: (100 * item[2] - item[1], item[0]))
    closest = "largest gain" if beaten else "closest"
    basis = (f"seed means, {_evidence([len(numbers[a][1]) for a, _, _ in refs], 'seed')}" if numbers[top][1]
             else f"one {kind} each")
    return [f"- **{task}**: beats the notebook for {len(beaten)} of {plural(len(refs), 'architecture')} it "
            f"reported ({basis}); {closest}: {top} {100 * acc - ref:+.2f} points ({pct(acc)} % "
            f"against {ref:.2f} %)."]


def _first_length_metric(task: str) -> str:
    record = task_record(task)
    return record.metric_label(record.per_length[0])


def _length_line(snap: Snapshot, task: str, bests: dict[str, RunRecord | None]) -> list[str]:
    """How many architectures keep their accuracy at the longest length tested, counting only those tested there."""
    at = {arch: longest_length(snap, run) for arch, run in bests.items() if run is not None}
    at = {arch: value for arch, value in at.items() if value is not None}
    if not at:
        return []
    length = max(value[0] for value in at.values())
    tested = [arch for arch, value in at.items() if value[0] == length]
    shorter = [f"{arch} (to {at[arch][0]})" for arch in at if arch not in tested]
    perfect = [arch for arch in tested if at[arch][1] >= 0.999]
    best_arch = max(tested, key=lambda arch: at[arch][1])
    rest = f"; not counted, tested only to shorter lengths: {', '.join(shorter)}" if shorter else ""
    return [f"- **{task}**: at length {length}, {len(perfect)} of the {plural(len(tested), 'architecture')} "
            f"tested there keep ≥ 99.9 % {_first_length_metric(task)}; best {best_arch} at {pct(at[best_arch][1])} % "
            f"(one "
            f"{run_kind(*bests.values())} each{rest})."]


def findings(snap: Snapshot, figures: Figures) -> str:
    """Findings worded from the numbers: best runs chosen by validation and compared on test; the winner and the
    notebook comparison by seed means where every architecture of the task has seeds."""
    lines: list[str] = []
    for task in reported_tasks(snap):
        archs = reported_archs(snap, task)
        numbers = headline(snap, task, archs)
        bests = {arch: best_run(snap, task, arch) for arch in archs}
        kind = run_kind(*bests.values())
        sides = {arch: _side(snap, arch, candidates(snap, task, arch)) for arch in archs}
        lines += _winner_line(task, numbers, {arch: sides[arch].runs for arch in archs}, kind)
        pairs = [(sides[uni], sides[f"bi{uni}"]) for uni in ("rnn", "lstm", "gru") if uni in sides
                 and f"bi{uni}" in sides]
        lines += _pair_line(task, "bidirectionality", pairs)
        depth = []
        for arch in archs:
            pool = candidates(snap, task, arch)
            shallow = _side(snap, f"{arch} 1 layer", [r for r in pool if r.param("num_layers") == "1"])
            deep = _side(snap, "deeper", [r for r in pool if r.param("num_layers") not in ("", "1")])
            if shallow.best and deep.best:
                deep.label = f"{deep.best.param('num_layers')} layers (best deeper)"
                depth.append((shallow, deep))
        lines += _pair_line(task, "depth (best 1-layer vs best deeper run)", depth)
        losses = [(_side(snap, f"{arch} ce", [r for r in candidates(snap, task, arch) if r.param("loss") == "ce"]),
                   _side(snap, "mse", [r for r in candidates(snap, task, arch) if r.param("loss") == "mse"]))
                  for arch in archs]
        lines += _pair_line(task, "MSE instead of cross-entropy", losses)
        lines += _notebook_line(task, numbers, kind)
        if task_record(task).per_length:
            lines += _length_line(snap, task, bests)
    if not lines:
        return ""
    return "\n".join(["## Findings", "", *lines, ""])
