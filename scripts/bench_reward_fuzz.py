"""Fuzz the math reward: seeded hostile and ordinary responses, one thread, threads, processes.

    python scripts/bench_reward_fuzz.py                  # 10,000 inputs, 4 threads, 2 processes
    python scripts/bench_reward_fuzz.py --inputs 300 --json out.json

Every input is scored three times: by one thread (the reference), by ``--threads`` threads of
another process, and by a ``--processes`` process pool (started with ``spawn``, as forking a
process that runs threads is unsafe); each run starts with an empty verdict cache. It prints
calls per second, the slowest call and its input, crashes, scores that are neither 0 nor 1,
the inputs whose score differs from the one-thread run (with why each run scored it), and how
much the scoring process's resident memory grew; then the three goals of the reward's issue
(the same scores in every mode, no call over ``--max-call-s``, memory flat within
``--max-rss-growth-mb``) and two more (no crash, binary scores). It exits 1 when one is missed.
Calls stopped by the wall clock before using their CPU-time budget (``machine_busy``: the only
verdicts that depend on the machine's load) are counted per run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from aepo.rewards.adversarial import FALSE_POSITIVES, ORDINARY, STALLS
from aepo.rewards.sandbox import MACHINE_BUSY

KNOWN_BOMBS = STALLS + FALSE_POSITIVES

_FRAGMENTS = [
    "\\frac{",
    "}{",
    "}",
    "{",
    "\\sqrt{",
    "\\sqrt[",
    "]",
    "^",
    "_",
    "^{",
    "\\left(",
    "\\right)",
    "\\pi",
    "\\infty",
    "\\int_0^1",
    "\\sum_{k=1}^{n}",
    "\\binom{",
    "!",
    "\\cdot",
    "\\times",
    "x",
    "y",
    "n",
    "e",
    "i",
    "+",
    "-",
    "=",
    "<",
    "\\le",
    ",",
    "\\cup",
    "(",
    ")",
    "[",
    "\\begin{pmatrix}",
    "&",
    "\\\\",
    "\\end{pmatrix}",
    "\\text{",
    "\\mathrm{",
    "%",
    "\\%",
    "^\\circ",
    "\\sin",
    "\\log",
    "\\Gamma",
    "\\det",
    "\\lim_{x\\to 0}",
    "0.5",
    "12",
    "7",
    "\\$",
    "\\{",
    "\\}",
]


def _random_unicode(rng: random.Random, size: int) -> str:
    ranges = [(0x20, 0x7E), (0xA0, 0x2FF), (0x370, 0x3FF), (0x2200, 0x22FF), (0x4E00, 0x4FFF)]
    chars = []
    for _ in range(size):
        low, high = rng.choice(ranges)
        chars.append(chr(rng.randint(low, high)))
    if rng.random() < 0.3:
        chars.insert(rng.randrange(len(chars) + 1), rng.choice(["\x00", "\ufffd", "\U0001f600"]))
    return "".join(chars)


def _latex_soup(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(_FRAGMENTS) for _ in range(size))


def _nested(rng: random.Random) -> str:
    depth = rng.randint(1, 60)
    opener, closer = rng.choice([("{", "}"), ("(", ")"), ("\\left(", "\\right)"), ("[", "]")])
    inner = rng.choice(["1", "x", "2^{10}", "\\frac{1}{2}", ""])
    close = depth if rng.random() < 0.7 else rng.randint(0, depth)  # sometimes unbalanced
    return opener * depth + inner + closer * close


def _huge(rng: random.Random) -> str:
    digits = lambda k: str(rng.randint(10 ** (k - 1), 10**k - 1))  # noqa: E731
    form = rng.randrange(8)
    if form == 0:
        return digits(rng.randint(20, 399))
    if form == 1:
        return f"{digits(rng.randint(1, 7))}^{{{digits(rng.randint(1, 7))}}}"
    if form == 2:
        return f"(x+{digits(2)})^{{{digits(rng.randint(2, 6))}}}"
    if form == 3:
        return f"{digits(rng.randint(1, 4))}!"
    if form == 4:
        return f"\\Gamma({digits(rng.randint(2, 7))})"
    if form == 5:
        return f"\\sin(10^{{{digits(rng.randint(2, 6))}}})"
    if form == 6:
        return f"{digits(1)}^{{-{digits(rng.randint(2, 6))}}}"
    return f"10^{{{digits(rng.randint(1, 3))}}} \\cdot 2^{{{digits(rng.randint(1, 3))}}}"


def _wrap(rng: random.Random, answer: str) -> str:
    form = rng.randrange(6)
    if form == 0:
        return f"<think>work</think> The answer is $\\boxed{{{answer}}}$."
    if form == 1:
        return f"\\boxed {answer}"
    if form == 2:
        return f"so \\boxed{{{answer}"  # never closed
    if form == 3:
        return f"\\fbox{{{answer}}}"
    if form == 4:
        return answer  # no box at all
    return f"\\boxed{{{answer}}}"


def generate(seed: int, count: int) -> list[tuple[str, str]]:
    """``count`` (response, ground truth) pairs; the same seed gives the same list."""
    rng = random.Random(seed)
    truths = ["1", "2", "10", "0.5", "\\frac{1}{2}", "x^2+1", "\\pi/4", "[1,2)", "C", "", " "]
    inputs = list(KNOWN_BOMBS)
    inputs += [(f"\\boxed{{{answer}}}", truth) for answer, truth, _ in ORDINARY]
    while len(inputs) < count:
        kind = rng.randrange(10)
        truth = rng.choice(truths)
        if kind == 0:
            response = _random_unicode(rng, rng.randint(1, 400))
        elif kind == 1:
            response = _wrap(rng, _latex_soup(rng, rng.randint(1, 40)))
        elif kind == 2:
            response = _wrap(rng, _nested(rng))
        elif kind == 3:
            response = _wrap(rng, _huge(rng))
        elif kind == 4:
            sentence = rng.choice(["We simplify. ", "Thus x = 2. ", "Let n be odd; then "])
            response = sentence * rng.randint(50, 3000)
            if rng.random() < 0.5:
                response += _wrap(rng, rng.choice(["2", "x", "\\frac{1}{2}"]))
        elif kind == 5:
            response = _wrap(rng, "{" * rng.randint(0, 30) + _latex_soup(rng, 5))
        elif kind == 6:
            response = _wrap(rng, _latex_soup(rng, 5) + "\x00" * rng.randint(1, 5))
        elif kind == 7:
            response, truth = rng.choice(KNOWN_BOMBS)
        else:
            answer, truth, _ = rng.choice(ORDINARY)
            response = _wrap(rng, answer)
        inputs.append((response, truth))
    return inputs[:count]


def _score_timed(case: tuple[str, str]) -> tuple[float | None, float, str | None, str | None]:
    """(score, seconds, the exception if one escaped, why the answer was not compared)."""
    from aepo.rewards.math_reward import score

    response, truth = case
    started = time.perf_counter()
    try:
        result = score(response, truth)
        value, error, problem = result.score, None, result.problem
    except BaseException as err:  # counted: the reward promises never to raise
        value, error, problem = None, f"{type(err).__name__}: {err}", "raised"
    return value, time.perf_counter() - started, error, problem


def _start_checking_workers() -> None:
    from aepo.rewards.math_reward import start_workers

    start_workers()


def _pid_after_a_pause(_: int) -> int:
    import os

    time.sleep(0.5)  # long enough that every process of the pool takes one
    return os.getpid()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _in_process(cases: list[tuple[str, str]], threads: int) -> dict:
    """Score ``cases`` from ``threads`` threads of this process (a fresh one per run)."""
    from aepo.rewards.math_reward import reward_counters, start_workers

    started = time.perf_counter()
    start_workers()
    start_s = time.perf_counter() - started
    rss_before = _rss_mb()
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(_score_timed, cases))
    return {
        "results": results,
        "seconds": time.perf_counter() - started,
        "worker_start_s": start_s,
        "rss_growth_mb": _rss_mb() - rss_before,
        "counters": reward_counters(),
    }


def _in_process_pool(cases: list[tuple[str, str]], processes: int) -> dict:
    context = get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_start_checking_workers
    ) as pool:
        # every process starts its checking workers before the clock starts
        pids: set[int] = set()
        for _ in range(20):
            pids.update(pool.map(_pid_after_a_pause, range(processes)))
            if len(pids) >= processes:
                break
        started = time.perf_counter()
        results = list(pool.map(_score_timed, cases, chunksize=16))
        return {"results": results, "seconds": time.perf_counter() - started}


def _run_in_fresh_process(cases: list[tuple[str, str]], threads: int) -> dict:
    """One in-process run in its own spawned process: an empty verdict cache, its own
    workers, its own memory to measure."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as one:
        return one.submit(_in_process, cases, threads).result()


