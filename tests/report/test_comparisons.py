"""Comparisons across a whole report (data.comparisons), from run records written to disk: records of the fixture's
lstm run with the model, seed, length and outcome changed, so that the truth is known. Two models with the same
outcome distribution must rarely be told apart; a large difference over 10 seeds must be found; 3 seeds say 'n too
small'; runs that stop early are compared on solving, not on final values."""

import copy
import json

import numpy as np
import pytest

from seqbench.harness.report import data

STEPS = 100  # every run's budget
CLAIMS = ("no clear difference", "n too small")  # verdicts that claim nothing


@pytest.fixture(scope="module")
def template(results):
    """The summary.json of a completed lstm run on the adding task (its config inside)."""
    for path in sorted((results / "sweep").glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if summary["model"] == "lstm" and summary["task"] == "adding":
            return summary
    raise AssertionError("the fixture has no lstm run on adding")


def write_run(root, template, model, length, seed, loss, accuracy, solved_step=None, early_stop=False):
    """One completed run's record (summary.json, config.json, one metrics row) with these final values on both sets."""
    summary = copy.deepcopy(template)
    config = summary["config"]
    config["model"]["name"], config["task"]["length"], config["seed"], config["data_seed"] = model, length, seed, seed
    config["train"].update(steps=STEPS, early_stop=early_stop)
    run_id = f"{model}-{length}-{seed}-{int(early_stop)}"
    stopped = solved_step if early_stop and solved_step is not None else STEPS
    summary.update(run_id=run_id, model=model, seed=seed, status="completed", solved_step=solved_step,
                   diverged_step=None, steps_done=stopped)
    summary["final"] = {k: None for k in summary["final"]} | {"eval_loss": loss, "eval_accuracy": accuracy,
                                                              "test_loss": loss, "test_accuracy": accuracy}
    folder = root / run_id
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval_loss": loss}) + "\n")


def solve_step(rng, rate, scale):
    """A solved step (geometric, mean `scale`) with probability `rate` within the budget, else None."""
    step = int(rng.geometric(1 / scale))
    return step if rng.random() < rate and step < STEPS else None


def test_models_with_the_same_outcomes_are_rarely_told_apart(template, tmp_path):
    rng = np.random.default_rng(0)
    for length in range(8, 20):  # 12 configurations: 8 of fixed length, 4 stopping early
        early = length >= 16
        for seed in range(10):
            difficulty = rng.normal(0, 1)  # shared by the two models: what pairing by seed removes
            for model in ("lstm", "gru"):
                loss = float(np.exp(-2 + difficulty + rng.normal(0, 0.5)))
                accuracy = float(np.clip(rng.beta(20, 10) + 0.05 * difficulty, 0, 1))
                write_run(tmp_path, template, model, length, seed, loss, accuracy, solve_step(rng, 0.6, 30), early)
    comp = data.load(tmp_path).comparisons
    assert len(comp) == 8 * 2 + 4 * 2  # loss and accuracy; solve rate and steps to solve
    assert set(comp.metric[comp.length >= 16]) == {"solve rate", "steps to solve"}
    assert set(comp.test) == {"sign-flip", "sign-flip (log loss)", "Fisher exact", "log-rank (permutation)"}
    claims = ~comp.verdict.isin(CLAIMS)
    assert claims.sum() <= 0.05 * len(comp), comp[claims]
    assert (comp.p_adjusted >= comp.p).all() and comp.p.between(0, 1).all()
    assert (comp.smallest_p < 0.05).all()  # 10 against 10 seeds: every test could have found a difference


def test_a_large_difference_over_10_seeds_is_found_and_3_seeds_are_too_few(template, tmp_path):
    rng = np.random.default_rng(1)
    for length, seeds, early in ((8, 10, False), (9, 3, False), (10, 10, True)):
        for seed in range(seeds):
            difficulty = rng.normal(0, 1)
            for model, better in (("lstm", True), ("gru", False)):
                loss = float(np.exp(-2 + difficulty + rng.normal(0, 0.3) - (2.3 if better else 0)))  # 10x lower
                accuracy = float(np.clip(0.5 + 0.1 * difficulty + rng.normal(0, 0.05) + (0.3 if better else 0), 0, 1))
                solved = solve_step(rng, 1.0, 10) if better else None  # lstm solves early, gru never
                write_run(tmp_path, template, model, length, seed, loss, accuracy, solved or (5 if better else None),
                          early)
    comp = data.load(tmp_path).comparisons.set_index(["length", "metric"])
    verdicts = comp.verdict.to_dict()
    assert verdicts[8, "final loss"] == "lstm lower" and verdicts[8, "final accuracy"] == "lstm higher"
    loss = comp.loc[(8, "final loss")]
    assert loss.hi < 1 and loss.estimate == pytest.approx(0.1, rel=0.3)  # A/B: 10 times lower
    assert verdicts[9, "final loss"] == verdicts[9, "final accuracy"] == "n too small"
    assert comp.loc[(9, "final loss"), "smallest_p"] == 0.25 and comp.loc[(9, "final loss"), "p"] == 0.25
    assert verdicts[10, "solve rate"] == "lstm solves more often"
    assert verdicts[10, "steps to solve"] == "lstm solves sooner"
    assert (10, "final loss") not in verdicts  # stopped at different steps: final values are not compared
