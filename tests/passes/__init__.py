"""Optimization passes: fusion rules (Before/Expected graphs and whole engines), activations, near
misses, type inference, generated property graphs."""
