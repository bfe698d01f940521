"""The rewrite engine (workbench.rewrite.engine), tested directly on small onnx-ir graphs."""
