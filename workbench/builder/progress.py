"""Build progress: a tqdm bar (notebook-aware via tqdm.auto) or a user callback per stage.

``BuilderConfig(progress=True)`` shows a bar; ``progress=callable`` receives
``(stage_name, stage_index, stage_count)`` so that a UI can draw its own. The names, in order, are
``STAGES`` (public as ``workbench.Builder.STAGES``); the last call is ``("done", count, count)``.
"""

from __future__ import annotations

from typing import Callable

STAGES = ("prepare", "optimize", "lower", "precision + tactics", "memory plan", "engine")


class BuildProgress:
    def __init__(self, progress: bool | Callable | None):
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(STAGES), desc="build", unit="stage", leave=False)
        self.index = 0
        self.current: str | None = None  # the stage running now (named by out-of-memory errors)

    def stage(self, name: str) -> None:
        self.current = name
        if self.callback is not None:
            self.callback(name, self.index, len(STAGES))
        if self.bar is not None:
            if self.index:
                self.bar.update(1)
            self.bar.set_postfix_str(name)
        self.index += 1

    def close(self) -> None:
        if self.callback is not None:
            self.callback("done", len(STAGES), len(STAGES))
        if self.bar is not None:
            self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
