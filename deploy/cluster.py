"""``python -m deploy.cluster SUBCOMMAND``: the deployment's command line, one function per subcommand.

Each ``cmd_*`` function takes the parsed arguments and returns the process exit code;
:func:`build_parser` wires it to its subparser with ``set_defaults(func=...)``. The cluster
itself (:class:`~deploy.local_cluster.LocalCluster`, a lone SuperNode) is in
:mod:`deploy.local_cluster`; this module also re-exports the names callers import from here
(``from deploy.cluster import LocalCluster, ...``). ``coopt deploy`` is the same command line
(:mod:`coopt_flower.cli` hands it the rest of its arguments).

CLI (``python -m deploy.cluster --help``)::

    python -m deploy.cluster up \\
        --node-config "prototype='efficientnet-lite0' device='cpu'" \\
        --node-config "prototype='onnx:open-nsfw' device='cpu'"
    python -m deploy.cluster run -c "num-samples=1000 output-dir='/abs/out'"
    python -m deploy.cluster down

(workdir ``~/.coopt-flower/cluster`` unless ``--workdir``/``COOPT_DEPLOY_DIR``; it must be outside
the app directory). Separate machines: ``up --nodes 0 --bind 0.0.0.0 --host NAME`` on the
platform, ``keygen`` + ``supernode`` on each participant, ``register`` on the platform; see the
README section "Deployment on separate machines".
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from coopt_flower.help_format import DefaultsHelpFormatter

from deploy.flower import (
    APP_DIR, BIN_DIR, CONNECTION, flower_bin, free_port, node_config_arg, parse_node_config, parse_run_config,
    port_open, toml_value, write_connection,
)
from deploy.local_cluster import (
    NODE_ID_RE, REFUSED_MARKERS, LocalCluster, start_supernode, wait_for_node_id, was_refused,
)
from deploy.pki import certificate_hosts, make_certificates, make_node_key
from deploy.processes import alive, descendants, stop_pids
from deploy.refusals import refusal_reason
from deploy.runs import RUN_ID_RE, RunResult, app_config_keys, run_app, run_status
from deploy.workdir import (
    MARKER_ENV, STATE_FILE, ClusterError, ClusterState, NodeInfo, check_workdir, marked_pids, read_pid,
    describe_stopped, running_pids, stop_workdir,
)

# Callers import these from here (the module users run); they live in the modules above.
__all__ = [
    "APP_DIR", "BIN_DIR", "CONNECTION", "MARKER_ENV", "NODE_ID_RE", "REFUSED_MARKERS",
    "RUN_ID_RE", "STATE_FILE", "ClusterError", "ClusterState", "LocalCluster", "NodeInfo",
    "RunResult", "alive", "app_config_keys", "check_workdir", "descendants", "flower_bin",
    "free_port", "main", "marked_pids", "node_config_arg", "parse_node_config", "port_open",
    "run_app", "run_status", "running_pids", "start_supernode", "stop_pids", "stop_workdir",
    "toml_value", "wait_for_node_id", "was_refused", "write_connection",
]

# Outside the app: `flwr run` packs every *.py/*.toml/*.json under the app directory into the
# FAB (only the top-level .gitignore is honoured), and a workdir holds installed app copies.
DEFAULT_WORKDIR = Path(os.environ.get("COOPT_DEPLOY_DIR", Path.home() / ".coopt-flower" / "cluster"))
DEFAULT_NODE_WORKDIR = DEFAULT_WORKDIR.with_name("node")
SUPERNODE_CONNECT_S = 60.0


# ---------------------------------------------------------------------------- subcommands
HEARTBEAT_HELP = ("seconds between a SuperNode's heartbeats, 10-1800 (Flower's default 30): a node that "
                  "dies is reported offline after about twice this")


def cmd_certs(args: argparse.Namespace) -> int:
    """Write a CA and the SuperLink's server certificate."""
    files = make_certificates(args.dir, args.host, days=args.days, overwrite=args.overwrite)
    print(f"CA certificate (copy to every SuperNode machine): {files.ca_cert}")
    print(f"SuperLink certificate: {files.server_cert} (names: {', '.join(certificate_hosts(files.server_cert))})")
    print(f"SuperLink key: {files.server_key}; CA key (keep private): {files.ca_key}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a SuperNode key pair."""
    key = make_node_key(args.path, overwrite=args.overwrite)
    print(f"private key (stays on the SuperNode machine): {key.private}")
    print(f"public key (register it on the platform): {key.public}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start a SuperLink and N SuperNodes, detached."""
    configs = [parse_node_config(c) for c in args.node_config]
    num = args.nodes if args.nodes is not None else (len(configs) or 2)
    tls = not args.insecure
    local = LocalCluster(num, configs, tls=tls, auth=tls and not args.no_auth,
                         workdir=args.workdir, port=args.port, bind=args.bind,
                         hosts=args.host, node_ports=range(args.node_port, args.node_port + num),
                         heartbeat_s=args.heartbeat_s)
    local.start()
    print(f"SuperLink {local.address} ({'TLS' if tls else 'insecure'}"
          f"{', SuperNode auth' if local.auth else ''}); workdir {local.workdir}")
    for node in local.nodes:
        print(f"  {node.name}: node id {node.node_id}, pid {node.pid}, {node_config_arg(node.node_config)}")
    print(f"logs: {local.log_dir}; stop with: python -m deploy.cluster down --workdir {local.workdir}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    """Register a SuperNode's public key with the SuperLink of a running cluster."""
    state = ClusterState.load(args.workdir)
    local = LocalCluster(0, workdir=state.workdir)
    local.state = state
    print(f"registered: node id {local.register(args.public_key)}")
    return 0


def cmd_supernode(args: argparse.Namespace) -> int:
    """Start one detached SuperNode and report whether it connected."""
    workdir = Path(args.workdir).resolve()
    pid = start_supernode(workdir, superlink=args.superlink,
                          ca_cert=None if args.insecure else args.ca, key=args.key,
                          node_config=parse_node_config(args.node_config),
                          port=args.port, name=args.name, heartbeat_s=args.heartbeat_s)
    log = workdir / "logs" / f"{args.name}.log"
    node_id = wait_for_node_id(log, pid, SUPERNODE_CONNECT_S)
    if node_id is not None:
        print(f"SuperNode connected: node id {node_id}, pid {pid}, log {log}")
        return 0
    text = log.read_text(errors="replace")
    print(text[-3000:])
    reason = refusal_reason(text, superlink=args.superlink, alive=alive(pid))
    if alive(pid):
        print(f"SuperNode has not connected yet (pid {pid}, log {log})" + (f": {reason}" if reason else
              "; it keeps trying") + f". Stop it with: python -m deploy.cluster down --workdir {args.workdir}")
    else:
        (workdir / "pids" / f"{args.name}.pid").unlink(missing_ok=True)
        print(f"SuperNode exited (log {log})" + (f": {reason}" if reason else ""))
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    """``flwr run . --stream`` against the cluster; exit 0 only for a completed run."""
    from coopt_flower.config import ConfigError

    rerun = f"run `python -m deploy.cluster run --workdir {args.workdir}" + \
        "".join(f" --run-config {shlex.quote(c)}" for c in args.run_config) + "` again"
    try:
        result = run_app(args.workdir, parse_run_config(args.run_config),
                         timeout_s=args.timeout, echo=True, rerun=rerun)
    except ConfigError as error:
        print(f"run config: {error}", file=sys.stderr)
        return 2
    print(f"[deploy] run {result.run_id}: {result.status or 'unknown status'}"
          + (f": {result.reason}" if result.reason else ""))
    return result.returncode


def cmd_status(args: argparse.Namespace) -> int:
    """Each pid file's process, and the SuperNodes the SuperLink knows."""
    workdir = Path(args.workdir).resolve()
    for pid_file in sorted((workdir / "pids").glob("*.pid")):
        pid = read_pid(pid_file)
        state = "running" if pid is not None and alive(pid) else "gone"
        print(f"{pid_file.stem}: pid {pid} {state}")
    if (workdir / STATE_FILE).is_file():
        print(LocalCluster(0, workdir=workdir).flwr("supernode", "ls", CONNECTION).stdout)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop every process started for the workdir, by PID."""
    print(describe_stopped(stop_workdir(args.workdir)))
    return 0


# ---------------------------------------------------------------------------- the parser
def _workdir_option(parser: argparse.ArgumentParser, default: Path = DEFAULT_WORKDIR) -> None:
    parser.add_argument("--workdir", type=Path, default=default)


def build_parser(prog: str = "python -m deploy.cluster") -> argparse.ArgumentParser:
    """The ``python -m deploy.cluster`` (``coopt deploy``) parser; each subparser's ``func`` runs it."""
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter, prog=prog,
                                     description="Flower deployment of coopt-flower (TLS + SuperNode auth).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certs", formatter_class=DefaultsHelpFormatter,
                       help="write a CA and the SuperLink's server certificate")
    p.add_argument("--dir", type=Path, default=DEFAULT_WORKDIR / "certs")
    p.add_argument("--host", action="append", default=[],
                   help="name or IP the SuperLink is reached at (repeatable; 127.0.0.1 and localhost are always added)")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("keygen", formatter_class=DefaultsHelpFormatter,
                       help="write a SuperNode key pair (PATH and PATH.pub)")
    p.add_argument("path", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("up", formatter_class=DefaultsHelpFormatter,
                       help="start a SuperLink (and N SuperNodes) on this machine, detached")
    _workdir_option(p)
    p.add_argument("--nodes", type=int, default=None,
                   help="SuperNodes to start here (default: one per --node-config, else 2)")
    p.add_argument("--node-config", action="append", default=[],
                   help="per-node config, e.g. \"prototype='efficientnet-lite0' device='cpu'\" (repeatable, in order)")
    p.add_argument("--port", type=int, default=8000, help="the SuperLink's port (default 8000)")
    p.add_argument("--bind", default="127.0.0.1", help="interface to listen on (0.0.0.0 for other machines)")
    p.add_argument("--host", action="append", default=[], help="extra certificate name/IP (repeatable)")
    p.add_argument("--node-port", type=int, default=9094, help="first SuperNode Runtime API port")
    p.add_argument("--insecure", action="store_true", help="no TLS (implies --no-auth)")
    p.add_argument("--no-auth", action="store_true", help="no SuperNode authentication")
    p.add_argument("--heartbeat-s", type=float, default=None, help=HEARTBEAT_HELP)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("register", formatter_class=DefaultsHelpFormatter,
                       help="register a SuperNode public key with the SuperLink")
    p.add_argument("public_key", type=Path)
    _workdir_option(p)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("supernode", formatter_class=DefaultsHelpFormatter,
                       help="start one detached SuperNode (e.g. on a GPU machine)")
    _workdir_option(p, DEFAULT_NODE_WORKDIR)
    p.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    p.add_argument("--ca", type=Path, help="the platform's ca.crt (omit only with --insecure)")
    p.add_argument("--key", type=Path, help="this node's private key (from `keygen`)")
    p.add_argument("--node-config", default="", help="e.g. \"prototype='open_clip:...' device='cuda' partition-id=0\"")
    p.add_argument("--port", type=int, default=9094, help="local Runtime API port")
    p.add_argument("--name", default="supernode")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--heartbeat-s", type=float, default=None, help=HEARTBEAT_HELP)
    p.set_defaults(func=cmd_supernode)

    p = sub.add_parser("run", formatter_class=DefaultsHelpFormatter,
                       help="`flwr run . --stream` against the cluster")
    _workdir_option(p)
    p.add_argument("-c", "--run-config", action="append", default=[],
                   help="\"key=value ...\" (TOML values) or a .toml file; repeatable")
    p.add_argument("--timeout", type=float, default=24 * 3600)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", formatter_class=DefaultsHelpFormatter,
                       help="processes and nodes of the cluster")
    _workdir_option(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("down", formatter_class=DefaultsHelpFormatter,
                       help="stop every process started for the workdir, by PID")
    _workdir_option(p)
    p.set_defaults(func=cmd_down)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m deploy.cluster") -> int:
    """Parse ``argv`` and run its subcommand; errors print one line and exit 1."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "supernode" and not args.insecure and not args.ca:
        parser.error("--ca is required (or --insecure)")
    try:
        return args.func(args)
    except (ClusterError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
