"""Benchmark: boot the end-to-end lab's three VMs in parallel, then one after another.

    sudo .venv/bin/python tests/e2e/bench_boot.py [--fresh-box]

In a libvirtd of its own (a network namespace: nothing reaches the machine's own
network), with the offline Debian box and driver qemu (software emulation):

1. the box: built from the Debian mirror, or taken from the cache (--fresh-box
   rebuilds it);
2. `invoke up` of master, node1 and node2 (tests/data/e2e/lab.yaml, the smoke stage
   only): the wall time, and the boot time kubelab reports (one `vagrant up` of the
   three VMs, which vagrant-libvirt boots in parallel);
3. `invoke destroy --yes`;
4. the same VMs booted one after another: `vagrant up --no-provision NODE` three
   times in the rendered lab folder, each timed (the boot time of one VM alone);
5. `invoke destroy --yes` again.

Before each boot the box's image is removed from the storage pool, so both runs
pay its upload once. Prints the figures and the ratio of the parallel boot to the
sum of the one-by-one boots; asserts nothing. Takes about 8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kubelab.backend.libvirt_inspect import LibvirtInspector  # noqa: E402
from kubelab.boxes import box_volume_prefix, build_box_file  # noqa: E402
from tests.e2e.lab import BOX_NAME, E2E_DIR, NODES, E2ELab, standalone_lab  # noqa: E402
from tests.support.libvirt_helpers import BOX_CACHE, TEST_DISTRO, TEST_VARIANT  # noqa: E402


def forget_box_image(lab: E2ELab, pool: str) -> None:
    """Delete the box's image from the pool: the next boot uploads it again."""
    inspector = LibvirtInspector(lab.netns.host_uri)
    for volume in inspector.volumes(pool, box_volume_prefix(BOX_NAME)):
        inspector.delete_volume(pool, volume)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-box", action="store_true", help="rebuild the box, not the cache")
    args = parser.parse_args()
    figures: dict[str, str] = {}

    started = time.monotonic()
    box = build_box_file(TEST_DISTRO, BOX_CACHE, E2E_DIR / "box-build" / "build.log",
                         force=args.fresh_box, variant=TEST_VARIANT)  # fmt: skip
    how = "built" if args.fresh_box else "built or taken from the cache"
    figures["box"] = (
        f"{time.monotonic() - started:.1f} s ({how}: {box.name}, "
        f"{box.stat().st_size / 2**20:.0f} MiB)"
    )
    started = time.monotonic()
    with standalone_lab("bench-boot") as (lab, _box):
        figures["harness start + invoke box build (import)"] = f"{time.monotonic() - started:.1f} s"
        config = lab.config()
        pool = lab.plan(config).config.libvirt.storage_pool

        print("parallel: invoke up of 3 VMs ...", flush=True)
        up = lab.up(config)
        if up.rc != 0:
            print(up, file=sys.stderr)
            return 1
        parallel_boot = up.timings["boot"]
        figures["invoke up, 3 VMs in parallel (wall)"] = f"{up.seconds:.1f} s"
        figures["invoke up, its own timings"] = ", ".join(
            f"{k} {v:.0f} s" for k, v in up.timings.items()
        )
        destroyed = lab.invoke("destroy", "--yes", config=config)
        figures["invoke destroy --yes"] = f"{destroyed.seconds:.1f} s (exit {destroyed.rc})"

        print("one after another: vagrant up NODE, 3 times ...", flush=True)
        forget_box_image(lab, pool)
        rendered = lab.invoke("render", "--box", BOX_NAME, "--config", str(config),
                              "--out", str(lab.lab_dir))  # fmt: skip
        if rendered.rc != 0:
            print(rendered, file=sys.stderr)
            return 1
        one_by_one = {}
        for node in NODES:
            booted = lab.vagrant("up", "--no-provision", node)
            if booted.rc != 0:
                print(booted, file=sys.stderr)
                return 1
            one_by_one[node] = booted.seconds
            figures[f"vagrant up {node} alone"] = f"{booted.seconds:.1f} s"
        total = sum(one_by_one.values())
        figures["3 VMs one after another (sum)"] = f"{total:.1f} s"
        figures["parallel boot / one after another"] = (
            f"{parallel_boot:.0f} s / {total:.0f} s = {parallel_boot / total:.2f}"
        )
        destroyed = lab.invoke("destroy", "--yes", config=config)
        figures["invoke destroy --yes (after one by one)"] = (
            f"{destroyed.seconds:.1f} s (exit {destroyed.rc})"
        )
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
