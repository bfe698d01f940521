"""Build hook: compiles the native CPU kernels (workbench/kernels/cpu/_native.c) into an extension
module next to their source, for wheels and editable installs.

The module is plain C against Python's C API (no NumPy headers); it is compiled with the
interpreter's own compiler settings. Without a C compiler, or with ``WORKBENCH_NO_NATIVE=1``,
the package installs without it: the ``cpu.native.*`` tactics then decline every layer with that
reason and the NumPy / BLAS tactics run instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = os.path.join("workbench", "kernels", "cpu", "_native.c")


def compile_native(root: str) -> str | None:
    """Compile the extension in place; returns its path relative to ``root``, or None (and says why)."""
    if os.environ.get("WORKBENCH_NO_NATIVE") == "1":
        print("workbench: WORKBENCH_NO_NATIVE=1, native CPU kernels not built", file=sys.stderr)
        return None
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        cc = ["cc"]
    if shutil.which(cc[0]) is None:
        print("workbench: no C compiler found, native CPU kernels not built", file=sys.stderr)
        return None
    rel = os.path.splitext(SOURCE)[0] + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
    src, out = os.path.join(root, SOURCE), os.path.join(root, rel)
    tmp = out + ".tmp"
    # no FP traps or errno are used, so comparisons and floorf / sqrt vectorise; values are IEEE's
    cmd = cc + ["-O3", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared", "-Wall", "-I", sysconfig.get_paths()["include"],
                src, "-o", tmp, "-lm"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"workbench: native CPU kernels not built ({' '.join(cmd)}):\n{detail}", file=sys.stderr)
        return None
    os.replace(tmp, out)
    return rel


class NativeKernelsHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        rel = compile_native(self.root)
        if rel is None:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][os.path.join(self.root, rel)] = rel
