"""The real lab of the end-to-end tests and benchmarks, driven through kubelab's tasks.

`E2ELab` holds one lab of three VMs (tests/data/e2e/lab.yaml) in a libvirtd of its
own (`NetnsLibvirt`: a network namespace and a private mount namespace). Every
lifecycle action is the real `invoke` task run inside those namespaces, exactly as
a user types it:

    lab.up(lab.config())                 # invoke up --config ... --lab-dir ... --box ...
    lab.invoke("status", config=...)     # any task, its exit code and output
    lab.vagrant("destroy", "-f", "node2")

The tests look at the result from outside kubelab: libvirt-python through
`lab.netns.host_uri` (a unix socket, no network), and commands on the VMs through
kubelab's Transport opened in a thread inside the namespace (`lab.on_vms`), so the
machine's own namespace never sees a lab address.

Every task's output goes to one log (`lab.log`, follow it with tail -f); `save_logs`
copies it, the lab's logs folder and the configs to KUBELAB_E2E_DIR/logs-last before
the harness removes its state folder.
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kubelab.boxes import build_box_file
from kubelab.errors import KubelabError
from kubelab.plan import Plan, load_plan
from kubelab.transport import CommandResult, Transport, targets_from_ssh_config
from tests.e2e.local_repo import CACHE
from tests.support.libvirt_helpers import BOX_CACHE, TEST_DISTRO, TEST_VARIANT
from tests.support.libvirt_netns import NetnsLibvirt, missing_requirements
from tests.support.netns import call_in_netns

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "e2e"
E2E_DIR = CACHE.parent
# The invoke of the Python running the tests: the project's virtualenv.
INVOKE = Path(sys.executable).parent / "invoke"
BOX_NAME = "kubelab-e2e/debian12"
NODES = ("master", "node1", "node2")
# Wide enough that no message is wrapped in the middle of a path.
COLUMNS = "250"
_TIMINGS = re.compile(r"^timings: (.*)$", re.M)
# Figures measured along the way (name -> text); pytest prints them at the end.
FIGURES: dict[str, str] = {}


@dataclass(frozen=True, repr=False)
class TaskRun:
    """One task or command run inside the namespace: its exit code and output."""

    argv: list[str]
    rc: int
    output: str  # stdout and stderr, interleaved as printed
    seconds: float

    @property
    def timings(self) -> dict[str, float]:
        """The `timings: boot 95 s, provision 3 s, ...` line `invoke up` prints."""
        found = _TIMINGS.search(self.output)
        if not found:
            return {}
        pairs = (part.rsplit(" ", 2) for part in found.group(1).split(", "))
        return {name: float(value) for name, value, _unit in pairs}

    def __repr__(self) -> str:
        # What an assertion message shows: the command, how it ended, its last lines.
        tail = "\n".join(self.output.splitlines()[-40:])
        return f"`{' '.join(self.argv[1:])}` exited {self.rc} after {self.seconds:.0f} s:\n{tail}"

    __str__ = __repr__


class E2ELab:
    """One lab of real VMs in a libvirtd of its own; see the module docstring."""

    def __init__(self, netns: NetnsLibvirt) -> None:
        self.netns = netns
        self.lab_dir = netns.state / "lab"
        self.config_dir = netns.state / "configs"
        self.log = netns.state / "e2e.log"
        self.local_repo: Path | None = None
        self.config_dir.mkdir(exist_ok=True)

    # -- configs -------------------------------------------------------------

    def config(self, *overlays: str) -> Path:
        """tests/data/e2e/lab.yaml with the named overlays on top, written for this lab.

        The overlays prepare and runtime install packages, so their config carries
        mirror.local_repo (the folder `build_local_repo` made).
        """
        data = _load(DATA / "lab.yaml")
        for overlay in overlays:
            data = _merge(data, _load(DATA / f"{overlay}.yaml"))
        if data.get("provision", {}).get("stages", []) != ["smoke"]:
            if self.local_repo is None:
                raise RuntimeError(f"config {overlays}: installs packages, but no local_repo set")
            data.setdefault("mirror", {})["local_repo"] = str(self.local_repo)
        path = self.config_dir / ("-".join(["lab", *overlays]) + ".yaml")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def plan(self, config: Path) -> Plan:
        """What kubelab makes of a config for this lab folder (pure: touches nothing)."""
        return load_plan(
            config, {"box.name": BOX_NAME, "box.version": ""}, repo_root=REPO, lab_dir=self.lab_dir
        )

    # -- running tasks and commands inside -------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return self.netns.env({
            "COLUMNS": COLUMNS,
            "KUBELAB_BOX_CACHE": str(BOX_CACHE),
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            **(extra or {}),
        })  # fmt: skip

    def command(self, argv: list[str], *, cwd: Path = REPO, timeout: float = 1800) -> TaskRun:
        """Run argv inside the namespace; its output is appended to the lab's log as well."""
        with self.log.open("a") as log:
            log.write(f"\n### {time.strftime('%H:%M:%S')} $ {' '.join(argv)}\n")
        started = time.monotonic()
        done = self.netns.run(argv, env=self.env(), cwd=cwd, timeout=timeout, check=False,
                              log=self.log)  # fmt: skip
        return TaskRun(argv, done.returncode, done.stdout, time.monotonic() - started)

    def invoke(
        self, task: str, *args: str, config: Path | None = None, timeout: float = 1800
    ) -> TaskRun:
        """`invoke TASK ARGS --config CONFIG --lab-dir LAB` run from the repository."""
        argv = [str(INVOKE), task, *args]
        if config is not None:
            argv += ["--config", str(config), "--lab-dir", str(self.lab_dir)]
        return self.command(argv, timeout=timeout)

    def up(self, config: Path, timeout: float = 1800) -> TaskRun:
        return self.invoke("up", "--box", BOX_NAME, config=config, timeout=timeout)

    def import_box(self) -> TaskRun:
        """`invoke box build`: the box file is already in the cache, so this only imports it.

        The build itself needs the Debian mirror, which the namespace cannot reach;
        the fixture builds it in the machine's own namespace first.
        """
        return self.invoke(
            "box.build", "--distro", TEST_DISTRO, "--variant", TEST_VARIANT, "--name", BOX_NAME
        )

    def vagrant(self, *args: str, timeout: float = 900) -> TaskRun:
        """`vagrant ARGS` in the lab folder, as a user would run it there."""
        return self.command(["vagrant", *args], cwd=self.lab_dir, timeout=timeout)

    def ssh_config(self, nodes: Iterable[str] = NODES) -> str:
        """`vagrant ssh-config NODE...`: one Host block per node, from one Vagrant run
        (each run of Vagrant costs seconds of Ruby start-up on a busy machine).

        Vagrant is asked afresh, not the copy `invoke up` keeps in the lab folder
        (`<lab>/ssh-config`, what `invoke verify` and bench_verify use): the tests also
        look at VMs that they halted, destroyed or rebuilt behind kubelab's back."""
        done = self.netns.run(["vagrant", "ssh-config", *nodes], env=self.env(),
                              cwd=self.lab_dir, timeout=300)  # fmt: skip
        return done.stdout

    def on_vms(self, fn: Callable[[Transport], T], nodes: Iterable[str] = NODES) -> T:
        """fn(transport) with kubelab's Transport to the nodes, inside the namespace."""
        text = self.ssh_config(nodes)

        def inside() -> T:
            with Transport(targets_from_ssh_config(text)) as transport:
                return fn(transport)

        return call_in_netns(self.netns.name, inside)

    def login(self, ssh_config: str, node: str = "master") -> str:
        """Log in to `node` with the keys an ssh-config text lists, inside the namespace:
        "in" when kubelab's Transport got in, else its one-line reason."""

        def inside() -> str:
            try:
                with Transport(targets_from_ssh_config(ssh_config)) as transport:
                    return transport.run(node, "echo", "in").stdout.strip()
            except KubelabError as exc:
                return exc.message

        return call_in_netns(self.netns.name, inside)

    def run_on(
        self, nodes: Iterable[str], cmd: str, *args: str, sudo: bool = False, timeout: float = 120
    ) -> dict[str, CommandResult]:
        """One command on each node (over one connection per node): node -> result."""
        names = list(nodes)
        return self.on_vms(
            lambda t: {n: t.run(n, cmd, *args, sudo=sudo, timeout=timeout) for n in names},
            names,
        )

    # -- what libvirt says -------------------------------------------------------

    def domains(self, plan: Plan) -> dict[str, tuple[str, str]]:
        """Node name -> (domain UUID, libvirt state) for the lab's domains."""
        import libvirt

        from kubelab.backend import libvirt_inspect  # noqa: F401  (silences libvirt's stderr)

        conn = libvirt.open(self.netns.host_uri)
        try:
            found = {}
            for dom in conn.listAllDomains():
                if dom.name().startswith(plan.prefix):
                    state = "running" if dom.isActive() else "shutoff"
                    found[dom.name().removeprefix(plan.prefix)] = (dom.UUIDString(), state)
            return found
        finally:
            conn.close()

    def libvirt_names(self) -> dict[str, list[str]]:
        """Everything this libvirtd holds, by kind: "domains", "networks", "volumes"."""
        import libvirt

        conn = libvirt.open(self.netns.host_uri)
        try:
            return {
                "domains": [d.name() for d in conn.listAllDomains()],
                "networks": [n.name() for n in conn.listAllNetworks()],
                "volumes": [
                    v.name()
                    for p in conn.listAllStoragePools()
                    if p.isActive()
                    for v in (p.refresh(0), p.listAllVolumes())[1]
                ],  # fmt: skip
            }
        finally:
            conn.close()

    # -- keeping the evidence ------------------------------------------------------

    def save_logs(self, dest: Path = E2E_DIR / "logs-last") -> Path:
        """Copy the task log, the lab's logs, the configs and the figures out of the harness."""
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        (dest / "figures.txt").write_text("".join(f"{k}: {v}\n" for k, v in FIGURES.items()))
        if self.log.is_file():
            shutil.copy(self.log, dest / self.log.name)
        for folder in (self.lab_dir / "logs", self.config_dir):
            if folder.is_dir():
                shutil.copytree(folder, dest / folder.name)
        return dest


@contextmanager
def standalone_lab(name: str) -> Iterator[tuple[E2ELab, Path]]:
    """For the benchmarks, outside pytest: (a harness with the box imported, the box file).

    The box is built in the machine's own namespace (it needs the Debian mirror), or
    taken from the cache. Logs are kept in KUBELAB_E2E_DIR/logs-NAME.
    """
    reason = missing_requirements()
    if reason:
        raise SystemExit(f"{name}: cannot run here: {reason}")
    box = build_box_file(
        TEST_DISTRO, BOX_CACHE, E2E_DIR / "box-build" / "build.log", variant=TEST_VARIANT
    )
    with NetnsLibvirt() as netns:
        lab = E2ELab(netns)
        try:
            imported = lab.import_box()
            if imported.rc != 0:
                raise RuntimeError(str(imported))
            yield lab, box
        finally:
            lab.save_logs(E2E_DIR / f"logs-{name}")


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
