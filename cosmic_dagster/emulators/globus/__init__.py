"""Loopback Globus Transfer + Auth emulator that the real globus-sdk talks to."""
