"""pass@k results per benchmark and averaged, as JSON and as a markdown table.

Values are fractions in JSON and percentages (two decimals, as in the paper) in markdown.
The average is the unweighted mean over benchmarks, as the paper's "Avg." column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aepo.eval.passk import pass_at_ks, report_ks

RESULTS_JSON = "results.json"
RESULTS_MARKDOWN = "results.md"

DISPLAY_NAMES = {
    "aime24": "AIME24",
    "aime25": "AIME25",
    "amc23": "AMC23",
    "college_math": "College Math",
    "gsm8k": "GSM8K",
    "math500": "MATH500",
    "minerva_math": "Minerva",
    "olympiadbench": "Olympiad",
}


def summarize(
    records: list[dict[str, Any]],
    benchmarks: list[str],
    *,
    header: dict[str, Any],
    expected_problems: dict[str, int],
) -> dict[str, Any]:
    """Results for the problems in ``records`` (each with ``benchmark``, ``n``, ``correct``)."""
    n = header["sampling"]["n"]
    ks = report_ks(n)
    per_benchmark: dict[str, Any] = {}
    for name in benchmarks:
        rows = [r for r in records if r["benchmark"] == name]
        if not rows:
            continue
        counts = [(r["n"], r["correct"]) for r in rows]
        samples = sum(r["n"] for r in rows)
        per_benchmark[name] = {
            "problems": len(rows),
            "problems_expected": expected_problems.get(name, len(rows)),
            "pass@k": {str(k): value for k, value in pass_at_ks(counts, ks).items()},
            "no_answer_rate": sum(r.get("no_answer", 0) for r in rows) / samples,
            "unparseable_rate": sum(r.get("unparseable", 0) for r in rows) / samples,
        }
    average = (
        {
            str(k): sum(b["pass@k"][str(k)] for b in per_benchmark.values()) / len(per_benchmark)
            for k in ks
        }
        if per_benchmark
        else {}
    )
    complete = all(
        name in per_benchmark and per_benchmark[name]["problems"] == expected_problems.get(name)
        for name in benchmarks
    )
    return {
        **header,
        "ks": ks,
        "complete": complete,
        "benchmarks": per_benchmark,
        "average": {"pass@k": average},
    }


def settings_line(results: dict[str, Any]) -> str:
    s = results["sampling"]
    return (
        f"model `{results['model']}` ({results['backend']}); n = {s['n']} samples per problem, "
        f"k = {', '.join(map(str, results['ks']))}; temperature {s['temperature']}, "
        f"top_p {s['top_p']}, max length {s['max_tokens']} tokens, seed {s['seed']}"
    )


def markdown_table(results: dict[str, Any]) -> str:
    names = list(results["benchmarks"])
    columns = [DISPLAY_NAMES.get(name, name) for name in names] + ["Avg."]
    lines = [
        settings_line(results),
        "",
        "| | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    problems = [str(results["benchmarks"][name]["problems"]) for name in names]
    lines.append("| problems | " + " | ".join(problems) + " | |")
    for k in results["ks"]:
        values = [results["benchmarks"][name]["pass@k"][str(k)] for name in names]
        values.append(results["average"]["pass@k"][str(k)])
        lines.append(f"| pass@{k} | " + " | ".join(f"{100 * v:.2f}" for v in values) + " |")
    if not results["complete"]:
        lines += ["", "_Incomplete: some problems have not been evaluated yet._"]
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder = Path(folder)
    json_path = folder / RESULTS_JSON
    markdown_path = folder / RESULTS_MARKDOWN
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    markdown_path.write_text(markdown_table(results))
    return json_path, markdown_path


def write_tensorboard(results: dict[str, Any], folder: Path) -> Path:
    """``pass@k/<benchmark>`` (and ``pass@k/average``) with k as the step, so TensorBoard
    draws each benchmark's pass@k curve beside the training runs' curves."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(folder) / "tensorboard"
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        parts = {**results["benchmarks"], "average": results["average"]}
        for name, part in parts.items():
            for k, value in part["pass@k"].items():
                writer.add_scalar(f"pass@k/{name}", value, global_step=int(k))
    finally:
        writer.close()
    return log_dir


def load_results(path: Path) -> dict[str, Any]:
    """A ``results.json`` (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"pass@k results not found: {path}")
    results = json.loads(path.read_text())
    if "benchmarks" not in results or "ks" not in results:
        raise ValueError(f"{path} is not an aepo eval results file (no 'benchmarks'/'ks')")
    return results
