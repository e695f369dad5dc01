"""The deployment trial of issue 29 ("Faults at the edges"): faults at a real cluster's edges.

On loopback, one SuperLink and two SuperNodes of the project's own deployment
(:class:`deploy.local_cluster.LocalCluster`: TLS and SuperNode authentication on, every
process by PID) run small rounds (60 Fashion-MNIST samples at 32 px, efficientnet-lite0 on the
CPU, 16-d targets) while this script breaks them:

1. ``disk full during publish``: the output directory is a small tmpfs; once round 1 is
   published another program fills it, so round 2 cannot hold the space its publish needs.
   Expected: one line naming the directory and the MiB needed, nothing half-written, and a
   rerun (disk freed) that does what the line says (round 1 kept, round 2 encoded again).
2. ``hostile manifest``: a published round whose manifest names a file outside the dataset
   (absolute path, ``..``, uploaded images elsewhere) or whose data file is a symlink out.
   Expected: ``coopt report``, the loader and ``coopt export`` each refuse it in one line and
   write nothing.
3. ``ServerApp kill``: the ServerApp is SIGKILLed while round 2 writes. Expected: one line
   with the cause and the resume command naming the dead round's temporary directory; the
   resumed run removes it, keeps round 1 byte for byte, and both rounds equal those of case 1.
4. ``key in use``: a second SuperNode starts with the key of one that is online. Expected:
   refused as "key already in use" (not "not registered"), and no key material in any log.
5. ``refused-run retry``: a run too large for its disk (all 60,000 samples on a 4 MiB tmpfs)
   is refused by the pre-flight check; expected: the output directory as it was found, and
   the retry the refusal suggests (lower num-samples) completes.

Every row also counts samples lost (ids of a published round that are not the run's
selection, or listed missing) and leftovers: processes the case started (or the cluster's
per-run apps) still running, hidden temporaries in its directories, mounts. A last row checks
that tearing the cluster down stops every process it started and leaves no mount or temporary
directory. Writes ``DIR/deployment_trial.json`` and ``DIR/deployment_trial.md`` (and, when a
row fails, the cluster's logs in ``DIR/logs/``, as evidence); exits 1 if any row fails.

    python -m simulations.deployment_trial --out-dir simulations/results/deployment-trial

Needs root (tmpfs mounts); about 6-10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from coopt_flower.errors import one_line

#: Small rounds, so each case takes a minute or two (pages of 20: several messages per shard).
RUN_CONFIG = {"num-samples": 60, "shared-size": 16, "image-size": 32, "target-dim": 16, "page-size": 20,
              "seed": 6, "num-server-rounds": 2, "refinement": "static", "reply-timeout-s": 120}
NODES = [{"prototype": "efficientnet-lite0", "device": "cpu", "partition-id": i} for i in range(2)]
ARRAYS = ("targets.npy", "owners.npy", "sample_ids.npy")
RUN_TIMEOUT_S = 600
# Flower's per-run apps exit a moment after their run ends: this long before they count as left.
APP_EXIT_GRACE_S = 30
KEY_MARKERS = ("BEGIN PUBLIC KEY", "PRIVATE KEY", "ecdsa-sha2-nistp384 AAAA")
CASES = ("disk full during publish", "hostile manifest", "ServerApp kill", "key in use", "refused-run retry")


# ---------------------------------------------------------------------------- rows and verdicts
@dataclass
class Row:
    """One case of the trial: what was expected, what happened, and what it cost.

    ``failures`` holds every check that did not hold (empty: the expected outcome was seen);
    ``leftovers`` names what the case left behind (processes, temporaries, mounts).
    """

    case: str
    expected: str
    observed: str = ""
    failures: list[str] = field(default_factory=list)
    samples_lost: int = 0
    leftovers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """A row passes only with every check held, no sample lost and nothing left behind."""
        return not self.failures and self.samples_lost == 0 and not self.leftovers

    def check(self, condition: bool, what: str) -> bool:
        """Record ``what`` as a failure unless ``condition`` holds; returns ``condition``."""
        if not condition:
            self.failures.append(one_line(what, 400))
        return bool(condition)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def verdict_line(row: Row) -> str:
    """``pass``, or ``FAIL`` with the first failed check (or what was lost or left)."""
    if row.passed:
        return "pass"
    why = row.failures[:1] or ([f"{row.samples_lost} samples lost"] if row.samples_lost else row.leftovers[:1])
    return f"FAIL: {why[0]}"


def render_table(rows: list[Row]) -> str:
    """The trial's Markdown table, one row per case."""
    def cell(text: object) -> str:
        return one_line(text, 600, table=True) or "-"

    lines = ["| case | expected | observed | result | samples lost | leftovers |", "|---|---|---|---|---:|---|"]
    for row in rows:
        lines.append(f"| {cell(row.case)} | {cell(row.expected)} | {cell(row.observed)} | {cell(verdict_line(row))} | "
                     f"{row.samples_lost} | {cell('; '.join(row.leftovers) or 'none')} |")
    return "\n".join(lines)


