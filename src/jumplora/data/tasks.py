"""The 15 tasks of the Standard CL and Long Sequence benchmarks, as one registry.

The registry fixes what a task *is* (its canonical name, group, folder and expected label words) so
that orders, prompts and results all speak of tasks by the same names. When a task is read from a
data folder, the files on disk stay authoritative: `labels.json` gives the label words and
`instruction_config.json` the instruction; the values here are what those files are expected to
hold (a mismatch is warned about by the folder source, see `jumplora.data.sources`).
"""

from __future__ import annotations

from dataclasses import dataclass

from jumplora.errors import DataError

# One zero-shot instruction per group, as in the benchmark's instruction_config.json. COPA has none:
# its sentence already spells out the question.
GROUP_INSTRUCTIONS: dict[str, str | None] = {
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.\n",
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? '
    "Choose one from the option.\n",
    "SC": "What is the sentiment of the following paragraph? Choose one from the option.\n",
    "TC": "What is the topic of the following paragraph? Choose one from the option.\n",
    "BoolQA": "According to the following passage, is the question true or false? "
    "Choose one from the option.\n",
    "MultiRC": "According to the following passage and question, is the candidate answer true or "
    "false? Choose one from the option.\n",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense in both "
    "sentence? Choose one from the option.\n",
    "COPA": None,
}

STANDARD = "standard"
LONG = "long"


@dataclass(frozen=True)
class TaskSpec:
    """What the registry knows about one task.

    `name` is the canonical name (the folder name on disk); `paper_name` the name used in Table 6 of
    the paper; `aliases` every lower-case name `get_task` accepts besides the canonical one;
    `benchmarks` the benchmarks ("standard", "long") whose orders include the task.
    """

    name: str
    group: str
    folder: str
    labels: tuple[str, ...]
    instruction: str | None
    paper_name: str
    aliases: tuple[str, ...] = ()
    benchmarks: tuple[str, ...] = (LONG,)

    @property
    def benchmark_names(self) -> tuple[str, ...]:
        """Every name the task goes by: canonical, paper name, aliases (without duplicates)."""
        names = [self.name, self.paper_name, *self.aliases]
        return tuple(dict.fromkeys(names))


def _task(name, group, labels, paper_name, aliases=(), benchmarks=(LONG,)) -> TaskSpec:
    return TaskSpec(
        name=name,
        group=group,
        folder=f"{group}/{name}",
        labels=tuple(labels),
        instruction=GROUP_INSTRUCTIONS[group],
        paper_name=paper_name,
        aliases=tuple(aliases),
        benchmarks=tuple(benchmarks),
    )


_BOTH = (STANDARD, LONG)
_FIVE_STARS = ("very negative", "negative", "neutral", "positive", "very positive")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _task(
            "dbpedia", "TC",
            ("Company", "Educational Institution", "Artist", "Athlete", "Office Holder",
             "Mean of Transportation", "Building", "Natural Place", "Village", "Animal", "Plant",
             "Album", "Film", "Written Work"),
            "dbpedia", ("dbpedia14", "dbpedia_14"), _BOTH,
        ),
        _task("amazon", "SC", _FIVE_STARS, "amazon", ("amazon_reviews",), _BOTH),
        _task(
            "yahoo", "TC",
            ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference",
             "Computers & Internet", "Sports", "Business & Finance", "Entertainment & Music",
             "Family & Relationships", "Politics & Government"),
            "yahoo", ("yahoo_answers",), _BOTH,
        ),
        _task(
            "agnews", "TC", ("World", "Sports", "Business", "Science or Technology"),
            "ag", ("ag_news", "ag-news", "ag news"), _BOTH,
        ),
        _task("yelp", "SC", _FIVE_STARS, "yelp", ("yelp_review_full",)),
        _task("MNLI", "NLI", ("neutral", "entailment", "contradiction"), "mnli"),
        _task("QQP", "QQP", ("False", "True"), "qqp"),
        _task("RTE", "NLI", ("contradiction", "entailment"), "rte"),
        _task("SST-2", "SC", ("Good", "Bad"), "sst-2", ("sst2", "sst_2", "sst")),
        _task("WiC", "WiC", ("True", "False"), "wic"),
        _task("CB", "NLI", ("entailment", "contradiction", "neutral"), "cb"),
        _task("COPA", "COPA", ("A", "B"), "copa"),
        _task("BoolQA", "BoolQA", ("True", "False"), "boolqa", ("boolq",)),
        _task("MultiRC", "MultiRC", ("False", "True"), "multirc"),
        _task("IMDB", "SC", ("Good", "Bad"), "imdb"),
    )
}

# lower-case name or alias -> canonical name
_LOOKUP: dict[str, str] = {
    alias.lower(): spec.name for spec in TASKS.values() for alias in spec.benchmark_names
}


def task_names() -> list[str]:
    """Canonical names of all registered tasks, in registry order."""
    return list(TASKS)


def get_task(name: str) -> TaskSpec:
    """The task called `name`: canonical, paper or alias name, any case (``ag``, ``SST2``, ``mnli``)."""
    if not isinstance(name, str):
        raise DataError(f"task name must be a string, got {name!r}")
    key = name.strip().lower()
    if key not in _LOOKUP:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[_LOOKUP[key]]
