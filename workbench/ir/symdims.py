"""Symbolic dims as expressions: integer polynomials over the names of a model's dynamic dims.

A dim is an ``int``, a :class:`Sym` (``batch``, ``batch*sequence``, ``sequence + 1``) or ``None``
(unknown). ``Sym`` is the canonical sum of monomials with integer coefficients, so two dims are
equal exactly when they are equal for every value of the names (``2*sequence == sequence +
sequence``); an expression with no name left is a plain ``int``. Its text is what onnx-ir's
``SymbolicDim`` holds and what the dynamo exporter writes (``batch*sequence``), and ``parse`` reads
that text back; text it cannot read (``Max(1, s0)``, ``s0//2``, ``unk__3``) is one opaque name.

Only what holds for every value is ever concluded: a quotient exists when the division is exact
as polynomials, a comparison is decided when the difference is a constant. Nothing here assumes a
name takes a particular value.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Union

import onnx_ir as ir

Monomial = tuple  # ((name, power), ...) sorted by name; () is the constant term


class Sym:
    """An integer polynomial in dim names (immutable). Build with ``sym(name)`` and arithmetic."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: dict):
        self.terms = {m: c for m, c in terms.items() if c}
        self._hash = hash(frozenset(self.terms.items()))

    # arithmetic (results are normalized: a constant polynomial comes back as an int)
    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return add(self, neg(other))

    def __rsub__(self, other):
        return add(other, neg(self))

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __neg__(self):
        return neg(self)

    def __eq__(self, other):
        if isinstance(other, Sym):
            return self.terms == other.terms
        return False  # a Sym is never a constant (constants are ints)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"Sym({str(self)!r})"

    def __str__(self):
        return format_dim(self)

    @property
    def names(self) -> set[str]:
        return {n for m in self.terms for n, _ in m}


Dim = Union[int, Sym, None]


def sym(name: str) -> Sym:
    """The dim called ``name``."""
    return Sym({((name, 1),): 1})


def _terms(x) -> dict:
    return x.terms if isinstance(x, Sym) else ({(): int(x)} if x else {})


def _norm(terms: dict):
    terms = {m: c for m, c in terms.items() if c}
    if not terms:
        return 0
    if list(terms) == [()]:
        return terms[()]
    return Sym(terms)


def add(a, b):
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    out = dict(_terms(a))
    for m, c in _terms(b).items():
        out[m] = out.get(m, 0) + c
    return _norm(out)


def neg(a):
    if a is None:
        return None
    if isinstance(a, int):
        return -a
    return Sym({m: -c for m, c in a.terms.items()})


def sub(a, b):
    return add(a, neg(b))


def _mono_mul(m1: Monomial, m2: Monomial) -> Monomial:
    powers = dict(m1)
    for n, p in m2:
        powers[n] = powers.get(n, 0) + p
    return tuple(sorted(powers.items()))


def mul(a, b):
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    out: dict = {}
    for m1, c1 in _terms(a).items():
        for m2, c2 in _terms(b).items():
            m = _mono_mul(m1, m2)
            out[m] = out.get(m, 0) + c1 * c2
    return _norm(out)


