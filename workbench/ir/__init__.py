"""The optimizer's view of a model: onnx-ir's Model/Graph/Node/Value plus the functions every later
stage shares, one copy each.

``network.py``: :class:`Network` (a loaded model and where it came from). ``values.py``: small
questions about values (constant?, producer, readers, shape, rank, dtype). ``attrs.py``: attributes
<-> Python values, both directions. ``typing.py``: output types of created nodes. ``types.py``:
values as plain TensorSpecs. ``provenance.py``: which ONNX nodes a node covers. ``symdims.py``:
dim expressions (integer polynomials over dim names) for reasoning about symbolic shapes;
``symshapes.py`` / ``symvalues.py``: symbolic shape inference and the values shape tensors hold.

May import: ``core``, ``ops``, ``dtypes``, ``errors`` (and onnx, onnx-ir, NumPy). Never the
frontends, rewrite, passes, precision or builder.
"""

from .network import Network
from .types import spec_of

__all__ = ["Network", "spec_of"]
