"""Data sets: synthetic heterogeneous particles, real particle stacks, transforms and twins."""
