"""What each op means to the optimizer, the precision assigner and the tactics: one table.

``MATRIX_OPS``: ops whose math tf32 / fp16 / bf16 tensor cores change. ``HALF_SAFE``: ops whose float
inputs and outputs all share one type and whose math is safe with half-precision storage (the
precision assigner lowers only these; the rest stay fp32: Cast, Range, CumSum, large-sum
reductions of squares, anything shape-like). ``FLOAT32_INPUTS``: float inputs that keep float32
whatever the layer's precision (ONNX types them float32 only). The fused ops of the workbench
domain enter these sets from their schemas (``fused.FUSED_OPS``: shape functions, attributes,
semantics, the activation vocabulary).
"""

from __future__ import annotations

from .fused import FUSED_OPS

MATRIX_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "Einsum"} | {
    s.name for s in FUSED_OPS.values() if s.matrix}
HALF_SAFE = MATRIX_OPS | {
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid",
    "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Softplus", "Softsign", "Mish", "Swish", "Clip", "Max", "Min",
    "Sum", "Mean", "Sqrt", "Reciprocal", "Exp", "Log", "Pow", "Sin", "Cos", "Where", "Softmax", "LogSoftmax",
    "LayerNormalization", "RMSNormalization", "BatchNormalization", "InstanceNormalization", "LRN",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceMin",
    "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Slice", "Split", "Gather", "Expand",
    "Tile", "Identity", "Dropout", "Pad", "Resize", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
} | {s.name for s in FUSED_OPS.values() if s.half_safe}
# float inputs that keep float32 whatever the layer's precision (ONNX types them float32 only)
FLOAT32_INPUTS = {"Resize": {1, 2}}
