"""simulations.benchmark_seeds: per-seed accuracies and differences from a results file."""

from simulations.benchmark_seeds import render


def test_rows_are_listed_per_seed_with_their_difference_to_the_reference():
    run = lambda acc: {"full_probe_acc": acc}  # noqa: E731
    results = {"seeds": {
        "0": {"runs": {"small-cnn": {"CoOpt (aligned)": run(0.80), "single:a": run(0.81), "BYOL": run(0.70)}}},
        "1": {"runs": {"small-cnn": {"CoOpt (aligned)": run(0.90), "single:b": run(0.85), "random init": {}}}},
    }}
    text = render(results, "small-cnn", "CoOpt (aligned)")
    assert "| CoOpt (aligned) | 80.00 | 90.00 |  |  |" in text
    assert "| best single | 81.00 (a) | 85.00 (b) | +1.00 / -5.00 | -2.00 |" in text
    assert "| BYOL | 70.00 |  | -10.00 | -10.00 |" in text
    assert "random init" not in text  # no probe, no row
