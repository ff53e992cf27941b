"""The paper's tables from many run directories: Tables 1-3 (§4.5, §4.6) and the §5 numbers.

Runs are grouped by method (and variant, see `jumplora.analysis.groups`) and order; a group's
value is the mean over its seeds ± the sample standard deviation (ddof = 1; no ± with one seed).
A benchmark column (SC: orders 1-3, LS: orders 4-6) is the mean over the orders present of the
per-order means, without ±, marked * when fewer than three orders are present.

OA, BWT and FWT come from each run's metrics.json (computed by `jumplora.metrics`); unfinished runs
are left out of them. FWT has two definitions, both shown: §4.2's (FWT: a_{i,i} − a_{0,i}) and the
authors' script's, which the paper's Table 2 reports (FWT_final: a_{T,i} − a_{0,i} = OA − mean a_{0,i}).
A metrics.json written before FWT_final existed gets it from the run's OA and the single run its
fwt_reference names (`Run.derived_fwt_final`): no re-running.

Sparsity and overlap are computed from the stored updates (see `jumplora.analysis.stats`),
unfinished runs included (over the tasks they finished).

A run that searched ELLA's λ (`--ella-lambda search`) adds a table of the λ kept per task and every
candidate's validation score, from its lambda_search/ records.

Given folders written by `jumplora forget` (`Removal`s), the report adds the leave-one-task-out
table: how each task's accuracy moves when one task's update is subtracted from the final model,
JumpLoRA beside its base method.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from jumplora.analysis import paper
from jumplora.analysis.bootstrap import final_correct, paired_oa_bootstrap
from jumplora.analysis.groups import (
    ABLATION_KEYS, Group, Stat, ablation_update, group_runs, method_sort_key, order_label, order_sort_key,
    row_label, varying_keys,
)
from jumplora.analysis.paper import BENCHMARKS, benchmark_of
from jumplora.analysis.stats import run_stats
from jumplora.method_names import parse_method
from jumplora.rundir import Removal, Run, RunWarning, atomic_write_text
from jumplora.rundir.layout import LOSSES, METRICS, TASKS  # named in captions only: runs are read by load_run

DASH = "—"
STD_NOTE = (
    "Values are the mean over seeds ± the sample standard deviation (ddof = 1); "
    "a single seed shows no ±."
)
PAPER_NOTE = f"'paper': the value reported in the paper ({paper.PAPER}) for the same method and order."
FWT_NOTE = (
    "FWT (§4.2): mean over tasks of a_{i,i} − a_{0,i} (just after learning task i, minus task i trained alone), "
    "the paper's formula; FWT (script): mean of a_{T,i} − a_{0,i} = OA − mean a_{0,i} (after the last task), "
    "what the authors' evaluation/compute_bwt_fwt.py computes and the paper's Table 2 reports (there "
    "OA − FWT is one constant per benchmark for every method). Both use the single run's accuracies."
)
FWT_KEYS = ("FWT", "FWT_final")
METRIC_KEYS = ("OA", "BWT") + FWT_KEYS
BENCH_NOTE = (
    "SC / LS: mean over the orders present (1-3 / 4-6) of the per-order means, without ±; "
    "* marks a mean over fewer than three orders."
)


@dataclass
class Table:
    """One table, as Markdown cells (formatted) and as CSV cells (numbers)."""

    name: str
    title: str
    caption: str
    columns: list[str]
    rows: list[list[str]]
    csv_columns: list[str]
    csv_rows: list[list]
    empty: str = "(no runs for this table)"

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.caption, ""]
        if not self.rows:
            return "\n".join(lines + [self.empty, ""])
        escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
        lines.append("| " + " | ".join(map(escape, self.columns)) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(map(escape, row)) + " |" for row in self.rows]
        return "\n".join(lines + [""])

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.csv_columns)
        for row in self.csv_rows:
            writer.writerow(["" if _missing(v) else (round(v, 6) if isinstance(v, float) else v) for v in row])
        return buffer.getvalue()


@dataclass
class Report:
    runs: list[Run]
    groups: list[Group]
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = ["# JumpLoRA report", ""] + self.notes + [""]
        return "\n".join(parts) + "\n" + "\n".join(t.markdown() for t in self.tables)


# -- formatting -------------------------------------------------------------------------------
def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value, digits: int = 2, scale: float = 1.0) -> str:
    return DASH if _missing(value) else f"{value * scale:.{digits}f}"


def fmt_duration(seconds) -> str:
    if _missing(seconds):
        return DASH
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {secs:02d} s"


def fmt_stat(stat: Stat, digits: int = 2, scale: float = 1.0) -> str:
    if stat.n == 0:
        return DASH
    text = f"{stat.mean * scale:.{digits}f}"
    if stat.n >= 2 and not math.isnan(stat.std):
        text += f" ± {stat.std * scale:.{digits}f}"
    return text


def fmt_paper(value, digits: int = 2, scale: float = 1.0) -> str:
    return DASH if value is None else f"{value * scale:.{digits}f}"


def _order_column(order) -> str:
    return f"Order {order}" if isinstance(order, int) else f"order {order}"


def _order_slug(order) -> str:
    return f"order_{order}" if isinstance(order, int) else f"order_{str(order).replace(',', '_')}"


# -- per-group values ---------------------------------------------------------------------------
def metric_stat(group: Group, key: str) -> Stat:
    """OA/BWT/FWT over the group's finished runs."""
    return Stat.of(run.metric(key) for run in group.runs if run.finished)


