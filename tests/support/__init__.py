"""Modules the tests share: paths, small models, CLI runners, exporter-model data, browser drivers."""