def totals(rows: list[Row]) -> dict[str, int]:
    """Rows failing, samples lost and leftovers over the trial (all 0 is the issue's "done")."""
    return {"rows": len(rows), "failing": sum(not r.passed for r in rows),
            "samples_lost": sum(r.samples_lost for r in rows), "leftovers": sum(len(r.leftovers) for r in rows)}


def render_markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    """The whole report: when and where it ran, the table, the totals, every failed check."""
    t = totals(rows)
    out = [f"# Deployment trial (issue 29, faults at the edges)", "",
           f"Run {meta.get('started', '?')} to {meta.get('finished', '?')} ({meta.get('wall_s', 0):.0f} s) on "
           f"{meta.get('machine', '?')}; load average (1/5/15 min) {meta.get('load_start', '?')} at the start, "
           f"{meta.get('load_end', '?')} at the end.", "",
           f"Command: `{meta.get('command', '')}`", "",
           f"Cluster: one SuperLink and {len(NODES)} SuperNodes on 127.0.0.1, TLS and SuperNode authentication on; "
           f"run config {json.dumps(RUN_CONFIG)} (changes per case in its row).", "",
           render_table(rows), "",
           f"**{t['failing']} of {t['rows']} rows failing, {t['samples_lost']} samples lost, "
           f"{t['leftovers']} leftovers.**"]
    failed = [r for r in rows if r.failures]
    if failed:
        out += ["", "Failed checks:", ""]
        out += [f"- {r.case}: {f}" for r in failed for f in r.failures]
    return "\n".join(out) + "\n"


def exit_code(rows: list[Row]) -> int:
    """0 when every row passes, else 1."""
    return 0 if rows and all(r.passed for r in rows) else 1


# ---------------------------------------------------------------------------- shared checks
def samples_lost(round_dir: Path, num_samples: int, seed: int) -> int:
    """Samples of the run's selection that the published round does not hold (or lists missing)."""
    from coopt_flower.data import select_samples
    from coopt_flower.dataset_format import load_optimized_dataset

    ds = load_optimized_dataset(round_dir, verify=True)
    expected = set(select_samples(len(ds.source), num_samples, seed).tolist())
    held = set(np.asarray(ds.sample_ids).tolist())
    unowned = int((np.asarray(ds.owners) < 0).sum())
    return len(expected - held) + len(ds.manifest.missing_sample_ids) + unowned


def arrays_of(round_dir: Path) -> dict[str, bytes]:
    """The round's data arrays, byte for byte (the manifest holds timings, so it is left out)."""
    return {name: (round_dir / name).read_bytes() for name in ARRAYS}


