"""Vagrant, driven through python-vagrant: the only module that imports it.

A `VagrantDriver` runs vagrant in one lab folder (the folder of a Vagrantfile)
with the libvirt provider. Every command's output goes to one log file; a failed
command raises KubelabError naming the command, its exit code, the last lines of
its output and the log, so callers never see python-vagrant or subprocess errors.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import vagrant
from kubelab.errors import KubelabError

PROVIDER = "libvirt"
TAIL_LINES = 15

T = TypeVar("T")


@dataclass(frozen=True)
class Box:
    """One box installed in Vagrant (`vagrant box list`)."""

    name: str
    provider: str
    version: str


class VagrantDriver:
    """Vagrant in one lab folder.

    lab_dir: the folder holding the Vagrantfile (vagrant runs there).
    log_path: every vagrant command appends its output here.
    env: variables set on top of this process's environment (VAGRANT_HOME, ...).

    Machine states are python-vagrant's: "running", "poweroff" (libvirt's
    shutoff), "saved" (libvirt's paused), "not_created", and others vagrant-libvirt
    may report ("preparing", "inaccessible").
    """

    def __init__(self, lab_dir: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.lab_dir = Path(lab_dir)
        self.log_path = Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self._vagrant = vagrant.Vagrant(
            root=str(self.lab_dir), env=self.env, out_cm=self._log, err_cm=self._log
        )

    # -- lifecycle ----------------------------------------------------------

    def up(self, vm_names: Sequence[str] | None = None, provision: bool = False) -> None:
        """Boot the VMs (all of them by default); vagrant-libvirt boots them in parallel.

        Provisioning is off by default: kubelab provisions over SSH itself.
        """
        self._run(
            f"vagrant up {_names(vm_names)}",
            lambda: self._vagrant.up(
                vm_name=_target(vm_names), provision=provision, provider=PROVIDER
            ),
        )

    def halt(self, vm_names: Sequence[str] | None = None) -> None:
        self._run(
            f"vagrant halt {_names(vm_names)}",
            lambda: self._vagrant.halt(vm_name=_target(vm_names)),
        )

    def destroy(self) -> None:
        """Destroy every VM of the lab (vagrant destroy --force)."""
        self._run("vagrant destroy --force", self._vagrant.destroy)

    def status(self) -> dict[str, str]:
        """Each VM's name -> its state (see the class docstring)."""
        found = self._run("vagrant status", self._vagrant.status)
        return {s.name: s.state for s in found}

    def ssh_config(self, vm_name: str | None = None) -> str:
        """The raw `vagrant ssh-config [VM]` text: a Host block for ssh_config(5) per VM
        (every VM of the lab when no name is given: one vagrant process for all)."""
        command = f"vagrant ssh-config {vm_name}" if vm_name else "vagrant ssh-config"
        return self._run(command, lambda: self._vagrant.ssh_config(vm_name=vm_name))

    def validate(self) -> None:
        """Run the real `vagrant validate` in the lab folder; raise with its output if it fails.

        python-vagrant's own validate() ignores the driver's environment, so it is run here.
        """
        command = "vagrant validate"
        self._begin(command)
        result = subprocess.run(
            ["vagrant", "validate"],
            cwd=self.lab_dir,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        output = result.stdout + result.stderr
        with self._log() as log:
            log.write(output)
        if result.returncode != 0:
            raise self._failure(command, result.returncode, output)

    # -- this host's vagrant ------------------------------------------------

    def version(self) -> str:
        """The installed vagrant's version (`vagrant --version`), e.g. "2.3.4"."""
        return self._run("vagrant --version", self._vagrant.version)

    def plugins(self) -> dict[str, str]:
        """Each installed plugin's name -> its version as vagrant prints it
        ("0.11.2, system" for one the distribution installed)."""
        found = self._run("vagrant plugin list", self._vagrant.plugin_list)
        return {p.name: p.version for p in found}

    # -- boxes --------------------------------------------------------------

    def box_list(self) -> list[Box]:
        found = self._run("vagrant box list", self._vagrant.box_list)
        return [Box(b.name, b.provider or "", b.version or "") for b in found]

    def box_add(self, path: Path, name: str, force: bool = False) -> None:
        """Add a .box file under a name (`vagrant box add --name NAME FILE`)."""
        self._run(
            f"vagrant box add --name {name} {path}",
            lambda: self._vagrant.box_add(
                name, str(Path(path).resolve()), provider=PROVIDER, force=force
            ),
        )

    def box_remove(self, name: str) -> None:
        """Remove every version of a libvirt box from Vagrant.

        Leaves libvirt's copy of the image in the storage pool: see kubelab.boxes.
        """
        # python-vagrant's box_remove() passes the provider as a second argument,
        # which vagrant 2.3 calls deprecated and says the next version drops, and
        # removes one version only; so the command is spelled out here.
        argv = ["box", "remove", "--force", "--all", "--provider", PROVIDER, name]
        self._run(f"vagrant {' '.join(argv)}", lambda: self._vagrant._call_vagrant_command(argv))

    # -- plumbing -----------------------------------------------------------

    @contextmanager
    def _log(self) -> Iterator[IO[str]]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            yield log

    def _begin(self, command: str) -> int:
        """Write the command to the log; return where its output starts."""
        with self._log() as log:
            log.write(f"\n$ {command}  # in {self.lab_dir}\n")
            return log.tell()

    def _run(self, command: str, call: Callable[[], T]) -> T:
        start = self._begin(command)
        try:
            return call()
        except subprocess.CalledProcessError as exc:
            # Commands whose output python-vagrant parses (--machine-readable) say
            # why they failed on stdout, which it captured instead of logging.
            captured = _readable(exc.output.decode(errors="replace") if exc.output else "")
            with self._log() as log:
                log.write(captured)
            raise self._failure(command, exc.returncode, self._log_since(start)) from None
        except FileNotFoundError as exc:
            raise KubelabError(
                f"cannot run {command}: {exc.strerror}: {exc.filename}",
                hint="install vagrant and the vagrant-libvirt plugin",
            ) from None
        except RuntimeError as exc:  # python-vagrant: no vagrant executable on PATH
            raise KubelabError(
                f"cannot run {command}: {exc}",
                hint="install vagrant and the vagrant-libvirt plugin",
            ) from None

    def _log_since(self, offset: int) -> str:
        with self.log_path.open(encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return log.read()

    def _failure(self, command: str, code: int, output: str) -> KubelabError:
        # A Ruby backtrace would push the cause (its first line) out of the tail.
        lines = [
            line for line in output.splitlines() if line.strip() and not _BACKTRACE_LINE.match(line)
        ]
        tail = "\n".join("  " + line for line in lines[-TAIL_LINES:])
        return KubelabError(
            f"`{command}` failed with exit code {code}:\n{tail}",
            hint=f"full output in {self.log_path}",
        )


_BACKTRACE_LINE = re.compile(r"^\s+from \S+:\d+:in `")


def _readable(output: str) -> str:
    """The messages in vagrant's --machine-readable output (`TIME,TARGET,KIND,DATA` lines)."""
    lines = []
    for line in output.splitlines():
        fields = line.split(",", 3)
        if len(fields) == 4 and fields[0].isdigit():
            if fields[2] not in ("error-exit", "ui"):
                continue
            line = fields[3].split(",", 1)[-1]  # drop the error class or the ui level
            line = line.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n")
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def _names(vm_names: Sequence[str] | None) -> str:
    return " ".join(vm_names) if vm_names else "(all VMs)"


def _target(vm_names: Sequence[str] | None) -> str | None:
    """The one machine argument python-vagrant passes: a name, or a regex for several.

    Vagrant reads an argument between slashes as a regular expression over the
    machine names, so several VMs still boot in one (parallel) `vagrant up`.
    """
    if not vm_names:
        return None
    if len(vm_names) == 1:
        return vm_names[0]
    return "/^(" + "|".join(re.escape(n) for n in vm_names) + ")$/"