def _short(text: str, limit: int = 90) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 20] + f"...' ({len(text)} chars)"


def run(args: argparse.Namespace) -> dict:
    cases = generate(args.seed, args.inputs)
    runs = {
        "one thread": _run_in_fresh_process(cases, 1),
        f"{args.threads} threads": _run_in_fresh_process(cases, args.threads),
        f"{args.processes}-process pool": _in_process_pool(cases, args.processes),
    }
    reference = runs["one thread"]["results"]
    figures: dict = {"inputs": len(cases), "seed": args.seed}
    slowest = (0.0, "", "")
    crashes, non_binary = [], 0
    mismatches: dict[str, list[int]] = {}
    for mode, outcome in runs.items():
        results = outcome["results"]
        figures[f"calls per s, {mode}"] = round(len(cases) / outcome["seconds"], 1)
        for i, (value, seconds, error, _) in enumerate(results):
            if seconds > slowest[0]:
                slowest = (seconds, mode, _short(cases[i][0]) + " / " + _short(cases[i][1], 30))
            if error is not None:
                crashes.append((cases[i], error))
            if value not in (0.0, 1.0):
                non_binary += 1
        if results is not reference:
            mismatches[mode] = [i for i in range(len(cases)) if results[i][0] != reference[i][0]]
            figures[f"of them not machine_busy, {mode}"] = sum(
                1 for i in mismatches[mode] if MACHINE_BUSY not in (results[i][3], reference[i][3])
            )
        figures[f"machine_busy, {mode}"] = sum(1 for r in results if r[3] == MACHINE_BUSY)
        figures[f"calls over {args.max_call_s:g} s, {mode}"] = sum(
            1 for r in results if r[1] > args.max_call_s
        )
    for mode in ("one thread", f"{args.threads} threads"):
        figures[f"worker start s, {mode}"] = round(runs[mode]["worker_start_s"], 3)
        figures[f"RSS growth MB, {mode}"] = round(runs[mode]["rss_growth_mb"], 1)
    figures["counters, one thread"] = runs["one thread"]["counters"]
    figures["correct scores, one thread"] = sum(1 for r in reference if r[0] == 1.0)
    figures["slowest call s"] = round(slowest[0], 3)
    figures["slowest call"] = f"{slowest[1]}: {slowest[2]}"
    figures["crashes"] = len(crashes)
    figures["first crash"] = repr(crashes[0])[:300] if crashes else None
    figures["non-binary scores"] = non_binary
    for mode, differing in mismatches.items():
        figures[f"scores differing from one thread, {mode}"] = len(differing)
        figures[f"differing inputs, {mode}"] = [
            f"{_short(cases[i][0], 70)} / {_short(cases[i][1], 20)}: one thread "
            f"{reference[i][0]} ({reference[i][3]}), here {runs[mode]['results'][i][0]} "
            f"({runs[mode]['results'][i][3]})"
            for i in differing[:10]
        ]
    figures["_max_rss_growth_mb"] = max(
        figures[f"RSS growth MB, {mode}"] for mode in ("one thread", f"{args.threads} threads")
    )
    figures["_mismatches"] = sum(len(d) for d in mismatches.values())
    figures["_mismatches_not_busy"] = sum(
        figures[f"of them not machine_busy, {mode}"] for mode in mismatches
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--max-call-s", type=float, default=1.0)
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    figures = run(args)
    goals = {
        "scores the same in every mode": figures["_mismatches"] == 0,
        f"no call over {args.max_call_s:g} s": figures["slowest call s"] <= args.max_call_s,
        f"memory flat within {args.max_rss_growth_mb:g} MB": figures["_max_rss_growth_mb"]
        <= args.max_rss_growth_mb,
        "0 crashes": figures["crashes"] == 0,
        "0 non-binary scores": figures["non-binary scores"] == 0,
    }
    figures["goals_met"] = all(goals.values())
    print(f"{'figure':<44} value")
    for key, value in figures.items():
        if key.startswith("_"):
            continue
        if isinstance(value, list):
            print(f"{key:<44} {len(value)} shown")
            for line in value:
                print(f"    {line}")
        else:
            print(f"{key:<44} {value}")
    for goal, met in goals.items():
        print(f"goal: {goal:<44} {'met' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if figures["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