def leftover_apps(workdir: Path, since: float) -> list[str]:
    """The cluster's per-run apps started since ``since`` (the case's start, epoch seconds: each
    case answers for its own runs) that still run once the runs have had time to end."""
    from deploy.faults import per_run_apps, still_running

    mine = [p for p in per_run_apps(workdir) if p.started is not None and p.started >= since]
    return [f"process {p}, started {time.strftime('%H:%M:%S', time.gmtime(p.started))} UTC, still running "
            f"{APP_EXIT_GRACE_S} s after the case's last run ended" for p in still_running(mine, APP_EXIT_GRACE_S)]


def leftover_temporaries(*directories: Path) -> list[str]:
    from deploy.faults import temporaries

    return [f"temporary {d / t}" for d in directories for t in temporaries(d)]


class Background:
    """``cluster.run_app`` in a thread, so the case can break the run while it goes."""

    def __init__(self, cluster, config: dict[str, Any]) -> None:
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(cluster, config), daemon=True)
        self.thread.start()

    def _run(self, cluster, config) -> None:
        self.result = cluster.run_app(config, timeout_s=RUN_TIMEOUT_S)

    def join(self):
        self.thread.join(RUN_TIMEOUT_S + 120)
        return self.result


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


# ---------------------------------------------------------------------------- case 1: disk full
def case_disk_full(cluster, base: Path, found: dict[str, Any]) -> Row:
    """Round 1 published, then the disk fills: round 2 cannot hold its publish space."""
    from deploy.faults import fill_disk, small_disk

    since = time.time()
    row = Row(CASES[0], "run fails in one line naming the output directory and the MiB needed; nothing "
              "half-written; the advice (round 1 kept, round 2 encoded again) is what the rerun does")
    with small_disk(base / "disk-full", "8m") as disk:
        out = disk / "out"
        config = {**RUN_CONFIG, "output-dir": str(out)}
        run = Background(cluster, config)
        published = wait_for(lambda: (out / "round-001" / "manifest.json").exists(), RUN_TIMEOUT_S)
        filler = fill_disk(disk, 1 << 20) if published else None  # 1 MiB left: the reserve needs 2
        first = run.join()
        row.check(published, "round 1 was never published")
        reason = first.reason if first else "the run did not return"
        row.observed = reason
        row.check(first is not None and first.returncode != 0, f"the run did not fail: {reason}")
        row.check(f"no space left on the device of {out}" in reason, "the line does not name the directory")
        row.check("MiB more needed to publish round-002" in reason, "the line does not say the space needed")
        row.check("round 2 is encoded again" in reason and "round 1 is kept" in reason,
                  "the line does not say what the rerun does")
        row.check("\n" not in reason, "more than one line")
        row.check(not (out / "round-002").exists(), "round-002 exists after the failure")
        row.leftovers += leftover_temporaries(out)
        before = arrays_of(out / "round-001") if published else {}
        mtime = (out / "round-001" / "targets.npy").stat().st_mtime_ns if published else 0
        if filler is not None:
            filler.unlink()
        rerun = cluster.run_app(config, timeout_s=RUN_TIMEOUT_S)
        row.check(rerun.returncode == 0, f"the rerun failed: {rerun.reason}")
        row.check("round 1 already finished" in rerun.output, "the rerun did not keep round 1")
        row.check("CoOpt round 2 done" in rerun.output and (out / "round-002").is_dir(),
                  "the rerun did not encode round 2")
        if published:
            row.check(arrays_of(out / "round-001") == before and
                      (out / "round-001" / "targets.npy").stat().st_mtime_ns == mtime, "the rerun rewrote round 1")
        if rerun.returncode == 0:
            row.samples_lost = sum(samples_lost(out / f"round-00{r}", 60, RUN_CONFIG["seed"]) for r in (1, 2))
            found["uninterrupted"] = {r: arrays_of(out / f"round-00{r}") for r in (1, 2)}
            found["published round"] = shutil.copytree(out / "round-001", base / "published-round-001")
        row.observed += f" | rerun: {'completed' if rerun.returncode == 0 else rerun.reason}, " \
                        f"round 1 {'kept' if 'round 1 already finished' in rerun.output else 'redone'}, round 2 encoded"
        row.leftovers += leftover_temporaries(out) + leftover_apps(cluster.workdir, since)
    return row


