"""Benchmark: verify's SSH and curl commands on real VMs, Transport vs `vagrant ssh -c`.

    sudo .venv/bin/python tests/e2e/bench_verify.py

The command list is what verify runs over SSH when it curls: every VM asks every
VM's private address for nginx's welcome page (verify's own curl command line), and
reads each VM's identity as verify's evidence does (machine ID, boot ID). It runs
twice on the same three VMs:

* kubelab's way, as `invoke verify` takes it after `invoke up`: every VM's SSH
  settings from the ssh-config `invoke up` kept in the lab folder (no Vagrant run),
  then one persistent SSH connection per node for every command;
* one `vagrant ssh NODE -c COMMAND` process per command.

Printed for each: wall time, SSH connections opened, and host processes started
(programs executed, counted with strace(1) following every child: vagrant is Ruby
and starts ssh and helpers of its own; the Transport starts none); then both
ratios, wall time and host processes. Prints figures; asserts
none. Standalone it brings up the end-to-end lab (three VMs, stage 1, nginx-light
from the local Debian package folder: about 5 minutes under emulation) and destroys
it; the end-to-end test calls `measure` on its own lab instead. Needs root,
vagrant-libvirt, libvirtd, QEMU, strace, and the Debian mirror for the box and the
package folder.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubelab.lifecycle import kept_targets  # noqa: E402
from kubelab.plan import Plan  # noqa: E402
from kubelab.transport import CommandResult, Transport, command_line  # noqa: E402
from kubelab.verify.evidence import curl_argv, http_url, is_welcome_page, parse_curl_stdout  # noqa: E402
from tests.e2e.lab import NODES, E2ELab  # noqa: E402

CURL_MAX_TIME = 5  # verify's default curl deadline (kubelab.verify.expect.Deadlines)
IDENTITY = ("cat", "/etc/machine-id", "/proc/sys/kernel/random/boot_id")
INSTALL_NGINX = (
    "export DEBIAN_FRONTEND=noninteractive && apt-get update -q && "
    "apt-get install -y -q nginx-light && systemctl is-active nginx"
)


@dataclass(frozen=True)
class Way:
    """How one way of running the command list went."""

    name: str
    seconds: float
    connections: int
    processes: int | None  # programs executed on the host; None without strace
    welcome_pages: int  # curls that got nginx's welcome page
    setup: str = ""  # what the time went to before the first command, when anything

    def row(self) -> str:
        processes = "n/a (no strace)" if self.processes is None else str(self.processes)
        setup = f" ({self.setup})" if self.setup else ""
        return (f"{self.seconds:.1f} s{setup}, {self.connections} SSH connections, "
                f"{processes} host processes, {self.welcome_pages} welcome pages")  # fmt: skip


def commands(plan: Plan) -> list[tuple[str, list[str]]]:
    """(node, argv) for verify's curls between the VMs and its identity reads."""
    curls = [(source.name, curl_argv(http_url(target.ip, 80), CURL_MAX_TIME))
             for source in plan.nodes for target in plan.nodes]  # fmt: skip
    return curls + [(node.name, list(IDENTITY)) for node in plan.nodes]


def install_nginx(lab: E2ELab) -> dict[str, CommandResult]:
    """nginx-light on every VM from the lab's local package folder, in parallel."""

    def install(transport: Transport) -> dict[str, CommandResult]:
        with ThreadPoolExecutor(len(NODES)) as pool:
            futures = {node: pool.submit(transport.run, node, "sh -c", INSTALL_NGINX,
                                         sudo=True, timeout=900) for node in NODES}  # fmt: skip
            return {node: future.result() for node, future in futures.items()}

    return lab.on_vms(install)


def through_transport(lab: E2ELab, plan: Plan, todo: list[tuple[str, list[str]]]) -> Way:
    """The commands as `invoke verify` runs them: the kept ssh-config, then one
    connection per VM. It executes no program on the host: nothing to count."""
    started = time.monotonic()
    targets, why = kept_targets(plan)
    if not targets:
        raise RuntimeError(f"the benchmark needs the ssh-config `invoke up` keeps: {why}")

    def inside() -> tuple[list[str], int]:
        with Transport(targets) as transport:
            outputs = [transport.run(node, argv[0], *argv[1:], timeout=CURL_MAX_TIME + 10).stdout
                       for node, argv in todo]  # fmt: skip
            return outputs, transport.connections_opened

    from tests.support.netns import call_in_netns

    outputs, connections = call_in_netns(lab.netns.name, inside)
    seconds = time.monotonic() - started
    return Way("kubelab Transport", seconds, connections, _or_none(0), _welcome_pages(outputs),
               "the ssh-config kept by `invoke up`, no Vagrant run")  # fmt: skip


