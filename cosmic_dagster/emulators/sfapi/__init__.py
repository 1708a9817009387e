"""Loopback NERSC Superfacility API emulator that the real sfapi-client talks to."""