def product(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
        if out is None:
            return None
    return out


def _mono_div(m: Monomial, d: Monomial) -> Monomial | None:
    powers = dict(m)
    for n, p in d:
        if powers.get(n, 0) < p:
            return None
        powers[n] -= p
    return tuple(sorted((n, p) for n, p in powers.items() if p))


def div_exact(a, b) -> Dim:
    """``a / b`` when it is a polynomial for every value of the names (else None). Division by a
    monomial (``6*b*s / (2*s)``) term by term; by a polynomial when ``a`` is a multiple of it by a
    monomial or an int (``(s + 1)*b / (s + 1)``)."""
    if a is None or b is None or b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a // b if a % b == 0 else None
    bt = _terms(b)
    if len(bt) == 1:
        (mb, cb), = bt.items()
        out = {}
        for m, c in _terms(a).items():
            q = _mono_div(m, mb)
            if q is None or c % cb:
                return None
            out[q] = c // cb
        return _norm(out)
    # a = q * b for a monomial q: try the quotient of the leading terms
    ma, ca = max(_terms(a).items(), key=lambda t: _order(t[0]))
    mb, cb = max(bt.items(), key=lambda t: _order(t[0]))
    q_m = _mono_div(ma, mb)
    if q_m is None or ca % cb:
        return None
    q = _norm({q_m: ca // cb})
    return q if mul(q, b) == a else None


def _order(m: Monomial):
    return (sum(p for _, p in m), tuple((n, p) for n, p in m))


def compare(a, b) -> int | None:
    """-1, 0 or 1 when ``a - b`` is a constant (the sign of it), else None (undecided)."""
    if a is None or b is None:
        return None
    d = sub(a, b)
    if isinstance(d, int):
        return (d > 0) - (d < 0)
    return None


def min_dim(a, b) -> Dim:
    """min(a, b): the smaller where the difference is a constant, else the opaque name
    ``Min(a, b)`` (sympy's spelling), whose arguments ``min_args`` gives back."""
    if a is None or b is None:
        return None
    c = compare(a, b)
    if c is not None:
        return a if c <= 0 else b
    x, y = sorted((format_dim(a), format_dim(b)))
    return sym(f"Min({x}, {y})")


def min_args(d) -> tuple | None:
    """(a, b) for a dim that is ``Min(a, b)``, else None."""
    if not isinstance(d, Sym) or len(d.terms) != 1:
        return None
    (m, c), = d.terms.items()
    if c != 1 or len(m) != 1 or m[0][1] != 1:
        return None
    name = m[0][0]
    if not (name.startswith("Min(") and name.endswith(")")):
        return None
    body, depth = name[4:-1], 0
    for i, ch in enumerate(body):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            return parse(body[:i]), parse(body[i + 1:])
    return None


def equal(a, b) -> bool:
    """Equal for every value of the names (unknown dims are never equal to anything)."""
    return a is not None and b is not None and (a == b if type(a) is type(b) else False)


def as_int(d) -> int | None:
    return d if isinstance(d, int) and not isinstance(d, bool) else None


# ---- text ------------------------------------------------------------------------------------
def _mono_text(m: Monomial) -> str:
    return "*".join(n if p == 1 else f"{n}**{p}" for n, p in m)


def format_dim(d) -> str:
    """Canonical text: highest degree first, names in order (``batch*sequence``, ``sequence + 1``)."""
    if d is None:
        return "?"
    if isinstance(d, int):
        return str(d)
    parts = []
    for m, c in sorted(d.terms.items(), key=lambda t: (-sum(p for _, p in t[0]), t[0])):
        body = _mono_text(m)
        mag = abs(c)
        text = body if (mag == 1 and body) else (f"{mag}*{body}" if body else str(mag))
        parts.append(("-" if c < 0 else "+", text))
    out = ("-" if parts[0][0] == "-" else "") + parts[0][1]
    for sign, text in parts[1:]:
        out += f" {sign} {text}"
    return out


_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_.]*)|(\*\*|[-+*()]))")


@lru_cache(maxsize=4096)
def parse(text: str) -> Dim:
    """The dim a SymbolicDim's text names: a polynomial over names with + - * ** and parentheses;
    any other text (or text that names nothing) is one opaque name."""
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            return sym(text)
        tokens.append(m.groups())
        pos = m.end()
    try:
        value, k = _parse_sum(tokens, 0)
    except (IndexError, ValueError):
        return sym(text)
    if k != len(tokens):
        return sym(text)
    return value