def through_vagrant_ssh(lab: E2ELab, todo: list[tuple[str, list[str]]], trace_dir: Path) -> Way:
    started = time.monotonic()
    outputs, processes = [], 0
    for node, argv in todo:
        output, execs = _counted(lab, ["vagrant", "ssh", node, "-c", command_line(*argv)],
                                 trace_dir)  # fmt: skip
        outputs.append(output)
        processes += execs
    seconds = time.monotonic() - started
    return Way("vagrant ssh -c", seconds, len(todo), _or_none(processes), _welcome_pages(outputs))


def measure(lab: E2ELab, plan: Plan) -> dict[str, str]:
    """Run the command list both ways on the lab's running VMs; return the figures."""
    todo = commands(plan)
    ours = through_transport(lab, plan, todo)
    with tempfile.TemporaryDirectory(dir=lab.netns.state, prefix="strace-") as tmp:
        theirs = through_vagrant_ssh(lab, todo, Path(tmp))
    figures = {
        f"verify commands ({len(todo)}), {ours.name}": ours.row(),
        f"verify commands ({len(todo)}), {theirs.name}": theirs.row(),
        "verify commands, vagrant ssh -c / Transport wall time":
            f"{theirs.seconds / ours.seconds:.1f}x",
    }  # fmt: skip
    if ours.processes is not None and theirs.processes is not None:
        # The Transport starts no host process: the ratio has nothing to divide by.
        figures["verify commands, vagrant ssh -c / Transport host processes"] = (
            f"{theirs.processes / ours.processes:.1f}x"
            if ours.processes
            else f"{theirs.processes} vs 0 (the Transport starts none)"
        )
    return figures


_STRACE = shutil.which("strace")
_TRACES = itertools.count(1)


def _counted(lab: E2ELab, argv: list[str], trace_dir: Path) -> tuple[str, int]:
    """argv's stdout inside the lab's namespaces, and how many programs it executed."""
    trace = trace_dir / f"{next(_TRACES):03d}.strace"
    wrapped = argv
    if _STRACE:
        # seccomp-bpf: only execve stops the traced processes, so timing is barely touched.
        wrapped = [_STRACE, "-f", "--seccomp-bpf", "-qq", "-e", "trace=execve", "-o", str(trace),
                   *argv]  # fmt: skip
    # A failed curl is a figure (no welcome page), not an error.
    done = lab.netns.run(wrapped, env=lab.env(), cwd=lab.lab_dir, timeout=300, check=False)
    execs = 0
    if _STRACE:
        for line in trace.read_text().splitlines():
            # A successful execve, whole or resumed after another process's line.
            if "execve" in line and "<unfinished" not in line and line.rstrip().endswith("= 0"):
                execs += 1
    return done.stdout, execs


def _or_none(processes: int) -> int | None:
    return processes if _STRACE else None


def _welcome_pages(outputs: list[str]) -> int:
    return sum(is_welcome_page(parse_curl_stdout(out)[0]) for out in outputs)


def main() -> int:
    from tests.e2e.lab import standalone_lab
    from tests.e2e.local_repo import build_local_repo

    with standalone_lab("bench-verify") as (lab, box):
        lab.local_repo = build_local_repo(box)
        config = lab.config("prepare")
        plan = lab.plan(config)
        print("bringing up 3 VMs with stage 1 (a few minutes under emulation) ...", flush=True)
        up = lab.up(config)
        if up.rc != 0:
            print(up, file=sys.stderr)
            return 1
        failed = {n: r.tail() for n, r in install_nginx(lab).items() if not r.ok}
        if failed:
            print(f"installing nginx-light failed: {failed}", file=sys.stderr)
            return 1
        for name, value in measure(lab, plan).items():
            print(f"{name}: {value}")
        lab.invoke("destroy", "--yes", config=config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