def _bench_mean(per_order: dict, bench: str) -> tuple[float, int]:
    """Mean over a benchmark's orders of the finite per-order means, and how many orders counted."""
    values = [per_order[o] for o in BENCHMARKS[bench] if o in per_order and not _missing(per_order[o])]
    return (sum(values) / len(values), len(values)) if values else (math.nan, 0)


def _bench_cell(mean: float, count: int) -> str:
    if count == 0:
        return DASH
    return fmt(mean) + ("*" if count < 3 else "")


def _present(orders, bench: str) -> bool:
    return any(o in BENCHMARKS[bench] for o in orders)


# -- tables -----------------------------------------------------------------------------------
def table_runs(runs: list[Run]) -> Table:
    columns = ["Run", "Method", "Order", "Seed", "Tasks done", "OA", "BWT", "FWT (§4.2)", "FWT (script)",
               "Wall time", "Peak memory"]
    rows, csv_rows = [], []
    ordered = sorted(runs, key=lambda r: (method_sort_key(r.method_name, r.label), order_sort_key(r.order),
                                          str(r.seed), str(r.path)))
    for run in ordered:
        done = f"{run.completed}/{len(run.stages)}" + ("" if run.finished else " (unfinished)")
        values = [run.metric(k) if run.finished else math.nan for k in METRIC_KEYS]
        cost = [run.metric("wall_time_s"), run.metric("peak_memory_mb")]
        rows.append([str(run.path), run.label, str(run.order), str(run.seed), done] + [fmt(v) for v in values]
                    + [fmt_duration(cost[0]), DASH if _missing(cost[1]) else f"{cost[1] / 1024:.1f} GiB"])
        csv_rows.append([str(run.path), run.method, run.label, run.order, run.seed, run.completed, len(run.stages),
                         run.finished] + values + cost)
    caption = (
        "One row per run directory; metrics of unfinished runs are not used. Wall time: training, merging and "
        "evaluating every task (model loading excluded); peak memory: the run's peak resident set size (on a "
        f"GPU, its peak allocated device memory), as {METRICS} records them. {FWT_NOTE}"
    )
    return Table(
        "runs", "Runs", caption, columns, rows,
        ["path", "method", "label", "order", "seed", "completed", "tasks", "finished", "OA", "BWT", "FWT",
         "FWT_final", "wall_time_s", "peak_memory_mb"], csv_rows,
    )


