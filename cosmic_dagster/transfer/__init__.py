"""Moving scan files to the compute site: one adapter per system behind :class:`Transfer`."""
