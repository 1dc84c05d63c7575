"""Atomic models read from files: a list of structures (gemmi) or a trajectory (MDAnalysis).

The optional ``structures`` extra (``pip install "ampcheck[structures]"``) provides both readers;
they are imported here only, when a model is read. What comes out is an :class:`Ensemble`:
one set of atom positions per state, aligned on a chosen rigid core (so that what moves is the
molecule's internal motion) and centred on the box, with each atom's weight, the integral of
its density: the element's electron scattering factor at zero angle ``f_e(0)`` (Å), the sum of
the five Gaussian amplitudes of the International Tables' fit (Vol. C, Table 4.3.2.2; Peng et
al. 1996), as gemmi tabulates them.

Selections are the same for both readers (one syntax to learn): ``atoms`` is ``heavy`` (no
hydrogens; the default), ``all``, ``backbone`` (N, CA, C, O) or ``ca``; waters are always
dropped; ``residues`` and ``core`` are comma-separated residue ranges, each ``[CHAIN:]LO-HI``
or ``[CHAIN:]N``, where the chain is the model's chain name (its segment id where the chain has
no name; a trajectory's segment id). In standard residues (and force fields' variants) an
atom's element is the first letter of its name (files from MD often lack the element column);
elsewhere the file's. A file named ``MDAnalysisTests:NAME`` is NAME in that package's test
data (adenylate kinase's open and closed structures, ``adk_open.pdb`` and ``adk_closed.pdb``,
and its closing trajectory, ``adk_dims.dcd`` with ``adk.psf``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError, first_line

ATOM_SETS = ("heavy", "all", "backbone", "ca")
WATERS = frozenset({"HOH", "WAT", "H2O", "DOD", "TIP", "TIP3", "TIP4", "TIP5", "SOL", "SPC",
                    "T3P", "T4P"})
#: Residue names of MD force fields (protonation states) that mean standard amino acids.
FORCE_FIELD_RESIDUES = frozenset({"HSD", "HSE", "HSP", "HID", "HIE", "HIP", "CYX", "CYM", "ASH",
                                  "GLH", "LYN"})
_BACKBONE = frozenset({"N", "CA", "C", "O"})
_RANGE = re.compile(r"^(?:([A-Za-z0-9_]+):)?(-?\d+)(?:-(-?\d+))?$")


def _missing(module: str, err: ImportError) -> ConfigError:
    return ConfigError(f"reading atomic models needs the optional package {module} "
                       f"({first_line(err)}); install it with: pip install "
                       "'ampcheck[structures]'")


def _gemmi():
    try:
        import gemmi
    except ImportError as err:
        raise _missing("gemmi", err) from None
    return gemmi


def _mdanalysis():
    try:
        import MDAnalysis
    except ImportError as err:
        raise _missing("MDAnalysis", err) from None
    return MDAnalysis


#: ``MDAnalysisTests:NAME`` names a file of that package's test data (adenylate kinase's
#: structures and trajectory, among others): examples that run wherever the extra is installed.
PACKAGE_PREFIX = "MDAnalysisTests:"


def resolve(path: str | Path) -> Path:
    """``path``, or for ``MDAnalysisTests:NAME`` the file NAME of that package's data."""
    text = str(path)
    if not text.lower().startswith(PACKAGE_PREFIX.lower()):
        return Path(path)
    name = text[len(PACKAGE_PREFIX):]
    try:
        import MDAnalysisTests
    except ImportError as err:
        raise _missing("MDAnalysisTests", err) from None
    found = Path(MDAnalysisTests.__file__).parent / "data" / name
    if not name or "/" in name or not found.is_file():
        raise InputError(f"{text}: no file {name!r} in MDAnalysisTests' data (e.g. "
                         "adk_open.pdb, adk_closed.pdb, adk.psf, adk_dims.dcd)")
    return found