# ---------------------------------------------------------------------------- case 2: hostile manifest
def hostile_variants(secret: Path) -> dict[str, tuple[Callable[[Path], None], str]]:
    """Name -> (how to make a copied round hostile, what every reader's refusal must say)."""
    def manifest_edit(change):
        def apply(dataset: Path) -> None:
            path = dataset / "manifest.json"
            manifest = json.loads(path.read_text())
            change(manifest)
            path.write_text(json.dumps(manifest))
        return apply

    def symlink_out(dataset: Path) -> None:
        (dataset / "targets.npy").unlink()
        os.symlink(secret, dataset / "targets.npy")

    images = {"participant": "p0", "prototype": "efficientnet-lite0", "spec": "folder:/x", "first_id": 60000,
              "count": 1, "images": str(secret)}
    return {
        "absolute path": (manifest_edit(lambda m: m["files"].update({str(secret): {"sha256": "0" * 64}})),
                          "not a plain file name inside the dataset"),
        "'..' path": (manifest_edit(lambda m: m["files"].update({"../secret.npy": {"sha256": "0" * 64}})),
                      "not a plain file name inside the dataset"),
        "images outside": (manifest_edit(lambda m: m.update(local_sources=[images])), "not a plain file name"),
        "symlink out": (symlink_out, "a link out of the dataset"),
    }


