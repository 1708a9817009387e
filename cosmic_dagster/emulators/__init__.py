"""Loopback emulators of external services (Globus Transfer/Auth), for tests, demos and benchmarks."""