def parse_residues(spec: str | None, option: str = "--residues"
                   ) -> tuple[tuple[str | None, int, int], ...] | None:
    """``"A:1-29,60-121"`` as ``(("A", 1, 29), (None, 60, 121))``; None for None."""
    if spec is None:
        return None
    out = []
    for part in spec.split(","):
        m = _RANGE.match(part.strip())
        if not m or int(m[3] if m[3] is not None else m[2]) < int(m[2]):
            raise ConfigError(f"{option} {spec!r}: expected comma-separated residue ranges "
                              "[CHAIN:]LO-HI or [CHAIN:]N, e.g. A:1-29,60-121")
        out.append((m[1], int(m[2]), int(m[3] if m[3] is not None else m[2])))
    return tuple(out)


@dataclass(frozen=True)
class Records:
    """One model's atoms: ``chain``, ``resnum``, ``resname``, ``name``, ``element`` ``(K,)``
    string/int arrays and ``coords`` ``(F, K, 3)`` Å (F = 1 for a structure file)."""

    chain: np.ndarray
    resnum: np.ndarray
    resname: np.ndarray
    name: np.ndarray
    element: np.ndarray
    coords: np.ndarray

    def keys(self) -> np.ndarray:
        """``"k:resnum:name"`` of each atom, with ``k`` its chain's rank of appearance: what
        identifies an atom across models (files name the same chain differently: a PDB file's
        blank chain with a segment id, the same model written as mmCIF)."""
        _, first, inverse = np.unique(self.chain, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))[inverse]
        return np.char.add(np.char.add(np.char.add(rank.astype(str), ":"),
                                       np.char.add(self.resnum.astype(str), ":")),
                           self.name.astype(str))

    def in_residues(self, ranges) -> np.ndarray:
        keep = np.zeros(len(self.name), dtype=bool)
        for chain, lo, hi in ranges:
            hit = (self.resnum >= lo) & (self.resnum <= hi)
            keep |= hit if chain is None else hit & (self.chain == chain)
        return keep

    def take(self, keep: np.ndarray) -> Records:
        return Records(self.chain[keep], self.resnum[keep], self.resname[keep], self.name[keep],
                       self.element[keep], self.coords[:, keep])


def select(rec: Records, atoms: str, residues, where: str) -> Records:
    """The atoms of ``rec`` in the set ``atoms`` and the ``residues`` ranges (waters never);
    an empty result is an :class:`InputError` naming ``where``."""
    if atoms not in ATOM_SETS:
        raise ConfigError(f"--atoms {atoms!r}: expected one of {', '.join(ATOM_SETS)}")
    keep = ~np.isin(np.char.upper(rec.resname.astype(str)), list(WATERS))
    if atoms == "heavy":
        keep &= rec.element != "H"
    elif atoms == "backbone":
        keep &= np.isin(rec.name, list(_BACKBONE))
    elif atoms == "ca":
        keep &= (rec.name == "CA") & (rec.element == "C")
    if residues is not None:
        keep &= rec.in_residues(residues)
    if not keep.any():
        raise InputError(f"{where}: no atom matches the selection (--atoms {atoms}"
                         + ("" if residues is None else ", --residues as given") + ")")
    return rec.take(keep)


def read_structure(path: str | Path) -> Records:
    """The first model of a PDB or mmCIF file (gemmi), first alternate conformations only."""
    gemmi = _gemmi()
    path = resolve(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a PDB or mmCIF structure)")
    try:
        st = gemmi.read_structure(str(path))
        st.remove_alternative_conformations()
    except (RuntimeError, ValueError, OSError) as err:
        raise InputError(f"{path}: not a structure gemmi can read ({first_line(err)})") from None
    rows = []
    for ch in st[0] if len(st) else []:
        for res in ch:
            info = gemmi.find_tabulated_residue(res.name)
            polymer = res.name in FORCE_FIELD_RESIDUES or (
                info is not None and (info.is_amino_acid() or info.is_nucleic_acid()))
            for at in res:
                # a standard residue's atom names begin with their element (files without the
                # element column, as CHARMM writes them, would leave gemmi guessing)
                el = _guess_element(at.name) if polymer else at.element.name.upper()
                rows.append((ch.name or res.segment.strip(), res.seqid.num, res.name, at.name,
                             el, at.pos.x, at.pos.y, at.pos.z))
    if not rows:
        raise InputError(f"{path}: holds no atoms (expected a PDB or mmCIF structure)")
    chain, resnum, resname, name, element, x, y, z = zip(*rows, strict=True)
    return Records(np.array(chain), np.array(resnum), np.array(resname), np.array(name),
                   np.array(element), np.array([np.column_stack([x, y, z])], dtype=np.float64))