def table_per_order(groups: list[Group]) -> Table:
    columns = ["Method", "Order", "Seeds", "OA", "BWT", "FWT (§4.2)", "FWT (script)"]
    rows, csv_rows = [], []
    for group in groups:
        stats = [metric_stat(group, key) for key in METRIC_KEYS]
        seeds = [str(r.seed) for r in group.runs if r.finished]
        rows.append([group.label, order_label(group.order), ", ".join(seeds) or DASH] + [fmt_stat(s) for s in stats])
        csv_row = [group.label, group.order, stats[0].n]
        for s in stats:
            csv_row += [s.mean, s.std]
        csv_rows.append(csv_row)
    csv_columns = ["method", "order", "n"] + [f"{k}_{p}" for k in METRIC_KEYS for p in ("mean", "std")]
    return Table(
        "per_order", "Runs per method and order",
        f"Finished runs only. {STD_NOTE} {FWT_NOTE}", columns, rows, csv_columns, csv_rows,
    )


def _rows_by_label(groups: list[Group]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for group in groups:
        rows.setdefault(group.label, {})[group.order] = group
    return dict(sorted(rows.items(), key=lambda item: method_sort_key(next(iter(item[1].values())).method, item[0])))


def table1(groups: list[Group]) -> Table:
    orders = sorted({g.order for g in groups if metric_stat(g, "OA").n}, key=order_sort_key)
    columns, csv_columns = ["Method"], ["method"]
    for order in orders:
        columns.append(_order_column(order))
        csv_columns += [f"{_order_slug(order)}_{p}" for p in ("mean", "std", "n")]
        if benchmark_of(order):
            columns.append("paper")
            csv_columns.append(f"{_order_slug(order)}_paper")
    benches = [b for b in BENCHMARKS if _present(orders, b)]
    for bench in benches:
        columns += [f"{bench} OA", "paper"]
        csv_columns += [f"{bench}_mean", f"{bench}_orders", f"{bench}_paper"]
    rows, csv_rows = [], []
    for label, by_order in _rows_by_label(groups).items():
        method = next(iter(by_order.values())).method.label  # the paper's values are by its labels
        row, csv_row, means = [label], [label], {}
        for order in orders:
            stat = metric_stat(by_order[order], "OA") if order in by_order else Stat(math.nan, math.nan, 0)
            means[order] = stat.mean
            row.append(fmt_stat(stat))
            csv_row += [stat.mean, stat.std, stat.n]
            if benchmark_of(order):
                row.append(fmt_paper(paper.table1(method, order)))
                csv_row.append(paper.table1(method, order))
        for bench in benches:
            mean, count = _bench_mean(means, bench)
            row += [_bench_cell(mean, count), fmt_paper(paper.table1(method, bench))]
            csv_row += [mean, count, paper.table1(method, bench)]
        if any(not _missing(m) for m in means.values()):
            rows.append(row)
            csv_rows.append(csv_row)
    caption = f"Overall accuracy (OA, %) after the last task, as in Table 1. {STD_NOTE} {BENCH_NOTE} {PAPER_NOTE}"
    return Table("table1_oa", "Table 1: overall accuracy (OA)", caption, columns, rows, csv_columns, csv_rows)


def table2(groups: list[Group]) -> Table:
    orders = {g.order for g in groups}
    benches = [b for b in BENCHMARKS if _present(orders, b)]
    columns, csv_columns = ["Method"], ["method"]
    for bench in benches:
        # The paper's FWT follows the authors' script, so its value sits next to FWT_final; §4.2's FWT
        # has no paper counterpart (CSV: <bench>_FWT_paper kept as it was, <bench>_FWT_final_paper the same).
        columns += [f"{bench} BWT", "paper", f"{bench} FWT (§4.2)", f"{bench} FWT (authors' script, as Table 2)",
                    "paper"]
        csv_columns += [f"{bench}_{key}_{p}" for key in ("BWT", "FWT") for p in ("mean", "orders", "paper")]
        csv_columns += [f"{bench}_FWT_final_{p}" for p in ("mean", "orders", "paper")]
    rows, csv_rows = [], []
    if benches:
        for label, by_order in _rows_by_label(groups).items():
            method = next(iter(by_order.values())).method.label
            row, csv_row, seen = [label], [label], False
            for bench in benches:
                cells = {}
                for key in ("BWT",) + FWT_KEYS:
                    per_order = {o: metric_stat(g, key).mean for o, g in by_order.items()}
                    mean, count = _bench_mean(per_order, bench)
                    seen = seen or count > 0
                    cells[key] = (mean, count, paper.table2(method, bench, "BWT" if key == "BWT" else "FWT"))
                row += [_bench_cell(*cells["BWT"][:2]), fmt_paper(cells["BWT"][2], 1),
                        _bench_cell(*cells["FWT"][:2]), _bench_cell(*cells["FWT_final"][:2]),
                        fmt_paper(cells["FWT_final"][2], 1)]
                for key in ("BWT",) + FWT_KEYS:
                    csv_row += list(cells[key])
            if seen:
                rows.append(row)
                csv_rows.append(csv_row)
    caption = (
        "Backward and forward transfer (percentage points), as in Table 2: per benchmark, the mean over "
        f"its orders of the per-order means over seeds. {BENCH_NOTE} {FWT_NOTE} The paper's FWT is compared "
        "with the script's definition, the one it was computed with. FWT is missing where a run has no "
        f"single-task accuracies. Orders outside 1-6 are in 'Runs per method and order'. {PAPER_NOTE}"
    )
    return Table("table2_bwt_fwt", "Table 2: backward and forward transfer", caption, columns, rows,
                 csv_columns, csv_rows, "(no finished run of orders 1-6)")


def table3(runs: list[Run]) -> Table:
    jump = [r for r in runs if r.gated and r.finished]
    keys = varying_keys(jump)
    per_order: dict[tuple, dict] = {}
    methods: dict[tuple, object] = {}
    for run in jump:
        key = (row_label(run, keys.get(run.method_name, []), exclude=ABLATION_KEYS), run.threshold_mode,
               ablation_update(run))
        per_order.setdefault(key, {}).setdefault(run.order, []).append(run.metric("OA"))
        methods[key] = run.method_name
    orders = {o for by_order in per_order.values() for o in by_order}
    benches = [b for b in BENCHMARKS if _present(orders, b)]
    columns = ["Method", "Threshold", "Update"]
    csv_columns = ["method", "threshold", "update"]
    for bench in benches:
        columns += [f"{bench} OA", "paper"]
        csv_columns += [f"{bench}_mean", f"{bench}_orders", f"{bench}_paper"]
    rows, csv_rows = [], []
    ordering = lambda k: (method_sort_key(methods[k], k[0]), str(k[1]), str(k[2]))  # noqa: E731
    for key in sorted(per_order, key=ordering):
        label, threshold, update = key
        means = {o: Stat.of(values).mean for o, values in per_order[key].items()}
        row = [label, threshold or DASH, {"interp": "interp."}.get(update, update) or DASH]
        csv_row = [label, threshold, update]
        seen = False
        for bench in benches:
            mean, count = _bench_mean(means, bench)
            seen = seen or count > 0
            value = paper.table3(methods[key].label, threshold, update, bench)
            row += [_bench_cell(mean, count), fmt_paper(value)]
            csv_row += [mean, count, value]
        if seen:
            rows.append(row)
            csv_rows.append(csv_row)
    caption = (
        "Ablation (Table 3): OA (%) of the JumpLoRA variants by threshold (global: one τ; local: one τ "
        "per transformer block) and, with ELLA, by what the penalty is computed on (sparse: ΔW_jump; "
        f"interp.: ΔW_interp). {BENCH_NOTE} {PAPER_NOTE}"
    )
    return Table("table3_ablation", "Table 3: ablation", caption, columns, rows, csv_columns, csv_rows,
                 "(no finished JumpLoRA run of orders 1-6)")


def table_sparsity(groups: list[Group], layer) -> Table:
    columns = ["Method", "Order", "Runs", "Sparsity (layer)", "paper", "Jaccard (layer)", "paper",
               "Jaccard at chance", "Sparsity (all matrices)"]
    csv_columns = ["method", "order", "n", "sparsity_layer_mean", "sparsity_layer_std", "sparsity_layer_paper",
                   "jaccard_layer_mean", "jaccard_layer_std", "jaccard_layer_paper", "jaccard_chance_mean",
                   "sparsity_all_mean", "sparsity_all_std", "layer"]
    rows, csv_rows, descriptions = [], [], []
    for group in groups:
        stats = [run_stats(r, layer) for r in group.runs if r.has_updates()]
        if not stats:
            continue
        layers = sorted({s.layer.description for s in stats if s.layer is not None})
        descriptions += [d for d in layers if d not in descriptions]
        s_layer = Stat.of(s.mean_sparsity_layer for s in stats)
        jac = Stat.of(s.mean_jaccard for s in stats)
        s_all = Stat.of(s.mean_sparsity_all for s in stats)
        chance = Stat.of(s.mean_jaccard_chance for s in stats)
        p_s = paper.section5(group.method.label, group.order, "sparsity")
        p_j = paper.section5(group.method.label, group.order, "jaccard")
        rows.append([
            group.label, order_label(group.order), str(len(stats)),
            fmt_stat(s_layer, 1, 100.0) + (" %" if s_layer.n else ""), fmt_paper(p_s, 1, 100.0) + (" %" if p_s else ""),
            fmt_stat(jac, 3), fmt_paper(p_j, 3), fmt(chance.mean, 3),
            fmt_stat(s_all, 1, 100.0) + (" %" if s_all.n else ""),
        ])
        csv_rows.append([group.label, group.order, len(stats), s_layer.mean, s_layer.std, p_s, jac.mean, jac.std, p_j,
                         chance.mean, s_all.mean, s_all.std, "; ".join(layers)])
    layer_words = "; ".join(descriptions) if descriptions else str(layer)
    caption = (
        "Sparsity (§5): fraction of the entries of the merged ΔW_jump that are zero, 1 − nnz/numel, pooled "
        "over the layer's matrices and averaged over tasks. Jaccard: |S_t ∩ S_k| / |S_t ∪ S_k| of the binary "
        "supports of task t and each earlier task k (0/0 counted as 0), averaged over the layer's matrices, "
        "the earlier tasks, then tasks 2..T. Jaccard at chance: the same mean for independent random supports "
        "of the same densities, pq / (p + q − pq): an overlap below it means tasks avoid each other's entries. "
        f"Layer: {layer_words}. Unfinished runs count over the tasks they "
        f"finished. {STD_NOTE} The paper reports these for Long Order 4, middle layer ({paper.PAPER}, §5)."
    )
    return Table("sparsity_overlap", "Sparsity and support overlap (§5)", caption, columns, rows, csv_columns,
                 csv_rows, "(no run has update files)")


def _base_group(jump: Group, groups: list[Group]) -> Group | None:
    """The group a JumpLoRA group is compared with: its base method (`MethodName.base`), same order.

    Where the base method has several variants on that order, the one with the same variant
    settings (the label after the method's) is taken; otherwise the comparison is ambiguous and skipped.
    """
    candidates = [g for g in groups if g.method == jump.method.base and g.order == jump.order]
    if len(candidates) == 1:
        return candidates[0]
    variant = jump.label[len(jump.method.label):]
    named = [g for g in candidates if g.label == jump.method.base.label + variant]
    return named[0] if len(named) == 1 else None


def _difference(run: Run, base: Run, key: str) -> float | None:
    value, base_value = run.metric(key), base.metric(key)
    return None if _missing(value) or _missing(base_value) else value - base_value


def _oa_interval(pairs) -> tuple[float, float] | None:
    """The paired test-set bootstrap's 95 % interval of Δ OA (analysis/bootstrap.py), if every run kept
    its per-example results."""
    correct = [(final_correct(j), final_correct(b)) for j, b in pairs]
    if any(j is None or b is None for j, b in correct):
        return None
    try:
        _, lower, upper = paired_oa_bootstrap(correct)
    except ValueError as error:
        warnings.warn(f"paired bootstrap left out: {error}", RunWarning, stacklevel=2)
        return None
    return lower, upper


def table_paired(groups: list[Group]) -> Table:
    columns = ["Comparison", "Order", "Seeds", "Δ OA", "Δ OA 95 % CI (test bootstrap)", "Δ BWT", "Δ FWT (§4.2)",
               "Δ FWT (script)", "OA higher in"]
    csv_columns = ["jumplora", "base", "order", "n"] + [f"delta_{k}_{p}" for k in METRIC_KEYS
                                                        for p in ("mean", "std")] + ["oa_wins", "delta_OA_ci_low",
                                                                                     "delta_OA_ci_high"]
    rows, csv_rows = [], []
    for jump in groups:
        if not jump.method.gated:
            continue
        base = _base_group(jump, groups)
        if base is None:
            continue
        base_by_seed = {r.seed: r for r in base.runs if r.finished and r.seed is not None}
        pairs = [(r, base_by_seed[r.seed]) for r in jump.runs if r.finished and r.seed in base_by_seed]
        if not pairs:
            continue
        pairs.sort(key=lambda pair: str(pair[0].seed))
        differences = {key: [_difference(j, b, key) for j, b in pairs] for key in METRIC_KEYS}
        stats = {key: Stat.of(values) for key, values in differences.items()}
        wins = sum(d is not None and d > 0 for d in differences["OA"])
        interval = _oa_interval(pairs)
        shown = [fmt_stat(stats[k], 2) for k in METRIC_KEYS]
        shown.insert(1, f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "n/a")
        rows.append([f"{jump.label} − {base.label}", order_label(jump.order),
                     ", ".join(str(j.seed) for j, _ in pairs)] + shown + [f"{wins} of {len(pairs)} seeds"])
        csv_row = [jump.label, base.label, jump.order, len(pairs)]
        for key in METRIC_KEYS:
            csv_row += [stats[key].mean, stats[key].std]
        csv_rows.append(csv_row + [wins] + (list(interval) if interval else [None, None]))
    caption = (
        "Each JumpLoRA variant minus its base method, run by run on the same seed, then the mean ± sample "
        "standard deviation (ddof = 1) of these differences. Runs of one seed train and test on the same "
        "examples (the data sample depends on the seed only), so a paired difference removes the part of the "
        "seed-to-seed spread that comes from which examples were drawn, which moves both runs alike. Finished "
        "runs whose seed both methods have only. Where both runs of a seed use the same single run, Δ FWT (script) "
        "equals Δ OA. The 95 % interval of Δ OA resamples the test examples of every task, the same ones for both "
        "runs of a seed (a paired bootstrap, 10,000 replicates), and averages the seeds replicate by replicate: it "
        "is the test-set sampling part of the uncertainty (n/a for runs made before per-example results were kept)."
    )
    return Table("paired", "JumpLoRA against its base method, seed by seed", caption, columns, rows,
                 csv_columns, csv_rows, "(no JumpLoRA run with a base-method run of the same order and seed)")


def threshold_movement(run: Run) -> list[tuple[str, float, float]]:
    """Per stage of a JumpLoRA run: (stage, relative change of τ from S_start to the merge, sparsity).

    τ at S_start is the logged value at the stage's S_start step (after that step's update; a stage
    too short to reach S_start had τ set after its last step, so it did not move), τ at the merge the
    task record's; with several groups (local thresholds) the changes are averaged.
    """
    by_stage = run.losses()
    out = []
    for stage in run.stages[: run.completed]:
        records = by_stage.get(stage.name, [])
        if not records or stage.record is None:
            continue
        final = stage.record.thresholds
        reached = stage.s_start_step < len(records)
        start = records[stage.s_start_step].get("thresholds", {}) if reached else final
        changes = [final[g] / value - 1 for g, value in start.items() if value and g in final]
        if changes:
            out.append((stage.name, sum(changes) / len(changes), stage.record.sparsity))
    return out


def table_thresholds(runs: list[Run]) -> Table:
    columns = ["Run", "Tasks", "τ change, S_start → merge (per task)", "Sparsity at merge (per task)"]
    rows, csv_rows = [], []
    for run in runs:
        if not run.gated:
            continue
        movement = threshold_movement(run)
        if not movement:
            continue
        rows.append([str(run.path), ", ".join(t for t, _, _ in movement),
                     ", ".join(f"{100 * c:+.2f} %" for _, c, _ in movement),
                     ", ".join(f"{100 * s:.1f} %" for _, _, s in movement)])
        csv_rows += [[str(run.path), run.label, task, change, sparsity] for task, change, sparsity in movement]
    caption = (
        "How far the learned threshold moved: τ at the merge over τ one step after its initialisation at "
        "S_start, minus 1 (the mean over groups for local thresholds), and the task's sparsity over all "
        f"adapted matrices at the merge. Read from {LOSSES} and {TASKS}/."
    )
    return Table("thresholds", "Threshold movement during training", caption, columns, rows,
                 ["path", "method", "task", "threshold_change", "sparsity"], csv_rows, "(no JumpLoRA run)")


def table_lambda_search(runs: list[Run]) -> Table:
    """ELLA's λ per task as `--ella-lambda search` chose it, with every candidate's validation score."""
    columns = ["Run", "Task", "λ kept", "Mean validation accuracy (%) per λ tried", "Complete"]
    rows, csv_rows = [], []
    for run in runs:
        for stage, record in run.lambda_searches():
            kept = record.get("best")
            scores = [(c["lambda"], c["mean_validation_accuracy"]) for c in record.get("candidates", [])]
            cells = [f"**{_lambda_text(v)}: {a:.2f}**" if v == kept else f"{_lambda_text(v)}: {a:.2f}"
                     for v, a in scores]
            rows.append([str(run.path), stage, _lambda_text(kept), ", ".join(cells),
                         "yes" if record.get("complete") else f"{len(scores)} of {len(record.get('grid', []))}"])
            for candidate in record.get("candidates", []):
                for task, accuracy in candidate["validation_accuracy"].items():
                    csv_rows.append([str(run.path), run.label, stage, candidate["lambda"], candidate["lambda"] == kept,
                                     candidate["mean_validation_accuracy"], task, accuracy])
    caption = (
        "`--ella-lambda search` (Appendix A.2): at each task from the second on, one training per λ of the grid; "
        "the λ kept (bold) maximises the mean validation accuracy over the tasks so far, past and current "
        "(ties: the earlier λ). Read from lambda_search/; the CSV has each task's validation accuracy."
    )
    return Table("lambda_search", "ELLA's λ chosen on validation data", caption, columns, rows,
                 ["path", "method", "stage", "lambda", "kept", "mean_validation_accuracy", "task",
                  "validation_accuracy"], csv_rows, "(no run searched λ)")


def _lambda_text(value) -> str:
    if value is None:
        return DASH
    value = float(value)
    return f"{value:g}" if value < 1e4 else f"{value:.0e}".replace("e+0", "e").replace("e+", "e")


def _mean(values) -> float:
    values = [v for v in values if not _missing(v)]
    return sum(values) / len(values) if values else math.nan


def _removal_side(removals: list[Removal]) -> dict | None:
    """Over the seeds of one method, order and removed task: the removed task's mean change, the mean
    change of the other tasks (each seed's mean over them), and each other task's mean change."""
    if not removals:
        return None
    removed = removals[0].removed
    others = [t for t in removals[0].tasks if t != removed]
    return {
        "seeds": sorted((r.seed for r in removals), key=str),
        "removed": _mean(r.change(removed) for r in removals),
        "others": _mean(_mean(r.change(t) for t in others) for r in removals),
        "each": {t: _mean(r.change(t) for r in removals) for t in others},
    }


def table_leave_one_out(removals: list[Removal]) -> Table:
    """Leave-one-task-out: per order, removed task and strategy, JumpLoRA's changes beside its base's."""
    groups: dict[tuple, dict[bool, list[Removal]]] = {}
    for removal in removals:
        name = parse_method(removal.method)
        order = int(removal.order) if str(removal.order).isdigit() else removal.order
        groups.setdefault((order, removal.removed, name.strategy), {}).setdefault(name.gated, []).append(removal)
    columns = ["Order", "Task removed", "Methods", "Seeds", "Δ removed task", "mean Δ other tasks",
               "Δ each other task"]
    csv_columns = ["order", "removed", "method", "seeds", "delta_removed", "delta_others_mean", "task",
                   "delta_task"]
    rows, csv_rows = [], []
    for (order, removed, strategy), sides in sorted(groups.items(), key=lambda item: (
            order_sort_key(item[0][0]), str(item[0][1]), item[0][2])):
        gated, base = _removal_side(sides.get(True, [])), _removal_side(sides.get(False, []))
        labels = [parse_method(f"jumplora+{strategy}").label if gated else None,
                  parse_method(strategy).label if base else None]
        shown = [s for s in (gated, base) if s]

        def pair(key):
            return " | ".join(", ".join(map(str, s[key])) if key == "seeds" else fmt(s[key], 2) for s in shown)

        each = " | ".join(", ".join(f"{t} {v:+.2f}" for t, v in s["each"].items()) for s in shown)
        rows.append([order_label(order), removed, " | ".join(label for label in labels if label),
                     pair("seeds"), pair("removed"), pair("others"), each])
        for label, side in zip(labels, (gated, base)):
            if side:
                for task, value in side["each"].items():
                    csv_rows.append([order, removed, label, " ".join(map(str, side["seeds"])), side["removed"],
                                     side["others"], task, value])
    caption = (
        "Each task's accuracy on the final model with one task's stored update subtracted (`jumplora forget`), "
        "minus its accuracy on the final model, in points; the mean over the seeds present (the mean over the "
        "other tasks first, for 'mean Δ other tasks'). Where both are present, the JumpLoRA variant is left of "
        "the bar and its base method right of it. The removed task's own change is how much of it its update "
        "held; the other tasks' changes measure how much they leaned on that update: interference."
    )
    return Table("leave_one_out", "Leave-one-task-out", caption, columns, rows, csv_columns, csv_rows,
                 "(no folder written by `jumplora forget`)")


def build_report(runs: list[Run], layer="middle", removals: list[Removal] | None = None) -> Report:
    """All tables of the report for `runs` (see the module docstring); the λ search table when a run
    searched ELLA's λ, the leave-one-task-out table when `removals` (folders written by `jumplora
    forget`) are given."""
    groups = group_runs(runs)
    report = Report(runs, groups)
    unfinished = [r for r in runs if not r.finished]
    report.notes.append(f"{len(runs)} run(s) in {len(groups)} group(s) of method and order. {STD_NOTE}")
    if unfinished:
        report.notes.append(
            "Unfinished, left out of OA/BWT/FWT: "
            + ", ".join(f"{r.path} ({r.completed}/{len(r.stages)})" for r in unfinished)
            + "."
        )
    searches = table_lambda_search(runs)  # reads each run's lambda_search/ once
    report.tables = [table1(groups), table2(groups), table_paired(groups), table3(runs),
                     table_sparsity(groups, layer), table_thresholds(runs),
                     *([searches] if searches.rows else []),
                     *([table_leave_one_out(list(removals))] if removals else []),
                     table_per_order(groups), table_runs(runs)]
    return report


FORMATS = ("md", "csv")


def write_report(report: Report, out: Path, formats=FORMATS) -> list[Path]:
    """Write report.md and/or one CSV per table into `out` (which must exist), atomically."""
    written = []
    if "md" in formats:
        written.append(atomic_write_text(out / "report.md", report.markdown()))
    if "csv" in formats:
        for table in report.tables:
            written.append(atomic_write_text(out / f"{table.name}.csv", table.csv()))
    return written
