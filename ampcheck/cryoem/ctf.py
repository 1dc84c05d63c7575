"""The contrast transfer function (SPEC §1), for numpy arrays and torch tensors.

``ctf = sqrt(1 - w²)·sin(γ) − w·cos(γ)``,
``γ = 2π(−½·Δf(θ)·λ·s² + ¼·Cs·λ³·s⁴) − φ``, with the astigmatic defocus
``Δf(θ) = ½(Δf_u + Δf_v + (Δf_u − Δf_v)·cos 2(θ − θ_ast))`` and the relativistic electron
wavelength ``λ``. The same formula and units as cryoDRGN's ``compute_ctf``, so a ``ctf.pkl``
means the same thing to both.
"""

from __future__ import annotations

import math

import numpy as np
import torch

Array = np.ndarray | torch.Tensor

# Column order of a cryoDRGN ctf.pkl table (SPEC §1).
CTF_COLUMNS = ("D", "apix", "dfu", "dfv", "dfang", "volt", "cs", "w", "phase_shift")


def electron_wavelength(voltage_in_kv: float | Array) -> float | Array:
    """Relativistic electron wavelength in Å for an accelerating voltage in kV.

    ``λ = h / sqrt(2·m·e·V·(1 + e·V / (2·m·c²)))``, written with cryoDRGN's constants:
    ``12.2639 / sqrt(V + 0.97845e-6·V²)`` with V in volts. 300 kV gives 0.01969 Å.
    """
    volts = voltage_in_kv * 1000.0
    return 12.2639 / (volts + 0.97845e-6 * volts**2) ** 0.5


def compute_ctf(
    freqs_in_inv_angstroms: Array,
    dfu_in_angstroms: float | Array,
    dfv_in_angstroms: float | Array,
    dfang_in_degrees: float | Array,
    voltage_in_kv: float | Array,
    cs_in_mm: float | Array,
    amplitude_contrast: float | Array,
    phase_shift_in_degrees: float | Array = 0.0,
    bfactor_in_angstroms2: float | Array | None = None,
) -> Array:
    """Evaluate the CTF at 2-D spatial frequencies.

    Args:
        freqs_in_inv_angstroms: ``(..., N, 2)`` frequencies ``(sx, sy)`` in 1/Å (x along columns).
        dfu_in_angstroms, dfv_in_angstroms: defocus along the two astigmatism axes (Å,
            positive = underfocus).
        dfang_in_degrees: astigmatism angle of ``dfu`` from the x axis.
        voltage_in_kv, cs_in_mm, amplitude_contrast, phase_shift_in_degrees: microscope values.
        bfactor_in_angstroms2: optional envelope ``exp(−B·s²/4)``.
        Per-image parameters broadcast against the frequencies, e.g. shape ``(B, 1)``.

    Returns:
        ``(..., N)`` real CTF values, same array type as the frequencies.
    """
    xp = torch if isinstance(freqs_in_inv_angstroms, torch.Tensor) else np
    lam = electron_wavelength(voltage_in_kv)
    cs = cs_in_mm * 1e7  # mm -> Å
    sx = freqs_in_inv_angstroms[..., 0]
    sy = freqs_in_inv_angstroms[..., 1]
    s2 = sx**2 + sy**2
    angle = xp.arctan2(sy, sx)
    dfang = dfang_in_degrees * (math.pi / 180.0)
    defocus = 0.5 * (dfu_in_angstroms + dfv_in_angstroms
                     + (dfu_in_angstroms - dfv_in_angstroms) * xp.cos(2 * (angle - dfang)))
    gamma = (2 * math.pi * (-0.5 * defocus * lam * s2 + 0.25 * cs * lam**3 * s2**2)
             - phase_shift_in_degrees * (math.pi / 180.0))
    w = amplitude_contrast
    ctf = (1 - w**2) ** 0.5 * xp.sin(gamma) - w * xp.cos(gamma)
    if bfactor_in_angstroms2 is not None:
        ctf = ctf * xp.exp(-bfactor_in_angstroms2 / 4 * s2)
    return ctf


def ctf_from_table(freqs_in_inv_angstroms: Array, table: Array) -> Array:
    """CTF of each image from rows of a cryoDRGN ``ctf.pkl`` table.

    Args:
        freqs_in_inv_angstroms: ``(N, 2)`` or ``(B, N, 2)`` frequencies in 1/Å.
        table: ``(B, 9)`` rows ``[D, apix, dfu, dfv, dfang, volt, cs, w, phase_shift]``.

    Returns:
        ``(B, N)`` CTF values.
    """
    cols = [table[:, i : i + 1] for i in range(2, 9)]
    return compute_ctf(freqs_in_inv_angstroms, *cols)
