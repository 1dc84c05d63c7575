"""Reading and writing cryo-EM data in cryoDRGN's and RELION's formats: the public facade.

Each concern lives in a module of its own; this module re-exports their readers and writers so
that ``from ampcheck.cryoem.io import read_stack`` (and ``ampcheck.read_stack``) stay the one
place to import them from:

* :mod:`~ampcheck.cryoem.stack`: particle stacks served lazily (:class:`ImageStack`,
  :func:`read_stack`) from ``.mrcs``/``.mrc``, ``.txt`` lists and RELION ``.star`` files;
* :mod:`~ampcheck.cryoem.mrc`: MRC files, strictly validated (:func:`write_stack`,
  :class:`StackWriter`, :func:`read_mrc` / :func:`write_mrc` for volumes ``(D, D, D)``);
* :mod:`~ampcheck.cryoem.pickles`: the restricted unpickler (:func:`load_pickle`);
* :mod:`~ampcheck.cryoem.poses`: poses ``rot (N, 3, 3)``, ``trans (N, 2)`` in fractions of the
  box, and CTF ``(N, 9)`` ``[D, apix, dfu, dfv, dfang, volt, cs, w, phase_shift]``;
* :mod:`~ampcheck.cryoem.latents`: cryoDRGN's ``z.pkl`` (:func:`read_z`, :func:`write_z`);
* :mod:`~ampcheck.cryoem.star`: RELION ``.star`` poses and CTF (:func:`read_star_particles`,
  :func:`write_star`);
* :mod:`~ampcheck.cryoem.indices`: cryoDRGN's ``--ind`` index files (:func:`read_ind`).

Every write is atomic (:func:`ampcheck.files.atomic_path`). Every problem a user can fix raises
:class:`~ampcheck.errors.InputError` naming the file and what was expected.
"""

from __future__ import annotations

from ampcheck.cryoem.indices import read_ind
from ampcheck.cryoem.latents import read_z, write_z
from ampcheck.cryoem.mrc import StackWriter, read_mrc, write_mrc, write_stack
from ampcheck.cryoem.pickles import load_pickle
from ampcheck.cryoem.poses import (
    check_ctf,
    check_poses,
    read_ctf,
    read_poses,
    write_ctf,
    write_poses,
)
from ampcheck.cryoem.stack import ImageStack, read_stack
from ampcheck.cryoem.star import StarParticles, read_star_particles, write_star
from ampcheck.files import atomic_path, fsync

__all__ = [
    "atomic_path", "fsync", "ImageStack", "read_stack", "StackWriter", "write_stack", "read_mrc",
    "write_mrc", "load_pickle", "check_poses", "read_poses", "write_poses", "check_ctf",
    "read_ctf", "write_ctf", "read_z", "write_z", "StarParticles", "read_star_particles",
    "write_star", "read_ind",
]
