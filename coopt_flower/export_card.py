"""The dataset card (``README.md``) of an exported optimized dataset.

A card says what a recipient needs to reuse the dataset without asking: where the images
came from, which public prototypes made the targets and how well each aligned to the
reference, the seed, the checksums of the round and of the export, how to load it, and a
licence section the publisher must fill in (the images' licence is theirs to state; the
targets are derived from them and from the prototypes' weights).

The card is a pure function of the round's manifest and the export's info, so the same
export always gets the same card.
"""

from __future__ import annotations

from typing import Any

from coopt_flower.manifest import Manifest

PAPER = "https://arxiv.org/abs/2505.14117"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _number(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def prototypes_table(manifest: Manifest) -> list[str]:
    """Markdown rows: every participant, its prototype, uniform value and residuals."""
    reference = manifest.reference
    rows = ["| participant | prototype | encodes with | output dim | samples | uniform value "
            "| residual on S | held-out residual | ridge alpha |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for p in manifest.participants:
        name = p.name + (" (reference)" if p.name == reference else "") + (" (failed)" if p.failed else "")
        rows.append(f"| {name} | `{p.prototype}` | {p.encoder} | {p.output_dim} "
                    f"| {p.num_samples} | {_number(p.uniform_value)} "
                    f"| {_number(p.fit_residual, 3)} | {_number(p.holdout_residual, 3)} "
                    f"| {p.alpha} |")
    return rows


def loading_section(info: dict[str, Any]) -> list[str]:
    """How to load this export, with and without coopt-flower."""
    if info["format"] == "hf":
        snippet = ["```python", "import datasets", "",
                   'ds = datasets.load_dataset("THIS_FOLDER", split="train").with_format("numpy")',
                   '# or, memory-mapped without a conversion: the same rows',
                   'ds = datasets.load_from_disk("THIS_FOLDER/arrow").with_format("numpy")',
                   'image, target = ds[0]["image"], ds[0]["target"]  # uint8 (H, W, 3), '
                   f'({info["target_dim"]},) stored as {info["target_dtype"]}', "```"]
    else:
        ext = info["image_extension"]
        decode = "" if info["image_format"] == "raw" else '.decode("rgb8")'
        first, last = info["shards"][0], info["shards"][-1]
        pattern = first if first == last else f"{first[:-10]}{{{first[-10:-4]}..{last[-10:-4]}}}.tar"
        snippet = ["```python", "import webdataset as wds", "",
                   f'ds = wds.WebDataset("THIS_FOLDER/{pattern}", shardshuffle=False){decode}'
                   f'.to_tuple("{ext}", "target.npy", "json")',
                   "image, target, meta = next(iter(ds))  # uint8 (H, W, 3), "
                   f'{info["target_dtype"]} ({info["target_dim"]},), '
                   '{"sample_id", "owner", "prototype"}', "```"]
    return snippet + ["", "Train a student on it with coopt-flower (any architecture it knows):", "",
                      "```bash", "coopt train --dataset THIS_FOLDER --arch resnet18-small --epochs 10 --out student/",
                      "```"]


def render_card(manifest: Manifest, info: dict[str, Any]) -> str:
    """``README.md`` of an export (Hugging Face dataset-card layout: YAML header, Markdown)."""
    settings = manifest.settings
    source, n = manifest.source, int(manifest.num_samples)
    reference = manifest.reference
    ref_proto = manifest.reference_prototype
    image = {"png": "PNG (lossless: the exact pixels the prototypes encoded)",
             "jpeg": f"JPEG, quality {info.get('jpeg_quality')} (lossy)",
             "raw": "raw uint8 arrays (H, W, 3)"}[info["image_format"]]
    licence = info.get("source_license")
    lines = [
        "---",
        *([f"license: {licence}"] if licence else
          ["# Set the licence before sharing: see the Licence section below.", "license: unknown"]),
        f"pretty_name: CoOpt optimized dataset of {source}",
        "tags: [coopt, knowledge-distillation, representation-learning, optimized-dataset]",
        "task_categories: [image-feature-extraction]",
        f"size_categories: [{_size_category(n)}]",
        *(["configs:", "- config_name: default", "  data_files:", "  - split: train",
           "    path: data/train-*.parquet"] if info["format"] == "hf" else []),
        "---",
        "",
        f"# CoOpt optimized dataset: `{source}`, {n} samples",
        "",
        f"Images of `{source}` with one **aligned target** each: a {info['target_dim']}-dimensional "
        "feature from a public pretrained prototype, mapped onto the space of the most uniform "
        "prototype (the reference) with a ridge map fitted on a shared subset. Train any "
        "architecture to predict the targets (e.g. 1 - cos to the per-dimension z-scored target) "
        f"to get a pretrained backbone without labels: CoOpt, [arXiv:2505.14117]({PAPER}).",
        "",
        "## Contents",
        "",
        "| | |",
        "|---|---|",
        f"| format | {'Hugging Face `datasets` (save_to_disk)' if info['format'] == 'hf' else 'WebDataset tar shards'} |",
        f"| samples | {n} |",
        f"| images | {image} |",
        f"| targets | {info['target_dim']} x {info['target_dtype']} |",
        "| per sample | " + ("`image`, `target`, `sample_id`, `owner`, `prototype`" if info["format"] == "hf"
                           else f"`KEY.{info['image_extension']}`, `KEY.target.npy`, `KEY.json` "
                                "(`sample_id`, `owner`, `prototype`)") + " |",
        f"| shards | {len(info['shards']) or '-'} |",
        "",
        "`sample_id` is the sample's index in the source; `owner` indexes the participants below "
        "(who encoded the sample). Rows are sorted by `sample_id`.",
        "",
        "## How it was made",
        "",
        f"- source: `{source}`; round {manifest.round}; seed {manifest.seed}",
        f"- shared subset S: {manifest.shared_size} images, "
        "encoded by every participant to score and align the prototypes",
        f"- reference (lowest uniform value): **{reference}** (`{ref_proto}`); refinement "
        f"`{manifest.refinement}`",
        f"- prototype input size {settings.get('image_size', '-')} px, target dimension "
        f"{manifest.target_dim} ({manifest.target_dtype})",
        f"- samples missing (failed participants, `on-failure = drop`): {manifest.missing_samples}",
        f"- produced by coopt-flower {info.get('coopt_flower_version', '?')}: `coopt export "
        f"{info['round']['name']} --format {info['format']} --image-format {info['image_format']}`",
        "",
        "### Prototypes",
        "",
        *prototypes_table(manifest),
        "",
        "Uniform value: lower is more uniform (better). Residuals: the fraction of the reference's "
        "variance on S left unexplained by the participant's aligned targets (1 - R^2; 0 is perfect).",
        "",
    ]
    failures = manifest.failures
    if failures:
        lines += ["### Participants that failed", ""]
        lines += [f"- {f.get('participant', '?')} ({f.get('step', '?')}): {f.get('reason', '?')}" for f in failures]
        lines += [""]
    lines += ["## Loading", "", *loading_section(info), "",
              "## Checksums (sha256)", "",
              f"Round `{info['round']['name']}` (`coopt_manifest.json` is its manifest, sha256 "
              f"`{info['round']['manifest_sha256']}`):", ""]
    lines += [f"- `{name}`: `{meta['sha256']}`" for name, meta in sorted(manifest.files.items())]
    lines += ["", "This export (also in `coopt_export.json`):", ""]
    lines += [f"- `{name}`: `{digest}`" for name, digest in sorted(info["files"].items())]
    lines += ["", "## Licence", ""]
    if licence:
        lines.append(f"The images are `{source}`'s, under its licence, `{licence}` (from the source's own "
                     "metadata); the targets are derived from them and from the prototypes' public "
                     "weights, whose licences are listed by their publishers.")
    else:
        lines.append("**To be filled in by the publisher** (and set `license:` in the header above): the "
                     f"images keep the licence of `{source}`, whose metadata names none; the targets are "
                     "derived from them and from the prototypes' public weights, whose licences are "
                     "listed by their publishers.")
    lines += ["", "## Reference", "", f"CoOpt, collaborative data optimization: [arXiv:2505.14117]({PAPER}).", ""]
    if info.get("source_citation"):
        lines += [f"The images, `{source}`:", "", "```bibtex", info["source_citation"].strip(), "```", ""]
    return "\n".join(lines)
