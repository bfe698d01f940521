"""Shape ranges in the notebook, without widgets: the ranges a model is opened with and the text the
Optimize tab shows and reads back.

A model's dynamic dims never silently become 1: every input with a dynamic dim gets a visible range
in the Optimize tab -- the leading (batch) dim ``BATCH`` = 1..8 (opt 1), every other dynamic dim
``OTHER`` = 1..64 (opt 16) -- unless the notebook was given its shapes (then those, fixed) or feeds
(then the feeds' shapes as opt, and a batch range of 1..max(8, batch)). Static dims are the model's.
"""

from __future__ import annotations

import workbench as wb

from ..errors import InputError, ShapeError

BATCH = (1, 1, 8)  # (min, opt, max) of a dynamic leading dim
OTHER = (1, 16, 64)  # of any other dynamic dim
NOTE = (f"dynamic dims are prefilled: the leading (batch) dim {BATCH[0]}..{BATCH[2]} (opt {BATCH[1]}), other "
        f"dynamic dims {OTHER[0]}..{OTHER[2]} (opt {OTHER[1]}); set them to the shapes your traffic brings")


def dynamic_inputs(net) -> list:
    """The inputs of ``net`` with a dim that is not a fixed number."""
    return [s for s in net.inputs if s.dtype is not None and s.shape is not None and not s.is_static]


def default_profile(net, shapes: dict | None = None, feeds: dict | None = None) -> dict:
    """{input: (min, opt, max)} for every input with a dynamic dim (see the module docstring); {}
    when every input is static. An input of ``shapes`` is fixed there; a named dim takes one range
    wherever it appears."""
    shapes = dict(shapes or {})
    known: dict[str, tuple[int, int, int]] = {}  # dim name -> range
    for s in net.inputs:  # names fixed by the given shapes or the feeds hold everywhere
        given = shapes.get(s.name)
        fed = getattr((feeds or {}).get(s.name), "shape", None)
        for axis, d in enumerate(s.shape or ()):
            if not isinstance(d, str) or not d:
                continue
            if given is not None and axis < len(given):
                known.setdefault(d, (given[axis],) * 3)
            elif fed is not None and axis < len(fed):
                v = int(fed[axis])
                known.setdefault(d, (1, v, max(BATCH[2], v)) if axis == 0 else (v, v, v))
    profile = {}
    for s in dynamic_inputs(net):
        if s.name in shapes:
            shape = tuple(shapes[s.name])
            profile[s.name] = (shape, shape, shape)
            continue
        ranges = []
        for axis, d in enumerate(s.shape):
            if isinstance(d, int):
                ranges.append((d, d, d))
            elif isinstance(d, str) and d in known:
                ranges.append(known[d])
            else:
                r = BATCH if axis == 0 else OTHER
                if isinstance(d, str) and d:
                    known[d] = r
                ranges.append(r)
        profile[s.name] = tuple(tuple(r[k] for r in ranges) for k in range(3))
    return profile


def is_fixed(profile: dict) -> bool:
    """Every input's min, opt and max are one shape (build it static: every optimization applies)."""
    return all(lo == opt == hi for lo, opt, hi in profile.values())


def range_text(shape) -> str:
    return "x".join(map(str, shape))


def parse_range_texts(texts: dict[str, tuple[str, str, str]]) -> dict:
    """{input: (min, opt, max)} from the tab's "1x16" texts; a ShapeError names the input and field."""
    profile = {}
    for name, triple in texts.items():
        shapes = []
        for which, text in zip(("min", "opt", "max"), triple):
            parts = text.strip().lower().split("x") if text.strip() else []
            if not all(p.strip().isdigit() for p in parts):
                raise ShapeError(f"{which} shape of input {name!r} must be dims separated by 'x' (e.g. 1x16), got {text!r}")
            shapes.append(tuple(int(p) for p in parts))
        profile[name] = tuple(shapes)
    # the builder's own checks (min <= opt <= max, equal ranks), through the public config
    return wb.BuilderConfig(device="cpu", profiles=[profile]).profiles[0] if profile else {}


def parse_batches(text: str) -> list[int] | None:
    """'1,2, 8' -> [1, 2, 8]; '' -> None (the defaults); anything else is an InputError naming it."""
    text = text.strip()
    if not text:
        return None
    out = []
    for part in text.replace(" ", "").split(","):
        if not part.isdigit() or int(part) < 1:
            raise InputError(f"batch sizes are positive integers separated by commas; got {part!r}")
        out.append(int(part))
    return out
