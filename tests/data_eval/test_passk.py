"""pass@k against exact enumeration of k-subsets, and stability at n = 1024."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aepo.eval.passk import mean_pass_at_k, pass_at_k, pass_at_ks, report_ks


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Fraction of all k-subsets of n samples (the first c correct) holding a correct one."""
    outcomes = [i < c for i in range(n)]
    subsets = list(combinations(range(n), k))
    hits = sum(any(outcomes[i] for i in subset) for subset in subsets)
    return Fraction(hits, len(subsets))


@st.composite
def n_c_k(draw, max_n=10):
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(max_examples=200, deadline=None)
@given(n_c_k())
def test_matches_enumeration_of_subsets(case):
    n, c, k = case
    assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_every_case_for_small_n(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(
                float(brute_force_pass_at_k(n, c, k)), abs=1e-12
            )


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1024), st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]))
def test_exact_at_n_1024(c, k):
    """C(1024, 512) is about 10^306: the plain binomial ratio overflows floats, the product
    form must not. Python's integers give the exact value to compare with."""
    n = 1024
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    value = pass_at_k(n, c, k)
    assert math.isfinite(value) and 0.0 <= value <= 1.0
    assert value == pytest.approx(float(exact), abs=1e-9)


def test_pass_at_1_is_the_mean_accuracy():
    counts = [(16, 0), (16, 3), (16, 16), (16, 7)]
    assert mean_pass_at_k(counts, 1) == pytest.approx((0 + 3 + 16 + 7) / 64)


def test_pass_at_k_rises_with_k():
    values = pass_at_ks([(64, 1), (64, 5), (64, 0)], report_ks(64))
    ordered = [values[k] for k in sorted(values)]
    assert ordered == sorted(ordered)
    assert values[64] == pytest.approx(2 / 3)  # two of three problems solved at least once


@pytest.mark.parametrize(
    ("n", "ks"),
    [(1, [1]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]), (1024, [2**i for i in range(11)])],
)
def test_report_ks(n, ks):
    assert report_ks(n) == ks


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_invalid_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_needs_problems():
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 1)


# ---- the pass@k plot (aepo plot --passk) ----


def _write_run(folder, counts_by_benchmark, n, temperature):
    from aepo.eval.report import summarize, write_results

    records = [
        {"benchmark": name, "row": row, "n": n, "correct": c}
        for name, counts in counts_by_benchmark.items()
        for row, c in enumerate(counts, start=1)
    ]
    header = {
        "model": str(folder),
        "backend": "hf",
        "sampling": {
            "n": n,
            "temperature": temperature,
            "top_p": 0.95,
            "max_tokens": 64,
            "seed": 0,
        },
    }
    folder.mkdir(parents=True)
    results = summarize(
        records,
        list(counts_by_benchmark),
        header=header,
        expected_problems={k: len(v) for k, v in counts_by_benchmark.items()},
    )
    return write_results(results, folder)[0], results


def test_plot_passk_draws_one_curve_per_run_on_a_log2_axis(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from aepo.plot.passk import plot_passk

    first, first_results = _write_run(
        tmp_path / "grpo", {"aime24": [0, 1, 4], "math500": [8, 2]}, 8, 1.0
    )
    second, _ = _write_run(tmp_path / "aepo", {"aime24": [2, 2, 2], "math500": [8, 8]}, 16, 0.6)

    drawn = {}
    original_savefig = Figure.savefig

    def capture(self, *args, **kwargs):
        drawn["axes"] = [axis for axis in self.axes if axis.get_visible()]
        return original_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    out = plot_passk([first, second.parent], tmp_path / "plots" / "passk.png")

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [axis.get_title() for axis in drawn["axes"]]
    assert titles == ["AIME24", "MATH500", "Average"]
    for axis in drawn["axes"]:
        assert axis.get_xscale() == "log"
        assert axis.xaxis.get_transform().base == 2
        assert [line.get_label() for line in axis.get_lines()] == ["grpo (T=1.0)", "aepo (T=0.6)"]
    grpo_aime = drawn["axes"][0].get_lines()[0]
    assert list(grpo_aime.get_xdata()) == [1, 2, 4, 8]
    expected = [100 * first_results["benchmarks"]["aime24"]["pass@k"][str(k)] for k in (1, 2, 4, 8)]
    assert list(grpo_aime.get_ydata()) == pytest.approx(expected)
    aepo_average = drawn["axes"][2].get_lines()[1]
    assert list(aepo_average.get_xdata()) == [1, 2, 4, 8, 16]


def test_plot_passk_labels_and_errors(tmp_path):
    from aepo.plot.passk import plot_passk

    run, _ = _write_run(tmp_path / "run", {"gsm8k": [1, 0]}, 4, 1.0)
    out = plot_passk([run], tmp_path / "one.png", labels=["mine"])
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="labels"):
        plot_passk([run], tmp_path / "x.png", labels=["a", "b"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        plot_passk([tmp_path / "nowhere" / "results.json"], tmp_path / "x.png")
    (tmp_path / "other.json").write_text('{"scalars": []}')
    with pytest.raises(ValueError, match="not an aepo eval results file"):
        plot_passk([tmp_path / "other.json"], tmp_path / "x.png")


def test_aepo_plot_passk_command(tmp_path, capsys):
    from aepo.cli import main

    first, _ = _write_run(tmp_path / "grpo", {"gsm8k": [1, 0, 4]}, 4, 1.0)
    second, _ = _write_run(tmp_path / "aepo", {"gsm8k": [2, 2, 4]}, 4, 1.0)
    out = tmp_path / "curves.png"
    assert (
        main(
            ["plot", "--passk", str(first), str(second), "--labels", "GRPO", "AEPO", "-o", str(out)]
        )
        == 0
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert str(out) in capsys.readouterr().out


def test_plot_command_reports_a_missing_results_file_without_a_traceback(tmp_path, capsys):
    from aepo.cli import main

    missing = tmp_path / "nowhere.json"
    assert main(["plot", "--passk", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aepo plot: ") and str(missing) in err and "Traceback" not in err
