"""Boxes: list, import, remove and build Vagrant boxes for classrooms without internet.

A teacher builds a box once (or downloads one) and hands out the .box file;
students import it under a name and point their lab at it. `build_box_file`
makes a small libvirt box offline from distribution packages with the recipe
under vagrant/box/<distro>/ (build.sh, the box's own Vagrantfile, its files).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from kubelab import REPO_ROOT
from kubelab.backend.libvirt_inspect import LibvirtInspector
from kubelab.backend.vagrant_driver import PROVIDER, Box, VagrantDriver
from kubelab.errors import KubelabError

RECIPES = REPO_ROOT / "vagrant" / "box"
BUILD_TOOLS = {
    "debootstrap": "debootstrap",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "vagrant": "vagrant",
}
TAIL_LINES = 15


def distros() -> list[str]:
    """The distributions a box can be built from: one recipe folder each."""
    return sorted(d.name for d in RECIPES.iterdir() if (d / "build.sh").is_file())


def variants(distro: str) -> list[str]:
    """The variants of a distro's box: one file each in its recipe's variants/ folder."""
    folder = _recipe(distro) / "variants"
    return sorted(p.stem for p in folder.glob("*.sh")) if folder.is_dir() else []


def list_boxes(driver: VagrantDriver) -> list[Box]:
    return driver.box_list()


def import_box(driver: VagrantDriver, file: Path, name: str) -> None:
    """Add a .box file to Vagrant under a name (a box a teacher handed out)."""
    if not Path(file).is_file():
        raise KubelabError(
            f"box file {file} not found", hint="give the path of a .box file", code=2
        )
    if any(box.name == name for box in driver.box_list()):
        raise KubelabError(
            f"a box named {name!r} is already installed",
            hint=f"`invoke box.remove {name}` first, or pick another name",
            code=2,
        )
    driver.box_add(Path(file), name)


def box_volume_prefix(name: str) -> str:
    """How vagrant-libvirt 0.11 names a box's image in the storage pool, up to the version.

    The full name is `<prefix><version>_box.img`; a box added from a file has
    version 0 and gets `0_<mtime of box.img>` instead.
    """
    return name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"


def remove_box(
    driver: VagrantDriver, name: str, inspector: LibvirtInspector, pool: str
) -> list[str]:
    """Remove a box from Vagrant and its images from the libvirt pool; return the volumes deleted.

    `vagrant box remove` leaves libvirt's copy of the image behind (a few hundred
    MB per box); VMs still created from it use it as their backing file, so a box
    in use is refused.
    """
    installed = [box for box in driver.box_list() if box.name == name]
    volumes = [v for v in inspector.volumes(pool, box_volume_prefix(name)) if v.endswith(".img")]
    if not installed and not volumes:
        raise KubelabError(
            f"no box named {name!r}", hint="`invoke box.list` shows the boxes", code=2
        )
    users = inspector.volumes_backed_by(pool, volumes)
    if users:
        raise KubelabError(
            f"box {name!r} is in use: the disks {', '.join(users)} are made from it",
            hint="destroy the labs using it first (`invoke destroy --yes`)",
        )
    if any(box.provider == PROVIDER for box in installed):
        driver.box_remove(name)
    for volume in volumes:
        inspector.delete_volume(pool, volume)
    return volumes


def recipe_hash(distro: str) -> str:
    """A digest of every file of a box recipe: a built box is reused until the recipe changes."""
    recipe = _recipe(distro)
    digest = hashlib.sha256()
    for path in sorted(p for p in recipe.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(recipe)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_box_file(
    distro: str, cache_dir: Path, log_path: Path, force: bool = False, variant: str = ""
) -> Path:
    """Build the box of a distro (and variant) into cache_dir, or reuse the one built from
    the same recipe.

    Needs root and the Debian mirror; takes about a minute. Output goes to log_path.
    """
    recipe = _recipe(distro)
    if variant and variant not in variants(distro):
        known = ", ".join(variants(distro)) or "none"
        raise KubelabError(f"unknown {distro} box variant {variant!r}; valid: {known}", code=2)
    flavour = f"{distro}-{variant}" if variant else distro
    box = Path(cache_dir) / f"kubelab-{flavour}-{recipe_hash(distro)}.box"
    if box.is_file() and not force:
        return box
    _check_can_build()
    box.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = ["bash", str(recipe / "build.sh"), str(box), str(Path(cache_dir) / "debs")]
    if variant:
        command.append(variant)
    # Two builds at once (two test runs, two terminals) would share the .deb cache;
    # the second waits and then finds the first one's box.
    with (Path(cache_dir) / ".lock").open("w") as lock, log_path.open("a") as log:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if box.is_file() and not force:
            return box
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        tail = "\n".join("  " + line for line in lines)
        raise KubelabError(
            f"building the {distro} box failed (`{' '.join(command)}` exit code "
            f"{result.returncode}):\n{tail}",
            hint=f"full output in {log_path}; the build needs the Debian mirror",
        )
    return box


def build_box(
    driver: VagrantDriver,
    distro: str,
    name: str,
    cache_dir: Path,
    log_path: Path,
    force: bool = False,
    variant: str = "",
) -> Path:
    """Build (or reuse) a distro's box and import it under name; return the .box file."""
    box = build_box_file(distro, cache_dir, log_path, force=force, variant=variant)
    import_box(driver, box, name)
    return box


def _recipe(distro: str) -> Path:
    if distro not in distros():
        raise KubelabError(f"unknown distro {distro!r}; valid: {', '.join(distros())}", code=2)
    return RECIPES / distro


def _check_can_build() -> None:
    if os.geteuid() != 0:
        raise KubelabError(
            "building a box needs root (debootstrap, chroot)", hint="run it with sudo", code=2
        )
    missing = sorted(pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None)
    if missing:
        raise KubelabError(
            f"building a box needs {', '.join(missing)}",
            hint=f"apt-get install {' '.join(missing)}",
            code=2,
        )
