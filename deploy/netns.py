"""Separate hosts on one machine: a network namespace and a user id per host.

A loopback cluster shares one address, one filesystem and one user between the SuperLink and
every SuperNode, so a path, an address or a file that only exists on the platform's host goes
unnoticed. :class:`Hosts` gives each process of a cluster a host of its own, as close to
separate machines as one Linux machine allows:

* its own network namespace (``ip netns``) with one interface, ``eth0``, on a private /24
  bridged to the others: ``127.0.0.1`` inside a host is that host alone, and the SuperLink is
  reached at its own address, never through loopback;
* its own view of the filesystem (a mount namespace, ``unshare --mount``): what another host
  keeps private (its Flower home, its key, its local images; the platform's CA and server
  keys and its output) is covered there, an empty read-only tmpfs over a directory and
  ``/dev/null`` over a file, so no other host can read it.

(Separate user ids would do the second part too, but a machine whose Python lives in a home
directory only its owner may enter, as pyenv installs it under ``/root``, cannot run it as
anyone else.) Paths are hidden from processes started after they are declared private.

The machine itself keeps one address on the bridge (``.254``) so that the ``flwr`` CLI, run
from here, reaches the SuperLink as a user's laptop would. Everything is created with names
that carry a tag of this process and removed by :meth:`Hosts.close` (also on a failed start).
Making namespaces needs root (``CAP_NET_ADMIN``, ``CAP_SYS_ADMIN``); :func:`why_not` says in
one line why they cannot be made here.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

#: The address the machine itself keeps on the bridge (the last of the /24).
MACHINE_HOST = 254


class HostsError(RuntimeError):
    """Namespaces could not be made or removed here; the message says why in one line."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HostsError(f"`ip {' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def why_not() -> str | None:
    """Why separate hosts cannot be made on this machine (None when they can)."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "network namespaces need Linux"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "the `ip` (iproute2) and `unshare` (util-linux) commands are needed"
    if os.geteuid() != 0:
        return "making network and mount namespaces needs root"
    probe = f"coopt-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is refused here: {(made.stderr or made.stdout).strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def free_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that no address or route of this machine touches."""
    taken = []
    for args in (("-4", "-o", "addr"), ("-4", "route")):
        for word in _ip(*args).stdout.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(64, 250)}.{rng.randrange(1, 250)}.0/24")
        if not any(net.overlaps(t) for t in taken if t.prefixlen > 0):
            return net
    raise HostsError("no free 10.x.y.0/24 subnet for the hosts' network")


@dataclass
class Host:
    """One host: its namespace, its address on the shared network, what it keeps private."""

    name: str
    namespace: str
    address: str
    private: list[Path] = field(default_factory=list)

    def keep_private(self, *paths: Path | str) -> None:
        """Hide ``paths`` (files or directories) from every other host started from now on."""
        self.private += [Path(p).resolve() for p in paths]


class Hosts:
    """Hosts named ``names`` on one private network; a context manager that removes them.

    Parameters
    ----------
    names : iterable of str
        One host per name (``superlink``, ``node-0`` ...), given addresses .1, .2, ... in order.
    seed : int, optional
        Picks the tag and the subnet (random when omitted).
    """

    def __init__(self, names: Iterable[str], *, seed: int | None = None) -> None:
        self.names = list(names)
        if len(set(self.names)) != len(self.names) or not self.names:
            raise ValueError(f"host names must be distinct and at least one: {self.names}")
        if len(self.names) >= MACHINE_HOST - 1:
            raise ValueError(f"{len(self.names)} hosts do not fit one /24")
        rng = random.Random(seed)
        self.tag = f"{os.getpid() % 100000:05d}{rng.randrange(100):02d}"
        self.bridge = f"cbr{self.tag}"
        self.hosts: dict[str, Host] = {}
        self.subnet: ipaddress.IPv4Network | None = None
        self._rng = rng

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> Hosts:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> Hosts:
        """Make the bridge, then one namespace per host with its veth on the bridge."""
        reason = why_not()
        if reason:
            raise HostsError(reason)
        self.subnet = free_subnet(self._rng)
        base = int(self.subnet.network_address)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{ipaddress.ip_address(base + MACHINE_HOST)}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for index, name in enumerate(self.names):
                host = Host(name, f"coopt-{self.tag}-{index}", str(ipaddress.ip_address(base + index + 1)))
                self.hosts[name] = host
                outside = f"cv{self.tag}{index}"
                _ip("netns", "add", host.namespace)
                _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
                _ip("link", "set", outside, "master", self.bridge, "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.namespace, "link", "set", "eth0", "up")
                _ip("-n", host.namespace, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> list[str]:
        """Remove every namespace and the bridge made here (processes must be stopped first:
        a namespace outlives its name while a process lives in it); returns what is left."""
        for host in self.hosts.values():
            _ip("netns", "del", host.namespace, check=False)  # takes its veth pair along
        _ip("link", "del", self.bridge, check=False)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        """Namespaces and links of this object that still exist."""
        spaces = _ip("netns", "list", check=False).stdout.split()
        links = _ip("-o", "link", check=False).stdout
        left = [f"namespace {h.namespace}" for h in self.hosts.values() if h.namespace in spaces]
        return left + ([f"link {self.bridge}"] if f" {self.bridge}:" in links else [])

    # -------------------------------------------------------------- use
    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def command(self, name: str, command: list[str]) -> list[str]:
        """``command`` run on host ``name``: in its network namespace, in a mount namespace of
        its own where every other host's private paths are covered.

        ``ip netns exec``, ``unshare`` and the shell all exec, so the PID a caller gets is the
        command's own, and the covers vanish with the process.
        """
        host = self.hosts[name]
        covers = []
        for other in self.hosts.values():
            for path in other.private if other is not host else ():
                if path.is_dir():
                    covers.append(f"mount -t tmpfs -o ro,size=4k,mode=0 coopt-hidden {shlex.quote(str(path))}")
                elif path.exists():
                    covers.append(f"mount --bind -o ro /dev/null {shlex.quote(str(path))}")
        script = " && ".join([*covers, 'exec "$@"'])
        return ["ip", "netns", "exec", host.namespace, "unshare", "--mount", "--propagation", "private",
                "/bin/sh", "-c", script, "coopt-host", *command]

    @property
    def machine_address(self) -> str:
        """The address of this machine on the hosts' network."""
        assert self.subnet is not None, "open() first"
        return str(ipaddress.ip_address(int(self.subnet.network_address) + MACHINE_HOST))
