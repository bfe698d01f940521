"""The engine file format: round trips, determinism, refusal of damaged or older files."""
