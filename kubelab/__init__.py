"""kubelab: a local Kubernetes classroom lab on vagrant-libvirt."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root: templates (vagrant/, provision/) and exercise data (labs/)
# are files beside the package, not package data, so users can read and edit them.
REPO_ROOT = Path(__file__).resolve().parent.parent