def coopt(*args: str) -> subprocess.CompletedProcess:
    """The ``coopt`` command line, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "coopt_flower.cli", *args], capture_output=True, text=True,
                          timeout=300)


def refused_by_cli(row: Row, label: str, proc: subprocess.CompletedProcess, match: str) -> None:
    err = proc.stderr.strip()
    row.check(proc.returncode == 1 and match in err and len(err.splitlines()) == 1,
              f"{label}: exit {proc.returncode}, {one_line(err or proc.stdout)}")


def case_hostile_manifest(base: Path, found: dict[str, Any]) -> Row:
    """Every reader refuses a round that points outside itself, and writes nothing."""
    from coopt_flower.dataset_format import DatasetIntegrityError, load_optimized_dataset

    row = Row(CASES[1], "coopt report, the loader and coopt export each refuse every variant (absolute path, "
              "'..', uploaded images outside, symlink out) in one line; the export writes nothing")
    published = found.get("published round")
    if published is None:
        row.check(False, "no published round to tamper with (case 1 did not publish one)")
        return row
    work = base / "hostile"
    work.mkdir()
    secret = work / "secret.npy"
    np.save(secret, np.ones((60, 16), np.float16))
    secret_bytes = secret.read_bytes()
    seen = []
    for name, (make_hostile, match) in hostile_variants(secret).items():
        dataset = shutil.copytree(published, work / name.replace(" ", "-").replace("'", ""))
        make_hostile(dataset)
        refused_by_cli(row, f"{name}: coopt report", coopt("report", str(dataset)), match)
        for verify in (True, False):
            try:
                load_optimized_dataset(dataset, verify=verify)
            except DatasetIntegrityError as error:
                row.check(match in str(error) and "\n" not in str(error), f"{name}: loader said {error}")
                if verify:
                    seen.append(f"{name}: {one_line(error, 160)}")
            else:
                row.check(False, f"{name}: the loader (verify={verify}) opened it")
        export = work / f"export-{dataset.name}"
        refused_by_cli(row, f"{name}: coopt export",
                       coopt("export", str(dataset), "--format", "webdataset", "--out", str(export)), match)
        row.check(not export.exists() or not any(export.iterdir()), f"{name}: the export wrote {export}")
        row.leftovers += leftover_temporaries(dataset)
    row.check(secret.read_bytes() == secret_bytes, "the file outside the dataset was changed")
    row.observed = f"{len(seen)} variants x 3 readers refused; " + "; ".join(seen)
    return row


# ---------------------------------------------------------------------------- case 3: ServerApp kill
def case_serverapp_kill(cluster, base: Path, found: dict[str, Any]) -> Row:
    """SIGKILL the ServerApp while round 2 writes, then run the same command again."""
    from deploy.faults import kill_serverapp

    since = time.time()
    row = Row(CASES[2], "one line: the ServerApp died, the resume command, the dead round's temporary "
              "directory named; the resume removes it and keeps round 1 byte for byte; both rounds equal case 1's")
    out = base / "killed"
    config = {**RUN_CONFIG, "output-dir": str(out)}
    run = Background(cluster, config)
    writing = wait_for(lambda: bool(list(out.glob(".round-002.tmp-*"))), RUN_TIMEOUT_S)
    row.check(writing, "round 2 never started writing")
    before = arrays_of(out / "round-001") if writing else {}
    victims = kill_serverapp(cluster.workdir) if writing else []
    row.check(len(victims) == 1, f"{len(victims)} ServerApp processes found to kill")
    first = run.join()
    reason = first.reason if first else "the run did not return"
    dead = sorted(p.name for p in out.glob(".round-*"))
    row.observed = reason
    row.check(reason.startswith("the ServerApp process died without a word"), "the cause is not the dead ServerApp")
    row.check(len(dead) == 1 and reason.endswith(f"(round 1 is kept, the dead round's {dead[0]} is removed)"),
              f"the resume advice does not name the dead round's directory ({dead})")
    row.check("to resume, run the same command again" in reason and "\n" not in reason,
              "no one-line resume command")
    rerun = cluster.run_app(config, timeout_s=RUN_TIMEOUT_S)
    row.check(rerun.returncode == 0, f"the resumed run failed: {rerun.reason}")
    row.check(temporaries_named_gone(out, dead), f"the dead round's {dead} is still there after the resume")
    if writing:
        row.check(arrays_of(out / "round-001") == before, "round 1 changed on resume")
    if rerun.returncode == 0:
        row.samples_lost = sum(samples_lost(out / f"round-00{r}", 60, RUN_CONFIG["seed"]) for r in (1, 2))
        reference = found.get("uninterrupted")
        if row.check(reference is not None, "no uninterrupted run to compare with (case 1 failed)"):
            row.check(arrays_of(out / "round-001") == reference[1], "round 1 differs from case 1's")
            row.check(arrays_of(out / "round-002") == reference[2], "round 2 differs from case 1's")
    row.observed += (f" | resumed: {'completed' if rerun.returncode == 0 else rerun.reason}; "
                     f"round 1 {'identical' if writing and arrays_of(out / 'round-001') == before else 'CHANGED'} "
                     f"to the one before the kill")
    row.leftovers += leftover_temporaries(out) + leftover_apps(cluster.workdir, since)
    row.leftovers += [f"process {p}" for p in victims if p.running()]
    return row


def temporaries_named_gone(out: Path, dead: list[str]) -> bool:
    return all(not (out / name).exists() for name in dead)


# ---------------------------------------------------------------------------- case 4: key in use
def key_material(key: Path) -> list[str]:
    """Strings that would betray a key pair in a log: PEM and OpenSSH markers, the key's base64."""
    public = Path(f"{key}.pub").read_text().split()
    private = [line for line in Path(key).read_text().splitlines() if line and not line.startswith("-----")]
    return [*KEY_MARKERS, public[1][-40:], *(line[:40] for line in private[:2])]


