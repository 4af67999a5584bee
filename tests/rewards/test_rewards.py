"""The math reward on answer forms taken from the shipped benchmarks, and on hostile text."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aepo.rewards.boxed import last_boxed_content
from aepo.rewards.cost_guard import too_costly_to_parse
from aepo.rewards.math_reward import (
    RewardCounters,
    compute_score,
    reset_reward_counters,
    reward_counters,
    score,
    start_workers,
    think_format_ok,
)


@pytest.fixture(scope="module", autouse=True)
def _workers_started():
    start_workers()  # once per process (it imports sympy); the timed tests time calls, not that


def boxed(answer: str) -> str:
    return f"<think>some reasoning</think> The final answer is $\\boxed{{{answer}}}$."


# (benchmark the ground truth comes from, ground truth as the loader returns it, model answer,
#  correct?). Ground truths are copied from data/eval.
ANSWER_TABLE = [
    # integers and floats
    ("aime24", "204", "204", True),
    ("aime24", "204", "240", False),
    ("amc23", 27.0, "27", True),  # the JSON holds the float 27.0
    ("gsm8k", "18", "\\$18", True),
    ("gsm8k", "18", "18.00", True),
    ("gsm8k", "70000", "70{,}000", True),
    ("gsm8k", "70000", "7000", False),
    # fractions and decimals
    ("math500", "\\frac{14}{3}", "14/3", True),
    ("math500", "\\frac{14}{3}", "\\dfrac{14}{3}", True),
    ("math500", "\\frac{14}{3}", "4.67", False),
    ("college_math", "-\\frac{3}{2}", "-1.5", True),
    ("college_math", "-\\frac{3}{2}", "1.5", False),
    ("minerva_math", "1.6", "1.60", True),
    ("minerva_math", "1.6", "16", False),
    # LaTeX expressions
    ("math500", "\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", True),
    ("math500", "\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)", False),
    ("math500", "3R^2", "3 R^{2}", True),
    ("college_math", "48 \\sqrt{2}", "48\\sqrt2", True),
    ("college_math", "48 \\sqrt{2}", "24\\sqrt{2}", False),
    ("college_math", "10-4 n", "10 - 4n", True),
    ("college_math", "10-4 n", "4n - 10", False),
    ("minerva_math", "1+\\sqrt{3} i", "1 + i\\sqrt{3}", True),
    ("olympiadbench", "f(x)=2 x", "f(x) = 2x", True),
    # several answers (OlympiadBench lists, MATH "1,-2")
    ("math500", "1,-2", "-2, 1", True),
    ("olympiadbench", "69,84", "84, 69", True),
    ("olympiadbench", ["$69$", "$84$"], "69, 84", True),  # the raw list form
    ("olympiadbench", "69,84", "69", False),
    # intervals
    ("olympiadbench", "[2,5)", "[2, 5)", True),
    ("olympiadbench", "[2,5)", "(2, 5)", False),
    ("math500", "(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)", True),
    # units, degrees and percentages (OlympiadBench keeps the unit in a separate field)
    ("olympiadbench", "\\frac{41}{12}", "\\frac{41}{12} \\text{ km}", True),
    ("olympiadbench", "4.2", "4.2\\%", True),
    ("math500", "145^\\circ", "145", True),
    ("math500", "145^\\circ", "135^\\circ", False),
    ("minerva_math", "1.3 \\times 10^{-7} \\mathrm{~m}", "1.3\\times10^{-7}\\,\\mathrm{m}", True),
    # text answers
    ("math500", "\\text{(C)}", "C", True),
    ("college_math", "diverges", "\\text{diverges}", True),
]


@pytest.mark.parametrize(("benchmark", "truth", "answer", "expected"), ANSWER_TABLE)
def test_answer_forms_from_benchmarks(benchmark, truth, answer, expected):
    result = score(boxed(answer), truth)
    assert result.correct is expected, (benchmark, truth, answer)
    assert result.score == (1.0 if expected else 0.0)
    assert result.answer == answer
    assert result.format_ok


def test_the_last_box_is_the_answer():
    response = "First \\boxed{3}, but that was wrong; the answer is \\boxed{5}."
    assert score(response, "5").correct
    assert not score(response, "3").correct


def test_a_truncated_final_box_is_not_replaced_by_an_earlier_one():
    result = score("maybe \\boxed{3} ... so the answer is \\boxed{\\frac{1}{", "3")
    assert result.answer is None
    assert not result.correct and not result.format_ok and result.score == 0.0


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("so \\boxed 7.", "7"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed {  12 }", "12"),
        ("\\boxedfoo{3}", None),  # another macro
        ("no box here", None),
        ("\\boxed{", None),
    ],
)
def test_last_boxed_content(text, content):
    assert last_boxed_content(text) == content


def test_no_answer_scores_zero_and_is_counted():
    counters_before = reward_counters()
    result = score("I think it is 5.", "5")
    assert (result.correct, result.answer, result.format_ok, result.score) == (
        False,
        None,
        False,
        0.0,
    )
    after = reward_counters()
    assert after["no_answer"] == counters_before["no_answer"] + 1
    assert after["scored"] == counters_before["scored"] + 1


def test_format_penalty_and_think_requirement():
    correct_without_think = "The answer is \\boxed{5}."
    assert score(correct_without_think, "5").score == 1.0
    strict = score(correct_without_think, "5", require_think=True, format_penalty=0.5)
    assert strict.correct and not strict.format_ok and strict.score == -0.5
    assert score("<think>5</think> \\boxed{5}", "5", require_think=True).score == 1.0
    # the chat template may open <think> in the prompt: a lone </think> is well formed
    assert think_format_ok("reasoning </think> so \\boxed{5}")
    assert not think_format_ok("\\boxed{5} </think>")  # answer inside the reasoning
    assert not think_format_ok("<think>a</think><think>b</think>\\boxed{5}")


HOSTILE = [
    "\\boxed{9^{9^{9}}}",  # 370 million digits: sympy would never finish
    "\\boxed{9^9^9}",
    "\\boxed{2**2**2**2**2**2}",
    "\\boxed{10^{123456789}}",
    "\\boxed{(10^{10})!}",
    "\\boxed{100000!}",
    "\\boxed{" + "\\frac{1}{" * 300 + "}",  # unbalanced
    "\\boxed{" + "x" * 100_000 + "}",
    "x" * 3_000_000 + "\\boxed{\\left( \\right] \\begin{matrix} & \\end{pmatrix}}",
    "\\boxed{\\frac{}{}\\sqrt[]{}^^__}",
    "\\boxed{}\\boxed{\\\\}",
    "\\boxed{\x00\uffff\U0001f600}",
]


@pytest.mark.parametrize("response", HOSTILE)
def test_hostile_text_scores_zero_quickly(response):
    start = time.perf_counter()
    result = score(response, "1")
    assert time.perf_counter() - start < 2.0
    assert result.score == 0.0 and not result.correct


def test_refused_answers_are_counted_as_unparseable():
    before = reward_counters()["unparseable"]
    result = score("\\boxed{9^{9^{9}}}", "1")
    assert result.unparseable
    assert reward_counters()["unparseable"] == before + 1


def test_refused_answer_still_matches_identical_ground_truth():
    assert score("\\boxed{2^{2^{10}}}", "2^{2^{10}}").correct


@pytest.mark.parametrize(
    ("latex", "refused"),
    [
        ("2^{1000}", False),
        ("x^2 + y^{10}", False),
        ("e^{i\\pi}", False),
        ("10!", False),
        ("a \\! b", False),  # LaTeX negative space, not a factorial
        ("2^{2^{3}}", True),
        ("x^{y^z}", True),
        ("10^{10000000}", True),
        ("12345!", True),
        ("(n+1)!", True),
        ("(x+1)^{99}", False),
        ("(x+1)^{100}", True),
        ("(x+58)^{945}", True),
        ("\\left(a-b\\right)^{1000}", True),
        ("(\\pi+1)^{100}", False),  # no variable: evaluated as a number
        ("(2)^{1000}", False),
        ("\\sin(10^{999})", False),
        ("\\sin(10^{3380})", True),
        ("\\Gamma(12345)", True),
        ("\\Gamma(1234)", False),
        ("((((x))))", False),
        ("(((((x)))))", True),
    ],
)
def test_cost_guard(latex, refused):
    assert (too_costly_to_parse(latex) is not None) is refused


def test_compute_score_matches_verl_reward_manager_contract():
    """verl 0.9.1's NaiveRewardManager calls compute_score(data_source=, solution_str=,
    ground_truth=, extra_info=) plus reward_kwargs; it reads result["score"] and logs the
    rest (numbers are averaged, "pred" is used for majority voting)."""
    result = compute_score(
        data_source="dapo17k",
        solution_str=boxed("\\frac{1}{2}"),
        ground_truth="0.5",
        extra_info={"index": 3, "split": "train", "num_turns": 2, "rollout_reward_scores": {}},
    )
    assert result == {
        "score": 1.0,
        "acc": 1.0,
        "pred": "\\frac{1}{2}",
        "format_ok": 1.0,
        "unparseable": 0.0,
    }
    missing = compute_score("dapo17k", "no answer", "3", None, format_penalty=1.0)
    assert missing["score"] == -1.0 and missing["pred"] == "" and missing["acc"] == 0.0
    assert all(isinstance(v, float) for k, v in missing.items() if k != "pred")


def test_compute_score_loads_as_a_file_like_verl_does():
    """reward.custom_reward_function.path may be a file: verl 0.9.1's load_module executes it
    as a module that is not in sys.modules (importing verl here would cost seconds)."""
    import importlib.util

    import aepo.rewards.math_reward as module

    spec = importlib.util.spec_from_file_location("custom_module_123", module.__file__)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    assert loaded.compute_score("x", boxed("7"), "7")["score"] == 1.0


def test_scoring_from_worker_threads():
    """math-verify's signal-based timeouts raise outside the main thread; ours must not."""
    cases = [(boxed(answer), truth, expected) for _, truth, answer, expected in ANSWER_TABLE]
    cases += [(text, "1", False) for text in HOSTILE[:6]]

    def check(case):
        response, truth, expected = case
        assert threading.current_thread() is not threading.main_thread()
        return score(response, truth).correct is expected

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(check, cases * 3))
    assert all(outcomes)


