"""An isolated root in which a rendered stage script runs for real.

Why this shape: the scripts must run under a real bash with the real sed, awk,
grep, install, cmp and mktemp, writing real files, while nothing reaches the
machine's own /etc, its network or its kernel settings. So:

- a base root: a Debian 12 `debootstrap --variant=minbase` tree (with Debian's
  own `containerd` package, so `containerd config default` prints a real default
  config), built once and cached under /var/tmp (KUBELAB_TEST_ROOTS);
- per guest (one "VM"), an overlayfs whose lower layers are
  [harness layer: the stubs] + [seed layer: the files the guest's box ships
  that the stages edit (CentOS 7 or Debian 12)] + [base root], and whose upper
  layer collects every file the scripts write. Hashing the upper layer is how
  a test proves that a second run changes no file;
- each run in fresh namespaces: `unshare --mount --uts --ipc --net --pid`
  (a network namespace with only a down loopback: no packet can leave), then
  `chroot` into the overlay with /proc, /dev and a tmpfs /run and /tmp.

Only what needs a CentOS repository, a kernel or a live cluster is a stub
(tests/provision/stubs/kubelab-stub, one script behind many names): package
managers and package queries, systemctl, modprobe, sysctl, swapoff,
setenforce/getenforce, hostnamectl, firewall-cmd, kubeadm, kubectl, crictl,
ctr, containerd (except `config default`, handed to the real binary) and curl
(no internet here). Stubs append their argv to a log and keep their state
(installed packages, loaded modules, sysctls, services, nodes, taints) in a
control folder that is bind-mounted into the root, outside the upper layer.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelab.config import load_config
from kubelab.plan import Plan, PlannedNode, make_plan, script_path
from kubelab.render import render

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
STUB_SCRIPT = HERE / "stubs" / "kubelab-stub"
SEEDS = REPO_ROOT / "tests" / "data" / "provision" / "guests"

ROOTS_CACHE = Path(os.environ.get("KUBELAB_TEST_ROOTS", "/var/tmp/kubelab-test-roots"))
DEBIAN_MIRROR = os.environ.get("KUBELAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# containerd: its real `config default`; the rest of minbase gives bash,
# coreutils, sed, grep, mawk, diffutils, findutils, tar, gzip, util-linux, passwd.
# libnss-myhostname: Debian's postinst then puts `myhostname` in nsswitch's hosts line,
# and the centos7 seed ships CentOS 7's own nsswitch.conf (`files dns myhostname`), so
# name lookups in the stages meet the module that answers a VM's own name.
BASE_PACKAGES = ("containerd", "libnss-myhostname")
BASE_LAYOUT_VERSION = "1"  # bump to rebuild cached roots after changing build_base_root

# Every name the stub answers to. Anything else the scripts call is real.
STUBBED = (
    "yum",
    "rpm",
    "apt-get",
    "dpkg-query",
    "apt-mark",
    "systemctl",
    "modprobe",
    "sysctl",
    "swapoff",
    "setenforce",
    "getenforce",
    "hostnamectl",
    "firewall-cmd",
    "ufw",
    "kubeadm",
    "kubectl",
    "crictl",
    "ctr",
    "containerd",
    "docker",
    "curl",
    "etcdctl",
)
# Real tools from this machine, put into the root when installed here (Debian's
# golang-cfssl: the pki stage makes its certificates with the real cfssl).
REAL_TOOLS = ("cfssl", "cfssljson")

CTL_IN_ROOT = "/opt/kubelab-test/ctl"
STUB_DIR_IN_ROOT = "/opt/kubelab-test/bin"
# The PATH a stage script has: the transport runs it with `sudo`, which sets its
# secure_path. CentOS 7's sudoers has no /usr/local in it: a stage must call what it
# installs there by its full path.
SUDO_PATH = {
    "rhel": "/sbin:/bin:/usr/sbin:/usr/bin",
    "debian": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}
SCRIPT_IN_ROOT = f"{CTL_IN_ROOT}/script.sh"


class HarnessUnavailable(RuntimeError):
    """This machine cannot host the isolated root (not root, no overlayfs, no mirror)."""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unmount_under(root: Path) -> None:
    """Unmount whatever debootstrap left mounted below root (deepest first)."""
    mounts = []
    with open("/proc/mounts") as handle:
        for line in handle:
            target = line.split()[1]
            if target == str(root) or target.startswith(f"{root}/"):
                mounts.append(target)
    for target in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def base_root() -> Path:
    """The cached Debian 12 minbase root, built on first use (about 1-3 minutes)."""
    if os.geteuid() != 0:
        raise HarnessUnavailable("the isolated root needs root (debootstrap, mounts, chroot)")
    if not shutil.which("debootstrap"):
        raise HarnessUnavailable("debootstrap is not installed (apt-get install -y debootstrap)")
    key = hashlib.sha256(
        f"{SUITE}|{','.join(BASE_PACKAGES)}|{BASE_LAYOUT_VERSION}".encode()
    ).hexdigest()[:12]
    target = ROOTS_CACHE / f"debian12-{key}"
    rootfs = target / "rootfs"
    if (target / "complete").is_file():
        return rootfs
    with _locked(ROOTS_CACHE / ".build.lock"):
        if (target / "complete").is_file():
            return rootfs
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=ROOTS_CACHE))
        try:
            build_base_root(build / "rootfs")
            (build / "complete").write_text(f"{SUITE} {','.join(BASE_PACKAGES)}\n")
            if target.exists():
                shutil.rmtree(target)
            build.rename(target)
        finally:
            if build.exists():
                _unmount_under(build)
                shutil.rmtree(build, ignore_errors=True)
    return rootfs


def build_base_root(rootfs: Path) -> None:
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        SUITE,
        str(rootfs),
        DEBIAN_MIRROR,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    _unmount_under(rootfs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise HarnessUnavailable(f"debootstrap failed ({result.returncode}):\n{tail}")
    # The box's user: the stages hand it a kubeconfig.
    subprocess.run(
        [
            "chroot",
            str(rootfs),
            "useradd",
            "--create-home",
            "--uid",
            "1000",
            "--user-group",
            "--shell",
            "/bin/bash",
            "vagrant",
        ],
        check=True,
        capture_output=True,
    )
    # Nothing of the build host's identity stays in the image.
    for name in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / name).unlink(missing_ok=True)
    # Mount points the harness binds over (the upper layer must not gain them).
    (rootfs / CTL_IN_ROOT.lstrip("/")).mkdir(parents=True, exist_ok=True)


def make_harness_layer(dest: Path) -> Path:
    """The top lower layer: the stub script under every stubbed name."""
    bin_dir = dest / STUB_DIR_IN_ROOT.lstrip("/")
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(STUB_SCRIPT, bin_dir / "kubelab-stub")
    (bin_dir / "kubelab-stub").chmod(0o755)
    for name in STUBBED:
        (bin_dir / name).symlink_to("kubelab-stub")
    for name in REAL_TOOLS:
        found = shutil.which(name)
        if found:
            shutil.copy2(found, bin_dir / name)
            _copy_libraries(found, dest)
    return dest


def _copy_libraries(binary: str, dest: Path) -> None:
    """The shared libraries `binary` needs beyond glibc (minbase lacks libsqlite3)."""
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            if parts[0].startswith(("libc.so", "libm.so", "libpthread", "libdl", "ld-linux")):
                continue
            # Through the real folder: /lib is a symlink to usr/lib on merged-/usr Debian,
            # and a real lib/ folder in this layer would hide it.
            real_dir = os.path.realpath(os.path.dirname(parts[2]))
            target = dest / real_dir.lstrip("/") / parts[0]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(parts[2]), target)


@dataclass
class Call:
    """One recorded stub call."""

    argv: list[str]

    @property
    def name(self) -> str:
        return self.argv[0]

    @property
    def args(self) -> list[str]:
        return self.argv[1:]

    def __str__(self) -> str:
        return shlex.join(self.argv)


@dataclass
class RunResult:
    rc: int
    stdout: str
    stderr: str
    calls: list[Call]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Guest:
    """One VM: an overlay upper layer and a stub state that persist across runs."""

    name: str
    family: str  # rhel | debian
    seed: Path  # the seed layer (box files)
    base: Path
    harness_layer: Path
    workdir: Path
    hostname: str
    # The stub cluster (state/kube) shared with other guests of one lab: what the API
    # server knows, mounted into each root that talks to it. None: the guest's own.
    cluster: Path | None = None
    # The VM's private address, on an eth1 (a bridge: no dummy module here) in the
    # run's own network namespace:
    # getaddrinfo (getent ahostsv4, kubeadm) answers IPv4 only where an interface
    # holds IPv4 (AI_ADDRCONFIG), and nss-myhostname answers with the interfaces'
    # addresses, IPv6 link-local first, as on a CentOS 7 VM.
    address: str | None = None
    runs: list[RunResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        for sub in ("upper", "work", "merged", "ctl/state"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        state_seed = self.seed / "state"
        if state_seed.is_dir():
            shutil.copytree(state_seed, self.state, dirs_exist_ok=True)
        (self.state / "hostname").write_text(self.hostname + "\n")

    @property
    def upper(self) -> Path:
        return self.workdir / "upper"

    @property
    def ctl(self) -> Path:
        return self.workdir / "ctl"

    @property
    def state(self) -> Path:
        return self.ctl / "state"

    @property
    def calls_log(self) -> Path:
        return self.ctl / "calls.log"

    def run(
        self,
        script: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        stdin: str | bytes | None = None,
    ) -> RunResult:
        """Run a script's text with bash inside the root, as root, fed `stdin`."""
        (self.ctl / "script.sh").write_text(script)
        (self.ctl / "stdin").write_bytes(stdin.encode() if isinstance(stdin, str) else stdin or b"")
        if self.cluster is not None:
            (self.state / "kube").mkdir(parents=True, exist_ok=True)
        before = self._call_count()
        lower = ":".join(str(p) for p in (self.harness_layer, self.seed / "rootfs", self.base))
        merged = self.workdir / "merged"
        env_words = [f"{k}={v}" for k, v in (env or {}).items()]
        inner = [
            "env",
            "-i",
            f"PATH={STUB_DIR_IN_ROOT}:{SUDO_PATH[self.family]}",
            "HOME=/root",
            "LANG=C.UTF-8",
            "TERM=dumb",
            f"KUBELAB_STUB_CTL={CTL_IN_ROOT}",
            *env_words,
            "bash",
            SCRIPT_IN_ROOT,
        ]
        launcher = "\n".join(
            [
                "set -e",
                f"mount -t overlay overlay -o lowerdir={lower},upperdir={self.upper},"
                f"workdir={self.workdir / 'work'} {merged}",
                f"mount -t proc proc {merged}/proc",
                f"mount --rbind /dev {merged}/dev",
                f"mount -t tmpfs tmpfs {merged}/run",
                f"mount -t tmpfs tmpfs {merged}/tmp",
                f"mount --bind {self.ctl} {merged}{CTL_IN_ROOT}",
                *(
                    [f"mount --bind {self.cluster} {merged}{CTL_IN_ROOT}/state/kube"]
                    if self.cluster is not None
                    else []
                ),
                "ip link set lo up",
                *(
                    [
                        "ip link add eth1 type bridge",
                        f"ip addr add {self.address}/32 dev eth1",
                        "ip link set eth1 up",
                    ]
                    if self.address
                    else []
                ),
                # The UTS namespace is new each run: restore the hostname the VM had.
                f'hostname "$(cat {self.state}/hostname)"',
                f"exec chroot {merged} {shlex.join(inner)} <{self.ctl / 'stdin'}",
            ]
        )
        proc = subprocess.run(
            [
                "unshare",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--pid",
                "--fork",
                "--kill-child",
                "bash",
                "-c",
                launcher,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = RunResult(proc.returncode, proc.stdout, proc.stderr, self.calls()[before:])
        self.runs.append(result)
        return result

    def clone(self, workdir: Path) -> Guest:
        """This VM as it is now, copied to `workdir`: its upper layer (whiteouts and
        ownership kept by cp -a), stub state and runs. Its seed and the base are lower
        layers no run writes, so the copy shares them."""
        workdir.mkdir(parents=True)
        subprocess.run(["cp", "-a", f"{self.workdir}/.", str(workdir)], check=True)
        twin = copy.copy(self)  # not __post_init__: that would seed the state again
        twin.workdir = workdir
        twin.runs = list(self.runs)
        return twin

    def _call_count(self) -> int:
        return len(self.calls())

    def calls(self) -> list[Call]:
        if not self.calls_log.exists():
            return []
        return [
            Call(shlex.split(line))
            for line in self.calls_log.read_text().splitlines()
            if line.strip()
        ]

    def path(self, rel: str) -> Path | None:
        """Where a file of the merged root is, looking through the layers."""
        rel = rel.lstrip("/")
        for layer in (self.upper, self.harness_layer, self.seed / "rootfs", self.base):
            candidate = layer / rel
            if candidate.is_char_device():  # an overlay whiteout: deleted
                return None
            if candidate.exists() or candidate.is_symlink():
                return candidate
        return None

    def read(self, rel: str) -> str:
        found = self.path(rel)
        if found is None:
            raise FileNotFoundError(rel)
        return found.read_text()

    def exists(self, rel: str) -> bool:
        return self.path(rel) is not None

    def written(self) -> set[str]:
        """Every file (absolute path in the root) the runs created or changed."""
        return {
            "/" + str(p.relative_to(self.upper))
            for p in self.upper.rglob("*")
            if not p.is_dir() and not p.is_char_device()
        }

    def deleted(self) -> set[str]:
        """Every file of the lower layers the runs removed (overlay whiteouts)."""
        return {
            "/" + str(p.relative_to(self.upper))
            for p in self.upper.rglob("*")
            if p.is_char_device()
        }

    def tree_digest(self) -> str:
        """A digest of the upper layer: every path, its type, mode, owner and content."""
        digest = hashlib.sha256()
        for path in sorted(self.upper.rglob("*")):
            st = path.lstat()
            rel = str(path.relative_to(self.upper))
            digest.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0".encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            elif path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            elif path.is_char_device():
                digest.update(b"whiteout")
        return digest.hexdigest()

    def state_text(self, rel: str) -> str:
        path = self.state / rel
        return path.read_text() if path.exists() else ""


def overlay_supported(scratch: Path) -> bool:
    """Whether this kernel lets root mount an overlay in a private mount namespace."""
    for sub in ("l", "u", "w", "m"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            f"mount -t overlay overlay -o lowerdir={scratch}/l,upperdir={scratch}/u,"
            f"workdir={scratch}/w {scratch}/m",
        ],
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0


# --- rendering and seeds for the tests --------------------------------------------

DATA = REPO_ROOT / "tests" / "data" / "provision"
DEBIAN_BOX_ROOTFS = REPO_ROOT / "vagrant" / "box" / "debian12" / "rootfs"
# A join command of kubeadm's shape (token and CA hash made up; they only
# travel to the stubbed kubeadm).
JOIN_TOKEN = "abcdef.0123456789abcdef"
JOIN_CA_HASH = "sha256:" + "0f" * 32


def scenarios() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((DATA / "scenarios.yaml").read_text())["scenarios"]


def render_lab(overrides: Mapping[str, Any], lab_dir: Path = Path("/lab")) -> tuple[Plan, dict]:
    plan = make_plan(load_config(None, dict(overrides)), lab_dir)
    return plan, render(plan)


def script_for(plan: Plan, files: dict[str, str], node: PlannedNode, stage: str) -> str:
    names = [s.name for s in plan.stages_for(node)]
    return files[script_path(node, names.index(stage) + 1, stage)]


def join_command(plan: Plan) -> str:
    return (
        f"kubeadm join {plan.master.ip}:6443 --token {JOIN_TOKEN} "
        f"--discovery-token-ca-cert-hash {JOIN_CA_HASH} "
    )


def vagrant_hosts_line(hosts: str, hostname: str) -> str:
    """/etc/hosts after Vagrant's hostname capability: the name on the first free 127.0.x.1."""
    words = hosts.split()
    if hostname in words:
        return hosts
    for i in range(1, 256):
        if f"127.0.{i}.1" not in words:
            return hosts.rstrip("\n") + f"\n127.0.{i}.1 {hostname} {hostname}\n"
    raise AssertionError("no free 127.0.x.1")


def build_seed(dest: Path, guest: str, vagrant_hostname: str) -> Path:
    """The seed layer of one VM: its box's files, as Vagrant leaves them after `up`."""
    rootfs = dest / "rootfs"
    if guest == "centos7":
        shutil.copytree(SEEDS / "centos7", dest, dirs_exist_ok=True)
    elif guest == "debian12":
        # The box kubelab builds (vagrant/box/debian12) is the Debian guest.
        (rootfs / "etc").mkdir(parents=True)
        for name in ("hosts", "fstab"):
            shutil.copy(DEBIAN_BOX_ROOTFS / "etc" / name, rootfs / "etc" / name)
    else:
        raise ValueError(guest)
    hosts = rootfs / "etc" / "hosts"
    hosts.write_text(vagrant_hosts_line(hosts.read_text(), vagrant_hostname))
    return dest


GuestFactory = Callable[..., Guest]


def guest_factory(folder: Path, base: Path, harness_layer: Path) -> GuestFactory:
    """new_guest(guest, node, hostname_before=...): a fresh VM for `node` of the plan,
    its layers and state under `folder`.

    hostname_before is the hostname the VM has before the stages run (default:
    the plan's, as Vagrant sets it); Vagrant's loopback line carries it.
    """

    def factory(
        guest: str,
        node: PlannedNode,
        hostname_before: str | None = None,
        extra_files: Mapping[str, str] | None = None,
        cluster: Path | None = None,
    ) -> Guest:
        before = hostname_before or node.hostname
        seed = build_seed(folder / f"seed-{node.name}", guest, before)
        for rel, text in (extra_files or {}).items():
            path = seed / "rootfs" / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        family = "rhel" if guest == "centos7" else "debian"
        return Guest(
            name=node.name,
            family=family,
            seed=seed,
            base=base,
            harness_layer=harness_layer,
            workdir=folder / f"vm-{node.name}",
            hostname=before,
            cluster=cluster,
            address=node.ip,
        )

    return factory


def heredoc(script: str, path: str) -> str:
    """The content a rendered script writes to `path` with put_file ... <<'KUBELAB_EOF'."""
    lines = script.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith(f"put_file {path} ") and line.rstrip().endswith("<<'KUBELAB_EOF'"):
            end = next(
                j for j in range(i + 1, len(lines)) if lines[j].rstrip("\n") == "KUBELAB_EOF"
            )
            return "".join(lines[i + 1 : end])
    raise KeyError(f"the script writes no {path} from a heredoc")
