"""The staged study (``python -m lab.study``): every law feeds the next, and the recipe it ends in is
trained and back-tested. Settings: :mod:`lab.study.config`; stages: :mod:`lab.study.stages`; the
record: :mod:`lab.study.state` (``study.json``)."""

from lab.study.config import DEFAULT, PRESETS, QUICK, HparamStage, LossStage, MixtureStage, StudyConfig

__all__ = ["DEFAULT", "PRESETS", "QUICK", "HparamStage", "LossStage", "MixtureStage", "StudyConfig"]
