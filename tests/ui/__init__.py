"""The notebook UI (workbench.ui) without a browser."""
