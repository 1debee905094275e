"""Keeping a run's reads inside the task's data root.

An annotation names its video relative to the release folder, so a broken or hostile one can point
anywhere: ``../../etc/passwd``, ``/etc/shadow``, or a symbolic link inside the release that leads
to another tree. ``check_inside_root`` refuses such a path (``VideoOutsideDataRoot``) before
anything is opened, read or hashed:

1. lexically: the path with ``.`` and ``..`` collapsed (no link followed) must lie under the root;
2. physically: the path with every symbolic link resolved must lie under the resolved root, or under
   a trusted folder: the ``blobs/`` folder of a Hugging Face cache repository when the root is (inside)
   one of its snapshots (``…/datasets--org--name/snapshots/<commit>/``, whose files are links into
   ``../../blobs/``), and the folders listed in ``$VAMBA_EVAL_TRUSTED_DIRS`` (``os.pathsep``-separated:
   for releases that keep their videos on another disk through links).

The images of a frame folder that are links are checked the same way. A symbolic-link loop is not
this module's business: it passes here and is reported by the probe (``VideoUnreadable``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vamba_eval.video.errors import PathLike, VideoOutsideDataRoot

TRUSTED_ENV = "VAMBA_EVAL_TRUSTED_DIRS"
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _inside(path: str, root: str) -> bool:
    """Both absolute and normalised: is ``path`` ``root`` or below it?"""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives (Windows)
        return False


def trusted_roots(root: PathLike) -> list[str]:
    """Where the resolved files of a release under ``root`` may live (see the module docstring)."""
    real = Path(os.path.realpath(root))
    out = [str(real)]
    for folder in (real, *real.parents):
        if folder.parent.name == "snapshots" and _COMMIT.fullmatch(folder.name):
            out.append(str(folder.parent.parent / "blobs"))
            break
    extra = os.environ.get(TRUSTED_ENV, "")
    out += [os.path.realpath(os.path.expanduser(d)) for d in extra.split(os.pathsep) if d.strip()]
    return out


def check_inside_root(path: PathLike, root: PathLike, what: str = "video") -> None:
    """Raise ``VideoOutsideDataRoot`` unless ``path`` stays under ``root`` (see the module docstring).

    Nothing under ``path`` is opened: only links are read (and a frame folder's entries listed).
    """
    lexical, base = os.path.abspath(os.fspath(path)), os.path.abspath(os.fspath(root))
    if not _inside(lexical, base):
        raise VideoOutsideDataRoot(
            path, f"the annotation's {what} path leads outside the data root {root} (to {lexical}); refused, not read"
        )
    allowed, real = trusted_roots(base), os.path.realpath(lexical)
    _check_resolved(path, real, allowed, root, what)
    if os.path.isdir(real):
        try:
            entries = list(os.scandir(real))
        except OSError:
            return  # unreadable folder: the probe reports it
        for entry in entries:
            if entry.is_symlink():
                _check_resolved(entry.path, os.path.realpath(entry.path), allowed, root, f"{what} frame")


def _check_resolved(path: PathLike, real: str, allowed: list[str], root: PathLike, what: str) -> None:
    if not any(_inside(real, a) for a in allowed):
        raise VideoOutsideDataRoot(
            path, f"the {what} is a symbolic link (or lies under one) that leads to {real}, outside the data "
                  f"root {root}; refused, not read"
        )
