"""Session: the notebook's state and actions, without widgets.

It holds what a person works on (the model, every engine built or loaded this session, their
profiles, the build settings) and does what the tabs ask (open, build, run, compare against an fp32
reference, profile) through the public API only. ``app.Workbench`` adds the widgets and refreshes
its tabs when the state changes (the ``_opened`` / ``_opened_engine`` / ``_engine_added`` hooks).

May import: ``workbench`` (the public API), ``workbench.core``, ``workbench.runtime``.
"""

from __future__ import annotations

import os

import workbench as wb

from ..core.numerics import rel_err
from ..runtime.buckets import opt_specs
from ..runtime.feeds import random_feeds
from .ranges import default_profile, is_fixed


def device_precisions(device: str) -> list[str]:
    """Precisions a layer may be set to on ``device`` ("auto" resolves to this machine's)."""
    return wb.supported_precisions(wb.resolve_device(device))


class Session:
    """Load -> optimize -> per-layer precision -> profile -> compare -> export, as plain state."""

    def __init__(self, model=None, *, device: str = "auto", precision: str = "fp32", shapes=None,
                 feeds: dict | None = None, calibration=None, build: bool = False):
        self.net = None
        self.source: str | None = None
        self.engine = None
        self.engines: dict[str, object] = {}  # label -> Engine, every build of this session
        self.profiles: dict[str, object] = {}  # label -> profile DataFrame
        self.label: str | None = None  # label of the current engine
        # calibration: what int8 / fp8 builds take their ranges from (wb.Calibration, a table or a path)
        self.settings = {"device": device, "precision": precision, "shapes": dict(shapes or {}), "disable": [],
                         "profiles": [], "calibration": calibration}
        self.user_feeds = dict(feeds) if feeds else None
        # the builds of one opened model share its lowered plan (wb.FrontCache): a rebuild with
        # other precisions runs no passes. Their key holds the memory budget, so it is read once
        # per opened model (``open``) rather than from the memory free at each build.
        self.front = None
        self._memory_budget = None
        self._feeds_cache: dict = {}
        self._reference = None  # (settings key, fp32 engine) for output-error checks
        if model is not None:
            self.open(model)
            if build and self.net is not None:
                self.build()

    # ---- what a widget front end redraws (nothing here) -------------------------------------
    def _opened(self) -> None:
        """A model was opened: everything shown so far is stale."""

    def _opened_engine(self) -> None:
        """A saved engine was opened (there is no model to optimize)."""

    def _engine_added(self) -> None:
        """A new engine became current."""

    # ---- state changes ---------------------------------------------------------------------
    def open(self, model) -> None:
        """A path (.onnx model or saved engine), a Network, or an Engine."""
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            model = wb.Engine.load(path) if path.endswith(".wbe") else wb.load_onnx(path)
        if isinstance(model, wb.Engine):
            self.net, self.source = None, model.path or "<engine>"
            self.engines, self.profiles, self._reference = {}, {}, None
            self._opened_engine()
            self.add_engine(model, f"#1 {model.backend} (loaded)")
            return
        self.net, self.source = model, model.source
        self.front, self._memory_budget = wb.FrontCache(), wb.BuilderConfig().memory_budget
        self.engine, self.label, self.engines, self.profiles, self._reference = None, None, {}, {}, None
        self._feeds_cache.clear()
        # dynamic dims get visible shape ranges (ui/ranges.py), or the shapes given / fed, never a silent 1
        profile = default_profile(model, self.settings["shapes"], self.user_feeds)
        if is_fixed(profile):
            self.settings["shapes"] = {**self.settings["shapes"], **{k: r[0] for k, r in profile.items()}}
        self.settings["profiles"] = [] if is_fixed(profile) else [profile]
        self._opened()

    def add_engine(self, engine, label: str) -> None:
        self.engine, self.label = engine, label
        self.engines[label] = engine
        self._engine_added()

    def config(self, **overrides) -> "wb.BuilderConfig":
        s = {**self.settings, **overrides}
        profiles = list(s.get("profiles") or [])  # ranges, else the static shapes
        return wb.BuilderConfig(device=s["device"], precision=s["precision"], shapes={} if profiles else s["shapes"],
                                profiles=profiles, calibration=s.get("calibration"), memory_budget=self._memory_budget,
                                disable=list(s["disable"]), layer_precisions=dict(s.get("layer_precisions") or {}))

    def build_config(self, cfg: "wb.BuilderConfig"):
        """The engine ``cfg`` builds from the opened model, on the plan its earlier builds lowered
        where only precisions or tactics differ."""
        if self.net is None:
            raise wb.WorkbenchError("open an ONNX model first (this session holds only a saved engine)")
        return wb.Builder(cfg, front=self.front).build(self.net)

    def build(self, progress=None, **overrides):
        """Build with the current settings (overridden by keyword: device, precision, shapes, disable,
        layer_precisions, calibration); the new engine becomes current. Returns it. ``progress``: a tqdm-like
        class, ticked once per builder stage and once for drawing the results."""
        if self.net is None:
            raise wb.WorkbenchError("open an ONNX model first (this session holds only a saved engine)")
        cfg = self.config(**overrides)
        bar = progress(total=len(wb.Builder.STAGES) + 1, desc="build") if progress else None

        def on_stage(name, index, count):
            if bar is not None:
                bar.n = index
                bar.set_postfix_str(name)
                bar.refresh()

        cfg.progress = on_stage if bar is not None else False
        engine = self.build_config(cfg)
        self.settings.update({k: v for k, v in overrides.items() if k != "layer_precisions"})
        self.settings["shapes"] = dict(cfg.shapes)  # parsed, if it came as "name:1x3x224x224" text
        self.settings["profiles"] = list(cfg.profiles)
        n = len(self.engines) + 1
        extra = " +overrides" if cfg.layer_precisions else ""
        self.add_engine(engine, f"#{n} {engine.backend} {cfg.precision}{extra}")
        if bar:
            bar.n = bar.total
            bar.set_postfix_str("done")
            bar.close()
        return engine

    # ---- running ---------------------------------------------------------------------------
    def feeds(self, engine=None) -> dict:
        """Inputs for runs and profiles: the ones given to the app, else random ones (small ints,
        valid as token ids and type ids) that stay the same for the whole session."""
        engine = engine or self.engine
        if self.user_feeds is not None:
            return {s.name: self.user_feeds[s.name] for s in engine.inputs}
        specs = opt_specs(engine.plan)  # shape ranges: the first profile's opt shapes
        key = tuple((s.name, s.dtype, tuple(s.shape or ())) for s in specs)
        if key not in self._feeds_cache:
            self._feeds_cache[key] = random_feeds(specs, int_high=2)
        return self._feeds_cache[key]

    def run(self, engine=None) -> dict:
        engine = engine or self.engine
        return engine.create_context().run(self.feeds(engine))

    def reference_engine(self):
        """An fp32 engine with the current settings and no per-layer overrides (built once)."""
        key = repr(sorted((k, repr(v)) for k, v in self.settings.items()))
        if self._reference is None or self._reference[0] != key:
            ref = next((e for e in self.engines.values() if self._is_reference(e)), None)
            if ref is None:
                ref = self.build_config(self.config(precision="fp32", layer_precisions={}))
            self._reference = (key, ref)
        return self._reference[1]

    def _is_reference(self, engine) -> bool:
        b, s = engine.build_info, self.settings
        return (b.get("precision") == "fp32" and not b.get("layer_precisions")
                and b.get("shapes") == {k: list(v) for k, v in s["shapes"].items()}
                and b.get("profiles", []) == [{k: [list(x) for x in r] for k, r in p.items()} for p in s.get("profiles") or []]
                and b.get("disabled") == sorted(s["disable"]) and b.get("device") == wb.resolve_device(s["device"]))

    def output_error(self, engine=None) -> dict[str, float]:
        """Relative error (L2) of every output against the fp32 reference engine."""
        engine = engine or self.engine
        ref = self.reference_engine()
        got, want = self.run(engine), self.run(ref)
        return {name: rel_err(got[name], want[name]) for name in want}

    def profile(self, runs: int = 10, label: str | None = None, mode: str | None = None):
        """Profile an engine (default: the current one); the DataFrame is kept for Compare. ``mode``:
        see ``ExecutionContext.profile`` (GPU: "replay" or "events"; None: the device's default)."""
        label = label or self.label
        engine = self.engines[label]
        df = engine.create_context().profile(self.feeds(engine), runs=runs, mode=mode)
        self.profiles[label] = df
        return df
