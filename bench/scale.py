"""Load and build time against graph size: an Identity chain and sibling If nodes.

    .venv/bin/python bench/scale.py [--sizes 1000,5000,20000,50000] [--profile chain:50000]

Prints node count vs load / build seconds; time per node should stay flat as graphs grow (a
quadratic step shows as a per-node time that grows with the size). ``--profile KIND:N`` prints the
top cProfile entries of one load + build instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from onnx import TensorProto, helper

import workbench as wb


def identity_chain(n: int):
    nodes = [helper.make_node("Identity", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def sibling_ifs(n: int):
    def branch(name, op):
        return helper.make_graph([helper.make_node(op, ["x"], ["o"])], name, [],
                                 [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])])
    nodes = [helper.make_node("If", ["c"], [f"y{i}"], then_branch=branch(f"t{i}", "Relu"),
                              else_branch=branch(f"e{i}", "Neg")) for i in range(n)]
    nodes.append(helper.make_node("Sum", [f"y{i}" for i in range(n)], ["y"]))
    g = helper.make_graph(nodes, "ifs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


KINDS = {"chain": identity_chain, "ifs": sibling_ifs}


def measure(kind: str, n: int, build: bool = True) -> tuple[float, float | None]:
    data = KINDS[kind](n).SerializeToString()
    t0 = time.perf_counter()
    net = wb.load_onnx(data)
    t1 = time.perf_counter()
    if not build:
        return t1 - t0, None
    wb.build(net, wb.BuilderConfig(device="cpu"))
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000,50000", help="chain lengths (sibling Ifs: a quarter)")
    ap.add_argument("--kinds", default="chain,ifs")
    ap.add_argument("--no-build", action="store_true", help="time loading only")
    ap.add_argument("--profile", metavar="KIND:N", help="cProfile one load + build")
    args = ap.parse_args()
    if args.profile:
        kind, n = args.profile.split(":")
        prof = cProfile.Profile()
        prof.runcall(measure, kind, int(n), not args.no_build)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return
    print(f"{'graph':<8}{'nodes':>8}{'load s':>9}{'build s':>9}{'us/node':>9}")
    for kind in args.kinds.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            n = size if kind == "chain" else max(size // 4, 1)
            load, build = measure(kind, n, not args.no_build)
            total = load + (build or 0.0)
            nodes = n if kind == "chain" else 3 * n + 1
            shown = "-" if build is None else f"{build:.2f}"
            print(f"{kind:<8}{nodes:>8}{load:>9.2f}{shown:>9}{total / nodes * 1e6:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
