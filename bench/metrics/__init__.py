"""Metrics drive a backend through its lifecycle and turn stamped times into Samples."""
