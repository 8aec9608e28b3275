"""The plan (recipe) as validated pydantic models, with YAML in and out.

``plan`` holds the plan and its sections; ``preprocess`` the section that says how files become
arrays (window presets included), so that nothing here depends on the code that applies it.
"""

from medlens.config.modality import MODALITIES, MODALITY_ALIASES, check_modality, modality_name
from medlens.config.plan import (
    PLAN_VERSION,
    AugmentConfig,
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    FoldConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    Plan,
    PruneConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    check_override,
    dump_plan,
    load_plan,
    parse_duration,
    parse_set_options,
    positive_index,
    save_plan,
    validate_plan,
)
from medlens.config.preprocess import WINDOW_PRESETS, PreprocessConfig, parse_window

__all__ = [
    "MODALITIES",
    "MODALITY_ALIASES",
    "PLAN_VERSION",
    "WINDOW_PRESETS",
    "AugmentConfig",
    "DataConfig",
    "DistillConfig",
    "EvaluateConfig",
    "FoldConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "Plan",
    "PreprocessConfig",
    "PruneConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "check_modality",
    "check_override",
    "dump_plan",
    "load_plan",
    "modality_name",
    "parse_duration",
    "parse_set_options",
    "parse_window",
    "positive_index",
    "save_plan",
    "validate_plan",
]
