"""Cryo-EM image formation: lattices, Fourier/Hartley transforms, CTF, rotations, volumes, I/O."""
