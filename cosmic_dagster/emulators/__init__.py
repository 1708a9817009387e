"""Loopback emulators of external services (Globus, NERSC SFAPI) for tests, demos and benchmarks.
They follow the wire contracts in the reference notes and import no adapter code."""
