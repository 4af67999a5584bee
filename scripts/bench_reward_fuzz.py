"""Fuzz the math reward: seeded hostile and ordinary responses through threads and a process pool.

    python scripts/bench_reward_fuzz.py                  # 10,000 inputs, 4 threads, 2 processes
    python scripts/bench_reward_fuzz.py --inputs 300 --json out.json

Every input is scored twice: by ``--threads`` threads of this process, then by a
``--processes`` process pool (started with ``spawn``, as forking a process that runs threads
is unsafe). It prints calls per second, the slowest call and its input, crashes, scores that
are neither 0 nor 1, inputs whose verdict differs between the two runs, and how much this
process's resident memory grew over the threaded run; it exits 1 when a goal is missed
(a crash, a non-binary score, a call over ``--max-call-s``, a verdict that differs although
both runs compared the answer, or growth over ``--max-rss-growth-mb``). Verdicts that differ
because one run stopped the answer at its deadline are counted apart: on a machine with more
runnable processes than cores a slow but legitimate check can miss the deadline in one run.
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

# The known bombs (response, ground truth): each took seconds to minutes, or gigabytes,
# before the reward checked answers in killable worker processes.
KNOWN_BOMBS = [
    ("\\boxed (x+1)^{999}", "10"),
    ("\\boxed (x+y)^{9999}", "x^2+1"),
    ("\\boxed 999999^{999999}", "\\sqrt{2}"),
    ("\\boxed \\Gamma(999999)", "\\pi/4"),
    ("\\boxed \\sin(10^{999999})", "[1,2)"),
    ("\\boxed 2^{-999999}", "0"),
    ("\\boxed{" + "{" * 50 + "1" + "}" * 50 + "}", "1"),
    ("\\boxed{" + "{" * 18 + "1" + "}" * 18 + "}", "2"),
    ("\\boxed{" + "(" * 40 + "1" + ")" * 40 + "}", "2"),
    ("\\boxed{(x+1)^{1000}}", "3"),
    ("\\boxed{999999^{999999}}", "1"),
    ("\\boxed{(x+1)^{999999}}", "1"),
    ("The answer follows from the lemma. " * 300, "1"),
    ("The answer follows from the lemma. " * 300 + "\\boxed{4}", "5"),
    ("\\boxed{2^{\\infty}}", "0.5"),
    ("\\boxed{}", ""),
    ("\\boxed{9^{9^{9}}}", "1"),
    ("\\boxed{100000!}", "1"),
]

# Answers the reward must keep getting right (and wrong) under load.
ORDINARY = [
    ("204", "204", True),
    ("240", "204", False),
    ("\\frac{14}{3}", "14/3", True),
    ("-1.5", "-\\frac{3}{2}", True),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("48\\sqrt2", "48 \\sqrt{2}", True),
    ("4n - 10", "10-4 n", False),
    ("[2, 5)", "[2,5)", True),
    ("30°", "30", True),
    ("\\textbf{(C)}\\ 7", "C", True),
    ("\\text{diverges}", "diverges", True),
    ("-2, 1", "1,-2", True),
]

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


def _score_timed(case: tuple[str, str]) -> tuple[float | None, float, str | None, bool]:
    """(score, seconds, the exception if one escaped, whether the answer went unchecked)."""
    from aepo.rewards.math_reward import score

    response, truth = case
    started = time.perf_counter()
    try:
        result = score(response, truth)
        value, error, unchecked = result.score, None, result.unparseable
    except BaseException as err:  # counted: the reward promises never to raise
        value, error, unchecked = None, f"{type(err).__name__}: {err}", True
    return value, time.perf_counter() - started, error, unchecked


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


def _short(text: str, limit: int = 90) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 20] + f"...' ({len(text)} chars)"


def run(args: argparse.Namespace) -> dict:
    from aepo.rewards.math_reward import reward_counters, start_workers

    cases = generate(args.seed, args.inputs)
    started = time.perf_counter()
    start_workers()
    start_s = time.perf_counter() - started
    rss_before = _rss_mb()

    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as threads:
        threaded = list(threads.map(_score_timed, cases))
    thread_s = time.perf_counter() - started
    rss_after = _rss_mb()
    counters = reward_counters()

    context = get_context("spawn")
    with ProcessPoolExecutor(
        args.processes, mp_context=context, initializer=_start_checking_workers
    ) as processes:
        # every process starts its checking workers before the clock starts
        pids: set[int] = set()
        for _ in range(20):
            pids.update(processes.map(_pid_after_a_pause, range(args.processes)))
            if len(pids) >= args.processes:
                break
        started = time.perf_counter()
        pooled = list(processes.map(_score_timed, cases, chunksize=16))
        pool_s = time.perf_counter() - started

    every = threaded + pooled
    slowest_index = max(range(len(every)), key=lambda i: every[i][1])
    slowest_case = cases[slowest_index % len(cases)]
    crashes = [(cases[i % len(cases)], r[2]) for i, r in enumerate(every) if r[2] is not None]
    non_binary = sum(1 for r in every if r[0] not in (0.0, 1.0))
    differing = [i for i, (a, b) in enumerate(zip(threaded, pooled, strict=True)) if a[0] != b[0]]
    # a verdict that differs because one run ran out of time (on a starved machine) is told
    # apart from one where both runs compared the answer and disagreed
    differing_checked = [i for i in differing if not threaded[i][3] and not pooled[i][3]]
    return {
        "inputs": len(cases),
        "seed": args.seed,
        "threads": args.threads,
        "processes": args.processes,
        "worker_start_s": round(start_s, 3),
        "thread_calls_per_s": round(len(cases) / thread_s, 1),
        "pool_calls_per_s": round(len(cases) / pool_s, 1),
        "slowest_call_s": round(every[slowest_index][1], 3),
        "slowest_input": _short(slowest_case[0]) + " / " + _short(slowest_case[1], 30),
        "slowest_run": "threads" if slowest_index < len(cases) else "process pool",
        "crashes": len(crashes),
        "first_crash": repr(crashes[0])[:300] if crashes else None,
        "non_binary_scores": non_binary,
        "correct_scores": sum(1 for r in threaded if r[0] == 1.0),
        "unchecked_threads": sum(1 for r in threaded if r[3]),
        "unchecked_pool": sum(1 for r in pooled if r[3]),
        "differing_verdicts": len(differing),
        "differing_both_checked": len(differing_checked),
        "first_differing": _short(cases[differing[0]][0]) if differing else None,
        "rss_before_mb": round(rss_before, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "counters_threaded_run": counters,
    }


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
        "0 crashes": figures["crashes"] == 0,
        "0 non-binary scores": figures["non_binary_scores"] == 0,
        f"no call over {args.max_call_s:g} s": figures["slowest_call_s"] <= args.max_call_s,
        # a run starved of CPU time can stop a slow answer at the deadline that the other
        # run checked: counted apart, since that answer scored 0 as documented, not at random
        "same verdicts wherever both runs checked in time": figures["differing_both_checked"] == 0,
        f"memory flat within {args.max_rss_growth_mb:g} MB": figures["rss_growth_mb"]
        <= args.max_rss_growth_mb,
    }
    figures["goals_met"] = all(goals.values())
    print(f"{'figure':<28} value")
    for key, value in figures.items():
        print(f"{key:<28} {value}")
    for goal, met in goals.items():
        print(f"goal: {goal:<44} {'met' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if figures["goals_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
