"""Globus: credentials, the endpoints file, the transfer adapter and the collection lister."""
