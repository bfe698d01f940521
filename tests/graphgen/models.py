"""Whole models: an input, a few blocks of one family (or of all families), the outputs."""

from __future__ import annotations

import numpy as np

from . import blocks as B
from .core import Case, Chooser, FixedChooser, GraphBuilder
from .pointwise import pointwise_block, shape_block

KINDS = ["conv", "mlp", "norm", "attention", "pointwise", "shape", "mixed"]

SEQ_BLOCKS = {"mlp": B.mlp_block, "norm": B.norm_block, "attention": B.attention_block,
              "pointwise": pointwise_block, "shape": shape_block}


def _dynamic(g: GraphBuilder, rank: int, names):
    kind = g.c.choose("input.dynamic", ["static", "batch", "all"])
    if kind == "static":
        return {}
    if kind == "batch":
        return {0: names[0]}
    return {i: names[i] for i in range(rank)}


def image_input(g):
    c = g.c
    N = c.choose("img.N", [1, 2])
    C = c.choose("img.C", [3, 4, 8, 1, 16])
    H = c.integer("img.H", 1, 12)
    W = c.choose("img.W", ["same", 5, 8, 1])
    W = H if W == "same" else W
    x = g.input((N, C, H, W), dynamic=_dynamic(g, 4, ["N", "C", "H", "W"]), prefix="image")
    g.pool.append(x)
    return x


def seq_input(g, rank=None):
    c = g.c
    rank = rank or c.choose("seq.rank", [3, 2, 4, 1])
    Bt = c.choose("seq.B", [2, 1, 3])
    S = c.integer("seq.S", 1, 12)
    D = c.choose("seq.D", [16, 8, 32, 12, 6])
    shape = {1: (D,), 2: (Bt * S, D), 3: (Bt, S, D), 4: (Bt, 2, S, D)}[rank]
    if rank == 3 and c.flag("seq.embed"):  # token ids -> embedding table (+ positions), as BERT/GPT start
        V = 11
        ids = g.input((Bt, S), np.int64, data=g.rng.integers(0, V, (Bt, S)), prefix="input_ids",
                      dynamic=_dynamic(g, 2, ["batch", "seq"]))
        x = g.node("Gather", [g.weight((V, D), 1, prefix="wte"), ids], (Bt, S, D), axis=0)
        if c.flag("seq.positions"):
            pos = g.node("Slice", [g.weight((16, D), 1, prefix="wpe"), g.ints([0]), g.ints([S]), g.ints([0])], (S, D))
            x = g.binary("Add", x, pos)
        g.pool.append(x)
        return x
    x = g.input(shape, dynamic=_dynamic(g, rank, ["batch", "seq", "dim", "d3"][:rank]) if rank > 1 else {},
                prefix="hidden")
    g.pool.append(x)
    return x


def _seq_blocks(g, x, allowed, n):
    for i in range(n):
        r = len(g.shape(x))
        options = [k for k in allowed if not (k == "attention" and r != 3) and not (k in ("mlp", "norm") and r == 0)]
        kind = g.c.choose("block", options)
        g.tag(kind)
        if int(np.prod(g.shape(x))) > B.MAX_ELEMS // 2:
            kind = "pointwise"
        x = SEQ_BLOCKS[kind](g, x)
    return x


def generate(kind: str, c: Chooser) -> Case:
    opset = c.choose("opset", [21, 17, 18, 19, 20])
    seed = c.integer("seed", 0, 2**16)
    g = GraphBuilder(c, opset, seed)
    if kind == "conv" or (kind == "mixed" and c.choose("mixed.domain", ["image", "sequence"]) == "image"):
        x = image_input(g)
        allowed = list(B.IMAGE_BLOCKS) if kind == "mixed" else ["conv", "conv", "pool", "se", "concat", "shuffle",
                                                                 "bn", "cfln"]
        for i in range(c.integer("img.blocks", 1, 3)):
            name = c.choose("img.block", allowed)
            g.tag(name)
            x = B.IMAGE_BLOCKS[name](g, x)
        tail = c.choose("img.tail", ["none", "to_sequence"])
        if tail == "to_sequence":
            x = B.image_to_sequence(g, x)
            if kind == "mixed":
                x = _seq_blocks(g, x, list(SEQ_BLOCKS), c.integer("mixed.seq_blocks", 0, 2))
    elif kind == "mixed":
        x = seq_input(g)
        x = _seq_blocks(g, x, list(SEQ_BLOCKS), c.integer("mixed.blocks", 2, 4))
    elif kind == "attention":
        x = seq_input(g, rank=3)
        x = _seq_blocks(g, x, ["attention"], 1)
        if c.flag("attn.then_norm"):
            x = B.norm_block(g, x)
    elif kind == "pointwise":
        x = seq_input(g)
        x = _seq_blocks(g, x, ["pointwise"], c.integer("pw.blocks", 1, 2))
    elif kind == "shape":
        x = seq_input(g)
        for i in range(c.integer("shape.blocks", 1, 3)):
            x = shape_block(g, x)
            if c.flag("shape.then_pointwise"):
                x = g.unary(c.choose("shape.unary", ["Relu", "Tanh", "Neg"]), x)
    else:
        x = seq_input(g)
        x = _seq_blocks(g, x, [kind], c.integer(f"{kind}.blocks", 1, 2))
    g.output(x)
    if not g.outputs:  # the model returns its input unchanged: route it through an op
        g.output(g.unary("Identity", x))
    return g.finish()


def fixed_case(kind: str, seed: int = 0, **overrides) -> Case:
    """A deterministic model: ``overrides`` pins choices by key; the rest come from ``seed``."""
    return generate(kind, FixedChooser(overrides, seed=seed))


def replay(kind: str, record) -> Case:
    """Rebuild a generated model from the choice record a failing example printed."""
    return generate(kind, FixedChooser(list(record)))


def models(kind: str):
    """Hypothesis strategy of :class:`Case` for one kind of model."""
    from hypothesis import strategies as st

    from .core import HypothesisChooser

    @st.composite
    def _cases(draw):
        return generate(kind, HypothesisChooser(draw))

    return _cases()
