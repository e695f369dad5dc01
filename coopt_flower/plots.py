"""Pictures for the reports: one function per plot, each returning PNG bytes.

A round's plots (:func:`round_plots`) are written into the round's temporary directory and
published with it, next to ``report.md``, which links them; the plot across rounds
(:func:`rounds_plot`) sits next to ``summary.md``. Every function takes what the reports are
made from (a round's :class:`~coopt_flower.manifest.Manifest`, the run's progress), so a plot
can be redrawn from a published round without rerunning it.

matplotlib runs with the Agg backend (no display; safe in Flower's worker processes).
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable

from coopt_flower.manifest import Manifest, ParticipantRecord

FIGURE_SIZE = (7.0, 4.0)  # inches
DPI = 100                 # so every plot is 700 x 400 pixels
REFERENCE_COLOR, OTHER_COLOR, FAILED_COLOR = "#d62728", "#1f77b4", "#7f7f7f"
LABEL_BOX = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8}  # text over lines

UNIFORM_VALUES_PNG = "uniform_values.png"
HOLDOUT_RESIDUALS_PNG = "holdout_residuals.png"
SAMPLES_PNG = "samples_per_participant.png"
LABELS_PNG = "labels_per_participant.png"
ROUNDS_PNG = "rounds.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    """The figure as PNG bytes, at a fixed size; the figure is closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _short(prototype: str) -> str:
    """A prototype spec without its family prefix (``onnx:open-nsfw`` -> ``open-nsfw``)."""
    return str(prototype).split(":")[-1]


def _labels(participants: list[ParticipantRecord], reference: str) -> list[str]:
    """``p0`` (and "reference" or "failed") over its prototype."""
    def mark(p):
        return " (reference)" if p.name == reference else " (failed)" if p.failed else ""
    return [f"{p.name}{mark(p)}\n{_short(p.prototype)}" for p in participants]


def _bars(participants: list[ParticipantRecord], values: list[float], reference: str, *, title: str,
          ylabel: str, value_format: str, note: str = ""):
    """A bar per participant, the reference's in red (and named so in its tick label: no legend
    to overlap a bar), each bar labelled with its value."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    colors = [REFERENCE_COLOR if p.name == reference else
              FAILED_COLOR if p.failed else OTHER_COLOR for p in participants]
    bars = axes.bar(range(len(values)), values, color=colors)
    axes.bar_label(bars, labels=[value_format.format(v) for v in values], padding=2, fontsize=9)
    axes.set_xticks(range(len(values)), _labels(participants, reference), fontsize=9)
    axes.set_xlabel("participant (prototype)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.margins(y=0.15)  # room for the value labels
    if note:
        figure.text(0.01, 0.01, note, fontsize=8, color="#555555")
    figure.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    return figure


def uniform_values_plot(m: Manifest) -> bytes:
    """Uniform value per participant's prototype on S; the reference (lowest) in red."""
    participants = m.participants
    figure = _bars(participants, [p.uniform_value for p in participants], m.reference,
                   title=f"Round {m.round}: uniform value of each prototype on S "
                         f"({m.shared_size} images)",
                   ylabel="uniform value (log; lower = more uniform)", value_format="{:.3f}",
                   note="The most uniform prototype is the reference every participant is aligned to.")
    axes = figure.axes[0]
    low = min(p.uniform_value for p in participants)
    axes.set_ylim(top=0.0, bottom=low * 1.15)  # values are <= 0; bars hang down from 0
    return _png(figure)


def holdout_residuals_plot(m: Manifest) -> bytes:
    """Held-out residual of each participant's alignment map (1 - R^2 on held-out S)."""
    participants = m.participants
    figure = _bars(participants, [p.holdout_residual for p in participants], m.reference,
                   title=f"Round {m.round}: alignment to the reference, held-out part of S",
                   ylabel="held-out residual (1 - R², 0 = perfect)", value_format="{:.3f}",
                   note="The reference maps to itself (residual 0).")
    figure.axes[0].set_ylim(bottom=0.0)
    return _png(figure)


def samples_plot(m: Manifest) -> bytes:
    """Samples each participant encoded into the dataset."""
    participants = m.participants
    figure = _bars(participants, [p.num_samples for p in participants], m.reference,
                   title=f"Round {m.round}: samples per participant "
                         f"({m.num_samples} in the dataset)",
                   ylabel="samples encoded (images)", value_format="{:,.0f}",
                   note=f"Missing from the dataset: {m.missing_samples} samples.")
    figure.axes[0].set_ylim(bottom=0.0)
    return _png(figure)


def has_label_counts(m: Manifest) -> bool:
    """Whether the source's labels were known, so each participant's class histogram is."""
    return any(p.label_counts for p in m.participants)


