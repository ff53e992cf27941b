"""`jumplora data`: show what the data layer makes of an order, before any training.

For each task of the order it prints the group, label words, the train / validation / test counts
after the protocol (or the given train / dev / test split), the records dropped for labels outside
the label set, the test records kept with such labels (counted as wrong), and the files read, so a
user can check a data folder and the protocol knobs in seconds. The defaults are those of `jumplora
run`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from jumplora.data.orders import ORDERS, benchmark_of, resolve_order
from jumplora.data.protocol import SPLIT_MODES, UNLABELLED_MODES, DataProtocol, load_tasks
from jumplora.data.tasklist import is_task_list
from jumplora.data.sources import DATA_ENV, resolve_data_dir


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "data",
        help="show the tasks of an order after the sampling protocol",
        description="Load every task of an order with the paper's sampling protocol and print a "
        "table of label words, split sizes, dropped records and source files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--order", default="4",
                        help="order number 1-6, comma-separated task names, or a file of task names")
    parser.add_argument("--data-dir", default=None,
                        help=f"benchmark folder (<group>/<task>/{{train,test,labels}}.json); "
                        f"None: ${DATA_ENV}")
    parser.add_argument("--seed", type=int, default=42, help="sampling seed")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="cap on training examples per class after the protocol (None: no cap)")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="cap on validation examples per class after the protocol (None: no cap)")
    parser.add_argument("--test-per-class", type=int, default=500,
                        help="cap on test examples per class")
    parser.add_argument("--split", choices=SPLIT_MODES, default="auto",
                        help="auto: a task folder with dev.json is used as given (train/dev/test); "
                        "protocol: always resample train+validation from train.json")
    parser.add_argument("--unlabelled-test", choices=UNLABELLED_MODES, default="count-wrong",
                        help="test records with labels outside the label set: keep them (counted "
                        "as wrong) or drop them")
    parser.add_argument("--max-input-tokens", type=int, default=None,
                        help="prompt length cap in tokens (None: no cap); recorded in the protocol line, "
                        "applied when a run encodes prompts")
    parser.set_defaults(func=run_data)
    return parser


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _relative(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root) if Path(path).is_relative_to(root) else path
    except ValueError:
        return path


def run_data(args: argparse.Namespace) -> int:
    tasks = resolve_order(args.order)
    listed = is_task_list(args.order)  # a task list reads its own files, relative to its folder
    root = Path(args.order).expanduser().resolve().parent if listed else resolve_data_dir(args.data_dir)
    protocol = DataProtocol(
        seed=args.seed,
        test_per_class=args.test_per_class,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        max_input_tokens=args.max_input_tokens,
        split=args.split,
        unlabelled_test=args.unlabelled_test,
    )
    order = str(args.order).strip()
    title = f"order {order}"
    if order.isdigit() and int(order) in ORDERS:
        title += f" ({benchmark_of(int(order))} benchmark)"
    print(f"{title}: {len(tasks)} tasks from {root}")
    print("protocol: " + ", ".join(f"{k}={v}" for k, v in protocol.to_dict().items()))

    rows = [["#", "task", "group", "train", "val", "test", "dropped", "unlabelled", "sources",
             "labels"]]
    totals = [0, 0, 0]
    loaded = load_tasks(args.order, args.data_dir, protocol)
    for position, name in enumerate(tasks, 1):
        data = loaded[name]
        counts = data.counts()
        totals = [t + c for t, c in zip(totals, counts.values())]
        dropped = ", ".join(f"{split} {n}" for split, n in data.dropped.items() if n) or "0"
        files = dict.fromkeys(_relative(p, root) for p in data.sources.values())
        rows.append([
            str(position), data.name, data.group,
            str(counts["train"]), str(counts["validation"]), str(counts["test"]),
            dropped, str(data.unlabelled), " ".join(files), ", ".join(data.labels),
        ])
    rows.append(["", "total", "", *(str(t) for t in totals), "", "", "", ""])
    for line in _table(rows, right={0, 3, 4, 5, 7}):
        print(line)
    return 0