def _guess_element(name: str) -> str:
    letters = "".join(c for c in name if c.isalpha())
    return letters[:1].upper()


def read_trajectory(trajectory: str | Path, topology: str | Path, stride: int = 1
                    ) -> tuple[Records, np.ndarray]:
    """Every ``stride``-th frame of a trajectory (MDAnalysis, any format it reads) with its
    topology; returns the records and the frame numbers ``(F,)``. Elements are the
    topology's where it has them, else the first letter of each atom's name."""
    mda = _mdanalysis()
    trajectory, topology = resolve(trajectory), resolve(topology)
    for p, what in ((topology, "topology"), (trajectory, "trajectory")):
        if not Path(p).is_file():
            raise InputError(f"{p}: file not found (expected a {what} MDAnalysis reads)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = mda.Universe(str(topology), str(trajectory))
            ag = u.atoms
            frames, coords = [], []
            for ts in u.trajectory[::stride]:
                frames.append(ts.frame)
                coords.append(ag.positions.astype(np.float64))
    except Exception as err:  # MDAnalysis raises many kinds for a file it cannot read  # noqa: BLE001
        raise InputError(f"{trajectory} with {topology}: MDAnalysis cannot read them "
                         f"({first_line(err)})") from None
    if not len(ag) or not frames:
        raise InputError(f"{trajectory} with {topology}: no atoms or no frames")
    try:
        element = np.char.upper(np.asarray(ag.elements, dtype=str))
        if (element == "").any():
            raise AttributeError
    except (AttributeError, mda.exceptions.NoDataError):
        element = np.array([_guess_element(n) for n in ag.names])
    chain = np.asarray(ag.segids, dtype=str)
    return Records(chain, np.asarray(ag.resids), np.asarray(ag.resnames, dtype=str),
                   np.asarray(ag.names, dtype=str), element, np.stack(coords)), np.array(frames)


def element_weights(elements: np.ndarray, where: str) -> np.ndarray:
    """``f_e(0)`` (Å) of each element symbol (see the module's docstring)."""
    gemmi = _gemmi()
    table = {}
    for sym in np.unique(elements):
        e = gemmi.Element(str(sym))
        if e.atomic_number == 0 or sym in ("", "X") or e.c4322 is None:
            raise InputError(f"{where}: an atom of unknown element {sym!r}")
        table[sym] = float(sum(e.c4322.a))
    return np.array([table[s] for s in elements])


def kabsch(mobile: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` and translation ``t`` that minimise ``|mobile @ R.T + t − target|``
    over ``(K, 3)`` corresponding points (proper rotations only)."""
    mc, tc = mobile.mean(0), target.mean(0)
    u, _, vt = np.linalg.svd((mobile - mc).T @ (target - tc))
    d = np.sign(np.linalg.det(u @ vt))
    rot = (u @ np.diag([1.0, 1.0, d]) @ vt).T
    return rot, tc - mc @ rot.T


@dataclass(frozen=True)
class Ensemble:
    """The states of a molecule, aligned and centred (see the module's docstring).

    Attributes:
        coords: per state, ``(K_s, 3)`` Å from the box centre.
        weights: per state, ``(K_s,)`` ``f_e(0)`` of each atom (Å).
        labels: per state, where it came from (a file name, ``frame 12``).
        kind: ``"structures"`` or ``"trajectory"``.
        frames: trajectory frame numbers ``(S,)``; None for structures.
        core_rmsd: per state, the RMSD (Å) of the core atoms to the first state's after
            alignment (≈ 0 when the core is rigid).
        rmsd: per state, the all-atom RMSD (Å) to the first state (NaN where the atoms differ).
        core_atoms: the number of atoms aligned on (0 without alignment).
    """

    coords: list
    weights: list
    labels: list
    kind: str
    frames: np.ndarray | None
    core_rmsd: np.ndarray
    rmsd: np.ndarray
    core_atoms: int
    sources: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)

    @property
    def radius(self) -> float:
        """Largest distance (Å) of an atom centre from the box centre, over all states."""
        return float(max(np.linalg.norm(c, axis=1).max() for c in self.coords))

    @property
    def n_atoms(self) -> list[int]:
        return [len(c) for c in self.coords]


def load_ensemble(structures=None, trajectory=None, topology=None, *, atoms: str = "heavy",
                  residues: str | None = None, core: str | None = None, align: bool = True,
                  stride: int = 1) -> Ensemble:
    """Read, select, align on the core and centre (see the module's docstring). Give either
    ``structures`` (paths) or ``trajectory`` with ``topology``."""
    res_ranges = parse_residues(residues)
    core_ranges = parse_residues(core, "--core")
    if structures:
        models = [select(read_structure(p), atoms, res_ranges, str(p)) for p in structures]
        labels, frames, kind = [resolve(p).name for p in structures], None, "structures"
        where = [str(p) for p in structures]
        sources = {"structures": [str(resolve(p).resolve()) for p in structures]}
    else:
        rec, frames = read_trajectory(trajectory, topology, stride)
        rec = select(rec, atoms, res_ranges, str(trajectory))
        models = [Records(rec.chain, rec.resnum, rec.resname, rec.name, rec.element,
                          rec.coords[f:f + 1]) for f in range(len(frames))]
        labels, kind = [f"frame {f}" for f in frames], "trajectory"
        where = [f"{trajectory} frame {f}" for f in frames]
        sources = {"trajectory": str(resolve(trajectory).resolve()),
                   "topology": str(resolve(topology).resolve()), "stride": stride}
    coords = [m.coords[0].copy() for m in models]
    weights = [element_weights(m.element, w) for m, w in zip(models, where, strict=True)]
    keys = [m.keys() for m in models]
    same = all(len(k) == len(keys[0]) and (k == keys[0]).all() for k in keys)
    core_rmsd = np.zeros(len(models))
    n_core = 0
    if align:
        if core_ranges is None and not same:
            counts = ", ".join(f"{lab}: {len(k)}" for lab, k in zip(labels, keys, strict=True))
            raise InputError(f"the models hold different atoms ({counts}); alignment needs the "
                             "same atoms in every model: give --core residues that all share, "
                             "or --no-align")
        picks = []
        for m, w in zip(models, where, strict=True):
            sel = np.ones(len(m.name), bool) if core_ranges is None else m.in_residues(core_ranges)
            if not sel.any():
                raise InputError(f"{w}: no selected atom lies in the --core residues")
            order = np.argsort(m.keys()[sel], kind="stable")
            picks.append((np.flatnonzero(sel)[order], m.keys()[sel][order]))
        ref_idx, ref_keys = picks[0]
        for (_, k), lab in zip(picks, labels, strict=True):
            if len(k) != len(ref_keys) or not (k == ref_keys).all():
                raise InputError(f"the --core atoms differ between {labels[0]} "
                                 f"({len(ref_keys)} atoms) and {lab} ({len(k)}); alignment "
                                 "needs the same core atoms in every model")
        n_core = len(ref_keys)
        target = coords[0][ref_idx]
        for s, (idx, _) in enumerate(picks):
            rot, t = kabsch(coords[s][idx], target)
            coords[s] = coords[s] @ rot.T + t
            core_rmsd[s] = np.sqrt(((coords[s][idx] - target) ** 2).sum(1).mean())
    centre = np.mean([c.mean(0) for c in coords], axis=0)
    coords = [c - centre for c in coords]
    rmsd = np.array([np.sqrt(((c - coords[0]) ** 2).sum(1).mean()) if same else np.nan
                     for c in coords])
    selection = {"atoms": atoms, "residues": residues, "core": core, "align": align}
    return Ensemble(coords, weights, labels, kind, frames, core_rmsd, rmsd, n_core, sources,
                    selection)