def case_key_in_use(cluster, base: Path) -> Row:
    """A second SuperNode with the key of node-0, which is online."""
    from deploy.faults import Started
    from deploy.flower import free_port
    from deploy.local_cluster import start_supernode
    from deploy.processes import alive

    row = Row(CASES[3], "refused as 'key already in use' (not 'not registered'); the online node stays "
              "connected; no key material in any log")
    node = cluster.nodes[0]
    name = "duplicate-key"
    pid = start_supernode(cluster.workdir, superlink=cluster.address, ca_cert=Path(cluster.state.ca_cert),
                          key=Path(node.key), node_config=NODES[0], port=free_port(), name=name)
    duplicate = Started.of(pid, name)
    exited = wait_for(lambda: not alive(pid), 90, poll_s=0.5)
    row.check(exited, "the duplicate SuperNode is still running after 90 s")
    reason = cluster.why_not_connected(cluster.log_dir / f"{name}.log", key=node.key, superlink=cluster.address,
                                       pid=pid) or "it connected"
    row.observed = reason
    row.check(reason.startswith("its key is already in use"), "not refused as a key in use")
    row.check("not registered" not in reason, "the line says 'not registered'")
    online = cluster.why_not_connected(cluster.log_dir / f"{node.name}.log", key=node.key, pid=node.pid)
    row.check(online is None and alive(node.pid), f"the online node is no longer connected: {online}")
    markers = key_material(Path(node.key))
    for log in sorted(cluster.log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        for marker in markers:
            row.check(marker not in text, f"{log.name} holds key material ({marker[:20]}...)")
    superlink = cluster.log_tail("superlink", 10**7)
    row.check("<public key sha256:" in superlink, "the SuperLink's log does not name the key by fingerprint")
    row.observed += f" | {len(list(cluster.log_dir.glob('*.log')))} logs scanned, no key material"
    if duplicate.running():
        row.leftovers.append(f"process {duplicate}")
    return row


# ---------------------------------------------------------------------------- case 5: refused-run retry
def case_refused_retry(cluster, base: Path) -> Row:
    """All 60,000 samples on a 4 MiB disk: refused before anything; the smaller retry runs."""
    from deploy.faults import small_disk, snapshot

    since = time.time()
    row = Row(CASES[4], "pre-flight refuses num-samples=60000 on a 4 MiB disk in one line (exit code 212), the "
              "output dir is left as found; the retry with num-samples=60 (the advice: lower num-samples) completes")
    with small_disk(base / "refused", "4m") as disk:
        out = disk / "out"
        out.mkdir()  # made by the user, empty: a directory holding other files is refused for that
        found_before = snapshot(disk)
        config = {**RUN_CONFIG, "num-server-rounds": 1, "output-dir": str(out)}
        refused = cluster.run_app({**config, "num-samples": 60000}, timeout_s=RUN_TIMEOUT_S)
        reason = refused.reason
        row.observed = reason
        row.check(refused.returncode != 0, "the run too large for its disk was not refused")
        row.check("MiB free" in reason and str(out) in reason and "(exit code 212)" in reason,
                  "the refusal does not name the directory and the space")
        row.check("lower num-samples" in reason and "\n" not in reason, "no one-line advice")
        row.check(snapshot(disk) == found_before, f"the refused run changed {disk}: {sorted(snapshot(disk))}")
        retry = cluster.run_app(config, timeout_s=RUN_TIMEOUT_S)
        row.check(retry.returncode == 0, f"the retry failed: {retry.reason}")
        if retry.returncode == 0:
            row.samples_lost = samples_lost(out / "round-001", 60, RUN_CONFIG["seed"])
        row.observed += f" | retry num-samples=60: {'completed' if retry.returncode == 0 else retry.reason}"
        row.leftovers += leftover_temporaries(out) + leftover_apps(cluster.workdir, since)
    return row


# ---------------------------------------------------------------------------- teardown
def teardown_row(cluster, base: Path, mounts: list[Path]) -> Row:
    """Stop the cluster; nothing it started may still run, no mount or temporary dir may stay."""
    from deploy.faults import is_mount_point
    from deploy.workdir import describe_stopped, marked_pids

    row = Row("cleanup after the trial", "every process the trial started stopped by PID; no mount, no "
              "temporary directory left")
    stopped = cluster.stop()
    left = marked_pids(cluster.workdir)
    row.leftovers += [f"process pid {pid}" for pid in left]
    row.leftovers += [f"mount {m}" for m in mounts if is_mount_point(m)]
    shutil.rmtree(base, ignore_errors=True)
    row.leftovers += [f"temporary directory {base}"] if base.exists() else []
    row.observed = describe_stopped(stopped)
    return row


# ---------------------------------------------------------------------------- the trial
def run_case(rows: list[Row], case: str, expected: str, body: Callable[[], Row]) -> None:
    """Run one case; an exception is that case's failing row, never the end of the trial."""
    started = time.monotonic()
    try:
        row = body()
    except Exception as error:  # noqa: BLE001 - every failure becomes a row of the table
        row = Row(case, expected, observed=f"raised {type(error).__name__}: {one_line(error)}")
        row.check(False, f"the case raised: {one_line(traceback.format_exc().strip().splitlines()[-1])}")
    row.seconds = round(time.monotonic() - started, 1)
    print(f"[trial] {row.case}: {verdict_line(row)} ({row.seconds:.0f} s)", flush=True)
    rows.append(row)


def load_line() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def trial(out_dir: Path, shown_as: str | None = None) -> int:
    """Run every case against one loopback cluster, write the table, return the exit code
    (``shown_as``: the ``--out-dir`` as the user typed it, for the command in the report)."""
    from deploy.local_cluster import LocalCluster

    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_start": load_line(),
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, Python "
                       f"{platform.python_version()})",
            "command": f"python -m simulations.deployment_trial --out-dir {shown_as or out_dir}"}
    t0 = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="coopt-deployment-trial-"))
    mounts = [base / "disk-full", base / "refused"]
    cluster = LocalCluster(len(NODES), NODES, workdir=base / "cluster")
    rows: list[Row] = []
    found: dict[str, Any] = {}
    try:
        cluster.start()
        print(f"[trial] cluster up: SuperLink {cluster.address}, workdir {cluster.workdir}", flush=True)
        run_case(rows, CASES[0], "disk full", lambda: case_disk_full(cluster, base, found))
        run_case(rows, CASES[2], "ServerApp kill", lambda: case_serverapp_kill(cluster, base, found))
        run_case(rows, CASES[3], "key in use", lambda: case_key_in_use(cluster, base))
        run_case(rows, CASES[4], "refused-run retry", lambda: case_refused_retry(cluster, base))
        run_case(rows, CASES[1], "hostile manifest", lambda: case_hostile_manifest(base, found))
    except Exception as error:  # noqa: BLE001 - the cluster did not start: say so in the table
        rows.append(Row("cluster start", "SuperLink and SuperNodes up", observed=one_line(error),
                        failures=[f"the cluster did not start: {one_line(error)}"]))
    finally:
        rows.sort(key=lambda r: CASES.index(r.case) if r.case in CASES else len(CASES))
        if not all(r.passed for r in rows) and cluster.log_dir.is_dir():  # the evidence, before teardown
            shutil.copytree(cluster.log_dir, out_dir / "logs", dirs_exist_ok=True)
        run_case(rows, "cleanup after the trial", "", lambda: teardown_row(cluster, base, mounts))
    meta.update(finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), load_end=load_line(),
                wall_s=round(time.monotonic() - t0, 1))
    write_results(out_dir, rows, meta)
    print(render_table(rows))
    t = totals(rows)
    print(f"{t['failing']} of {t['rows']} rows failing, {t['samples_lost']} samples lost, {t['leftovers']} leftovers "
          f"({meta['wall_s']:.0f} s); {out_dir / 'deployment_trial.md'}")
    return exit_code(rows)


def write_results(out_dir: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "deployment_trial.json").write_text(json.dumps(
        {"meta": meta, "run_config": RUN_CONFIG, "totals": totals(rows), "rows": [r.to_json() for r in rows]},
        indent=2) + "\n")
    (out_dir / "deployment_trial.md").write_text(render_markdown(rows, meta))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.deployment_trial", description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="where deployment_trial.json and .md go")
    args = parser.parse_args(argv)
    return trial(args.out_dir.resolve(), str(args.out_dir))


if __name__ == "__main__":
    sys.exit(main())