def labels_plot(m: Manifest) -> bytes:
    """How many samples of each class each participant holds (labels only simulate who holds
    what: the partitioner's doing)."""
    import numpy as np

    plt = _pyplot()
    rows = [p for p in m.participants if p.label_counts]
    counts = np.array([p.label_counts for p in rows], dtype=float)
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    image = axes.imshow(counts, aspect="auto", cmap="viridis")
    axes.set_yticks(range(len(rows)), [f"{p.name} ({_short(p.prototype)})" for p in rows])
    axes.set_xticks(range(counts.shape[1]))
    axes.set_xlabel("class")
    partitioner = m.settings.get("partitioner", "iid")
    axes.set_title(f"Round {m.round}: samples per class held by each participant ({partitioner})")
    if counts.size <= 200:  # numbers only where they stay legible
        for (row, col), value in np.ndenumerate(counts):
            axes.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                      color="white" if value < counts.max() / 2 else "black")
    figure.colorbar(image, ax=axes, label="samples")
    figure.tight_layout()
    return _png(figure)


ROUND_PLOTS: dict[str, tuple[str, Callable[[Manifest], bytes]]] = {
    UNIFORM_VALUES_PNG: ("Uniform value per prototype (reference in red)", uniform_values_plot),
    HOLDOUT_RESIDUALS_PNG: ("Held-out residual per participant", holdout_residuals_plot),
    SAMPLES_PNG: ("Samples per participant", samples_plot),
    LABELS_PNG: ("Samples per class of each participant", labels_plot),
}


def round_plots(manifest: Manifest) -> dict[str, bytes]:
    """Every plot of one round: file name -> PNG bytes (see :data:`ROUND_PLOTS`); the class
    histogram only when the source has labels."""
    return {name: draw(manifest) for name, (_, draw) in ROUND_PLOTS.items()
            if name != LABELS_PNG or has_label_counts(manifest)}


def reference_value(entry: dict[str, Any]) -> float:
    """The reference's uniform value in one round's progress entry (NaN when unknown)."""
    if entry.get("reference") == "student":
        return float((entry.get("student_in") or {}).get("uniform_value", math.nan))
    for p in entry.get("participants", []):
        if p["name"] == entry.get("reference"):
            return float(p["uniform_value"])
    return math.nan


def _reference_name(entry: dict[str, Any]) -> str:
    return "student" if entry.get("reference") == "student" else \
        _short(entry.get("reference_prototype", "?"))


def rounds_plot(progress: dict[str, Any]) -> bytes:
    """Across rounds: the student's linear-probe accuracy and the reference's uniform value."""
    plt = _pyplot()
    entries = sorted(progress["rounds"].items(), key=lambda kv: int(kv[0]))
    rounds = [int(key) for key, _ in entries]
    accuracy = [((e.get("student") or {}).get("probe_accuracy")) for _, e in entries]
    figure, (acc_axes, ref_axes) = plt.subplots(1, 2, figsize=FIGURE_SIZE)

    trained = [(r, 100.0 * a) for r, a in zip(rounds, accuracy) if a is not None]
    if trained:
        acc_axes.plot(*zip(*trained), marker="o", color=OTHER_COLOR)
        for r, a in trained:
            acc_axes.annotate(f"{a:.1f}", (r, a), textcoords="offset points", xytext=(0, 8),
                              ha="center", fontsize=8, bbox=LABEL_BOX)
        acc_axes.margins(y=0.2)
    else:
        acc_axes.text(0.5, 0.5, "no student probed\n(train-epochs = 0\nor probe-data empty)",
                      ha="center", va="center", transform=acc_axes.transAxes, fontsize=9)
        acc_axes.set_yticks([])
    acc_axes.set_title("Student: linear-probe accuracy", fontsize=10)
    acc_axes.set_ylabel("probe accuracy (%)")

    values = [reference_value(e) for _, e in entries]
    ref_axes.plot(rounds, values, marker="o", color=REFERENCE_COLOR)
    for r, v in zip(rounds, values):
        ref_axes.annotate(f"{v:.3f}", (r, v), textcoords="offset points", xytext=(0, 8),
                          ha="center", fontsize=8, bbox=LABEL_BOX)
    ref_axes.margins(y=0.2)
    # Which model was the reference goes under its round, where long names have room.
    ref_axes.set_xticks(rounds, [f"{r}\n{_reference_name(e)}" for r, (_, e) in zip(rounds, entries)],
                        fontsize=8)
    ref_axes.set_title("Reference: uniform value on S", fontsize=10)
    ref_axes.set_ylabel("uniform value (log; lower = better)")
    ref_axes.set_xlabel("round (reference model)")

    acc_axes.set_xticks(rounds)
    acc_axes.set_xlabel("round")
    for axes in (acc_axes, ref_axes):
        axes.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
        axes.grid(alpha=0.3)
    figure.suptitle(f"CoOpt across {len(rounds)} round(s), refinement "
                    f"{progress.get('refinement', '?')}", fontsize=11)
    figure.tight_layout()
    return _png(figure)


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels from a PNG's header; raises ``ValueError`` for non-PNGs."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