def test_counters_are_thread_safe():
    counters = RewardCounters()

    def bump():
        for _ in range(5000):
            counters.add(scored=1, unparseable=1)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counters.snapshot()["scored"] == 40_000
    assert counters.snapshot()["unparseable"] == 40_000
    counters.reset()
    assert counters.snapshot()["scored"] == 0


def test_reset_reward_counters():
    score("\\boxed{1}", "1")
    reset_reward_counters()
    assert reward_counters() == {
        "scored": 0,
        "no_answer": 0,
        "unparseable": 0,
        "timed_out": 0,
        "machine_busy": 0,
        "out_of_memory": 0,
        "bad_ground_truth": 0,
    }


def test_math500_solutions_earn_their_own_answer_and_not_their_neighbours(repo_data):
    """Every MATH500 worked solution ends in a box holding the answer field, in whatever form
    the author wrote it: a reward that misreads real answers shows up here."""
    import json

    rows = [json.loads(line) for line in (repo_data / "eval" / "math500" / "test.jsonl").open()]
    own = [score(row["solution"], row["answer"]).correct for row in rows]
    assert sum(own) == len(rows)
    shifted = [
        score(row["solution"], rows[(i + 1) % len(rows)]["answer"]).correct
        for i, row in enumerate(rows)
    ]
    assert sum(shifted) < 0.03 * len(rows)  # a few neighbours share an answer
