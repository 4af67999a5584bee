"""``aepo demo --passk`` end to end on a small scale: the files, their structure, the table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aepo.backends.local import passk_demo
from aepo.backends.local.passk_demo import findings, format_passk_table, run_passk_demo
from aepo.cli import main
from aepo.eval.passk import pass_at_k

TARGETS = [0.25, 0.5, 1.0]
SEEDS = [0, 1]
PROMPTS, N = 6, 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("passk")
    small = {
        "prompts_per_step": 4,
        "samples_per_prompt": 4,
        "mini_batches": 2,
        "warm_start": {"steps": 20, "batch_size": 32},
    }
    result = run_passk_demo(
        out,
        targets=TARGETS,
        steps=2,
        seeds=SEEDS,
        eval_prompts=PROMPTS,
        samples=N,
        cache_dir=tmp_path_factory.mktemp("cache"),
        progress=False,
        trainer_overrides=small,
    )
    return out, result


def test_writes_json_and_figures(demo):
    out, result = demo
    assert json.loads((out / "passk.json").read_text()) == result
    for png in ("passk.png", "passk_vs_target.png"):
        assert (out / png).stat().st_size > 10_000
    assert result["ks"] == [1, 2, 4, 8] and result["n"] == N and result["seeds"] == SEEDS


def test_every_run_of_every_seed_with_its_target(demo):
    _, result = demo
    names = ["base", "grpo", *(f"aepo_H*={t:g}" for t in TARGETS)]
    runs = result["runs"]
    assert [(r["seed"], r["name"]) for r in runs] == [(s, n) for s in SEEDS for n in names]
    assert [r["target"] for r in runs[: len(names)]] == [None, None, *TARGETS]
    assert [r["algorithm"] for r in runs[: len(names)]] == ["base", "grpo", "aepo", "aepo", "aepo"]
    for run in runs:
        assert (run["train"] is None) == (run["name"] == "base")
        if run["train"] is not None:
            assert run["train"]["steps"] == 2 and run["train"]["target"] == run["target"]
    # each trained run's config differs from GRPO's only in the algorithm and the target
    from aepo.backends.local.metrics_log import read_metrics

    for run in runs[1:]:
        if run["train"] is not None:
            assert len(read_metrics(run["run_dir"])) == 2


def test_pass_at_k_is_the_unbiased_estimate_of_the_counts(demo):
    _, result = demo
    for run in result["runs"]:
        counts = run["correct"]
        assert len(counts) == PROMPTS and all(0 <= c <= N for c in counts)
        curve = [run["pass@k"][str(k)] for k in result["ks"]]
        assert curve == sorted(curve)  # more tries never find less
        for k in result["ks"]:
            expected = np.mean([pass_at_k(N, c, k) for c in counts])
            assert run["pass@k"][str(k)] == pytest.approx(expected)


def test_median_rows_are_medians_over_seeds(demo):
    _, result = demo
    assert [row["name"] for row in result["median"]] == [r["name"] for r in result["runs"][:5]]
    for row in result["median"]:
        per_seed = [r["pass@k"]["1"] for r in result["runs"] if r["name"] == row["name"]]
        assert row["seeds"] == SEEDS
        assert row["pass@k"]["1"] == pytest.approx(float(np.median(per_seed)))


def test_passk_scalars_reach_tensorboard(demo):
    from aepo.plot.curves import load_scalars

    _, result = demo
    for run in result["runs"][:2]:
        steps, values = load_scalars(run["run_dir"], tags=("eval/pass@k",))["eval/pass@k"]
        assert list(steps) == result["ks"]
        assert list(values) == pytest.approx([run["pass@k"][str(k)] for k in result["ks"]])


def test_table_and_findings_name_every_run(demo):
    _, result = demo
    table = format_passk_table(result)
    for name in ("base", "grpo", "aepo_H*=0.25", "aepo_H*=1"):
        assert f"| {name} " in table
    assert "pass@8" in table
    assert len(findings(result)) == 2 + len(TARGETS) + 1


def curve(pass1: float, top: float) -> dict[str, float]:
    return {"1": pass1, "1024": top}


def test_findings_on_the_papers_pattern_and_its_opposite():
    def result(grpo, aepo_rows):
        median = [
            {"name": "base", "algorithm": "base", "target": None, "pass@k": curve(0.30, 1.0)},
            {"name": "grpo", "algorithm": "grpo", "target": None, "pass@k": grpo},
        ]
        median += [
            {"name": f"aepo_H*={t}", "algorithm": "aepo", "target": t, "pass@k": c}
            for t, c in aepo_rows
        ]
        return {"ks": [1, 1024], "median": median}

    paper = result(
        curve(0.60, 0.99),
        [(0.25, curve(0.55, 0.99)), (0.5, curve(0.61, 1.0)), (1.0, curve(0.40, 1.0))],
    )
    assert [ok for ok, _ in findings(paper)] == [True, True, False, True, False, True]
    flat = result(curve(0.25, 1.0), [(t, curve(0.25 + t / 10, 1.0)) for t in (0.25, 0.5, 1.0)])
    assert [ok for ok, _ in findings(flat)] == [False, False, True, True, True, False]
    zigzag = result(
        curve(0.85, 0.99),
        [(t, curve(p, 1.0)) for t, p in ((0.25, 0.79), (0.5, 0.84), (0.75, 0.82), (1.0, 0.83))],
    )
    assert findings(zigzag)[-1][0] is False  # the peak is inner, but it does not fall after it


def test_cli_passk_flag_runs_the_passk_demo(monkeypatch, tmp_path, capsys, demo):
    seen = {}

    def fake(output_dir, **kwargs):
        seen.update(kwargs, output_dir=output_dir)
        return demo[1]

    monkeypatch.setattr(passk_demo, "run_passk_demo", fake)
    argv = ["demo", "--passk", "--output-dir", str(tmp_path), "--seeds", "3", "4"]
    assert main([*argv, "--targets", "0.5", "--no-progress"]) == 0
    assert seen["seeds"] == [3, 4] and seen["targets"] == [0.5]
    assert seen["steps"] == passk_demo.PASSK_STEPS and seen["samples"] == 1024
    printed = capsys.readouterr().out
    assert "| base " in printed and "GRPO pass@1" in printed


def test_compare_runs_entrocraft_beside_aepo_at_every_target(tmp_path, monkeypatch, capsys):
    from aepo.backends.local.metrics_log import read_metrics

    result = run_passk_demo(
        tmp_path / "out",
        targets=[0.5, 1.0],
        steps=2,
        seeds=[0],
        eval_prompts=PROMPTS,
        samples=N,
        cache_dir=tmp_path / "cache",
        progress=False,
        trainer_overrides={
            "prompts_per_step": 4,
            "samples_per_prompt": 4,
            "mini_batches": 2,
            "warm_start": {"steps": 20, "batch_size": 32},
        },
        compare=["entrocraft"],
    )
    names = ["base", "grpo", "aepo_H*=0.5", "aepo_H*=1", "entrocraft_H*=0.5", "entrocraft_H*=1"]
    assert [r["name"] for r in result["runs"]] == names
    assert [r["algorithm"] for r in result["median"]][-2:] == ["entrocraft", "entrocraft"]
    assert result["compare"] == ["entrocraft"]
    for run in result["runs"][-2:]:
        history = read_metrics(run["run_dir"])
        assert run["train"]["target"] == run["target"]
        assert all(h["aepo/target_entropy"] == run["target"] for h in history)
        assert all("aepo/entrocraft_mode" in h for h in history), "Entrocraft trained"
    table = format_passk_table(result)
    assert "| entrocraft_H*=1 " in table
    # the findings judge AEPO's rows only
    assert len(findings(result)) == 2 + 2
    with pytest.raises(ValueError, match="--compare aepo"):
        run_passk_demo(tmp_path / "bad", targets=[0.5], compare=["aepo"])
    # the CLI hands --compare on
    seen = {}
    monkeypatch.setattr(passk_demo, "run_passk_demo", lambda out, **kw: seen.update(kw) or result)
    argv = ["demo", "--passk", "--output-dir", str(tmp_path), "--compare", "entrocraft"]
    assert main([*argv, "--no-progress"]) == 0
    assert seen["compare"] == ["entrocraft"]
    assert "| entrocraft_H*=0.5 " in capsys.readouterr().out


def test_pool_takes_medians_over_every_file_and_trains_nothing(demo, tmp_path, capsys):
    """``--pool``: the runs of two results (another machine's, here this one's shifted) as one
    result whose medians are over both; a run name missing from one file is left out."""
    out, result = demo
    other = json.loads((out / "passk.json").read_text())
    for run in other["runs"]:
        run["pass@k"] = {k: v / 2 for k, v in run["pass@k"].items()}
    other["runs"].append({**other["runs"][-1], "name": "entrocraft_H*=1"})
    other["warm_start"]["path"] = "/elsewhere/warm_start"  # another machine's cache
    (tmp_path / "other.json").write_text(json.dumps(other))
    argv = ["demo", "--pool", str(out / "passk.json"), str(tmp_path / "other.json")]
    assert main([*argv, "--output-dir", str(tmp_path / "pooled")]) == 0
    pooled = json.loads((tmp_path / "pooled" / "passk.json").read_text())
    assert len(pooled["runs"]) == 2 * len(result["runs"]) and pooled["seeds"] == SEEDS * 2
    assert pooled["left_out"] == ["entrocraft_H*=1"]
    for row in pooled["median"]:
        mine = [r["pass@k"] for r in result["runs"] if r["name"] == row["name"]]
        values = [c["4"] for c in mine] + [c["4"] / 2 for c in mine]
        assert row["pass@k"]["4"] == pytest.approx(float(np.median(values)))
    assert (tmp_path / "pooled" / "passk.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert f"median over {2 * len(SEEDS)} runs from" in printed and "GRPO pass@1" in printed
    assert "left out (not in every pooled file): entrocraft_H*=1" in printed


def test_pool_refuses_results_of_another_experiment_in_one_line(demo, tmp_path, capsys):
    out, _ = demo
    other = json.loads((out / "passk.json").read_text())
    other["n"] = 2 * N
    (tmp_path / "other.json").write_text(json.dumps(other))
    argv = ["demo", "--passk", "--pool", str(out / "passk.json"), str(tmp_path / "other.json")]
    assert main([*argv, "--output-dir", str(tmp_path / "pooled")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "other.json: 'n' is 16" in err and "same experiment" in err
    assert not (tmp_path / "pooled").exists()
    assert main(["demo", "--pool", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: not a readable passk.json" in capsys.readouterr().err
