"""One line for a failed deployment run: the cause and what a rerun does (deploy.run_outcome).
The status details are Flower 1.42's (a ServerApp killed with SIGKILL, one that raised)."""

import json

from deploy.run_outcome import failure_line


def run_dir(tmp_path, rounds=(1,), leftovers=(".round-002.tmp-15266-1796598938827098588",)):
    out = tmp_path / "out"
    out.mkdir()
    (out / "progress.json").write_text(json.dumps({"rounds": {str(r): {} for r in rounds}}))
    for name in leftovers:
        (out / name).mkdir()
    return out


def test_a_killed_serverapp_names_the_cause_and_the_resume(tmp_path):
    out = run_dir(tmp_path)
    line = failure_line(status="finished:failed", details="No heartbeat received from the task",
                        output="...", run_config={"output-dir": str(out)}, rerun="run `X` again")
    assert line.startswith("the ServerApp process died without a word (killed, or out of memory")
    assert line.endswith("; to resume, run `X` again (round 1 is kept, the dead round's "
                         ".round-002.tmp-15266-1796598938827098588 is removed)")
    assert "\n" not in line


def test_a_coopt_stop_is_quoted_and_config_errors_are_not_resumed(tmp_path):
    output = ("ERROR :     CoOpt run stopped: seed must be an integer, got 1.5 [exit code 210: configuration]\n")
    line = failure_line(status="finished:failed", details="ServerApp failed with exception: seed ...",
                        output=output, run_config={})
    assert line == "the run stopped: seed must be an integer, got 1.5 (exit code 210): fix it and run the same command again"
    out = run_dir(tmp_path, rounds=(1, 2), leftovers=())
    output = "CoOpt run stopped: no space left on the device of /o [exit code 212: output directory]\n"
    line = failure_line(status="finished:failed", details="", output=output, run_config={"output-dir": str(out)})
    assert line.endswith("(exit code 212); to resume, run the same command again (rounds 1, 2 are kept)")


def test_processes_that_died_are_named(tmp_path):
    line = failure_line(status="finished:failed", details="No heartbeat received from the task", output="",
                        run_config={}, dead_nodes=["node-2"])
    assert "; SuperNode node-2 no longer runs" in line
    assert failure_line(status="", details="", output="", run_config={},
                        superlink_alive=False).startswith("the SuperLink process died")
    assert failure_line(status="", details="", output="Could not connect\n", run_config={}) == \
        "flwr run did not start a run: Could not connect"


def test_without_output_dir_the_logged_rounds_say_where_the_run_is(tmp_path):
    out = run_dir(tmp_path, leftovers=())
    output = f"INFO :      CoOpt round 1 done: {out / 'round-001'}\n"
    line = failure_line(status="finished:failed", details="No heartbeat received from the task",
                        output=output, run_config={})
    assert line.endswith(f"; to resume, run the same command again with output-dir='{out}' added to the "
                         "run config (round 1 is kept)")