def _parse_sum(tokens, k):
    sign = 1
    if tokens[k][2] in ("-", "+"):
        sign = -1 if tokens[k][2] == "-" else 1
        k += 1
    value, k = _parse_product(tokens, k)
    value = mul(sign, value)
    while k < len(tokens) and tokens[k][2] in ("+", "-"):
        op = tokens[k][2]
        rhs, k = _parse_product(tokens, k + 1)
        value = add(value, rhs if op == "+" else neg(rhs))
    return value, k


def _parse_product(tokens, k):
    value, k = _parse_power(tokens, k)
    while k < len(tokens) and tokens[k][2] == "*":
        rhs, k = _parse_power(tokens, k + 1)
        value = mul(value, rhs)
    return value, k


def _parse_power(tokens, k):
    base, k = _parse_atom(tokens, k)
    if k < len(tokens) and tokens[k][2] == "**":
        num = tokens[k + 1][0]
        if num is None:
            raise ValueError("power")
        out: Dim = 1
        for _ in range(int(num)):
            out = mul(out, base)
        return out, k + 2
    return base, k


def _parse_atom(tokens, k):
    num, name, op = tokens[k]
    if num is not None:
        return int(num), k + 1
    if name is not None:
        return sym(name), k + 1
    if op == "(":
        value, k = _parse_sum(tokens, k + 1)
        if tokens[k][2] != ")":
            raise ValueError("paren")
        return value, k + 1
    raise ValueError(op)


# ---- onnx-ir dims <-> dims -------------------------------------------------------------------
def from_ir(d) -> Dim:
    """An onnx-ir dim (int or SymbolicDim) as a dim."""
    if isinstance(d, int):
        return int(d)
    value = getattr(d, "value", None)
    return parse(value) if isinstance(value, str) and value else None


def to_ir(d: Dim):
    """A dim as what an onnx-ir Shape holds: int, the expression's text, or None."""
    if d is None or isinstance(d, int):
        return d
    return str(d)


def sdims(v: ir.Value | None) -> tuple[Dim, ...] | None:
    """Every dim of ``v`` as an int, a Sym or None (unknown); None for an unknown rank."""
    if v is None or v.shape is None:
        return None
    return tuple(from_ir(d) for d in v.shape)


def known(dims) -> bool:
    """Every dim is known (an int or an expression)."""
    return dims is not None and all(d is not None for d in dims)


def same_dims(a, b) -> bool:
    """Two shapes equal for every value of the names (every dim known)."""
    return known(a) and known(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))


def is_unknown_name(d) -> bool:
    """An opaque name made up by shape inference (``unk__3``): it says nothing beyond one inference."""
    return isinstance(d, Sym) and len(d.terms) == 1 and any(
        n.startswith("unk__") for m in d.terms for n, _ in m)


def symbolic_mismatch(a, b) -> str:
    """Why two shapes of one rank are not provably equal when only symbolic or unknown dims stand
    in the way (``dim 1: 'sequence' vs 'Min(64, sequence)'``); "" when they are equal, differ in
    rank, or differ in a fixed dim (a real broadcast, not a question of dims)."""
    if a is None or b is None or len(a) != len(b) or same_dims(a, b):
        return ""
    bad = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if not equal(x, y)]
    if any((isinstance(x, int) and isinstance(y, int)) or x == 1 or y == 1 for _, x, y in bad):
        return ""  # fixed dims that differ, or a dim of 1 against another: broadcasting
    i, x, y = bad[0]
    return f"dim {i}: {describe(x)} vs {describe(y)} are not equal for every input shape"


def describe(d) -> str:
    """A dim as people read it in a reason: ``'sequence'`` or ``16``."""
    return "unknown" if d is None else (str(d) if isinstance(d, int) else f"'{d}'")


__all__ = ["Dim", "Sym", "add", "as_int", "compare", "describe", "div_exact", "equal", "format_dim", "from_ir",
           "is_unknown_name", "known", "min_args", "min_dim", "mul", "neg", "parse", "product", "same_dims", "sdims", "sub", "sym", "symbolic_mismatch", "to_ir"]
