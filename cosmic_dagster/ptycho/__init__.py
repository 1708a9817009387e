"""COSMIC scan data: CXI reading and validation, simulation, a local engine, quality and previews.

Plain numpy/h5py, no Dagster; submodules are imported explicitly (``from cosmic_dagster.ptycho import
cxi``) so that ``python -m cosmic_dagster.ptycho.epie`` starts fast.
"""
