"""The builder end to end: light models, exporter models, builder configuration, the memory planner,
GPU-target logic on the CPU."""
