"""NERSC Superfacility API through sfapi-client."""
