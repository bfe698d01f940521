"""Browser tests: JupyterLab and the graph bundle in headless Chromium (skipped without Chromium)."""
