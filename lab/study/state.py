"""A study's record, ``<out>/study.json``: its settings, and per stage its status, outputs and cost.

Written atomically after every stage, so a killed study resumes at the first stage not ``done``
(and inside a stage, its sweep skips the runs already finished). The same file is the summary the
analysis report renders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.io import atomic_write_json, read_json

STAGES = ("hparams", "mixture", "loss", "recipe", "full", "backtest", "summary")
LETTERS = dict(zip(STAGES, "abcdefg"))


@dataclass
class StudyState:
    """The study's record in memory; :meth:`save` writes it."""

    path: Path
    doc: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, out: Path, config: dict[str, Any]) -> "StudyState":
        """The record in ``out`` (created when new). A different config is refused: one folder, one
        study. Only ``full_seeds`` may change (more seeds of the full-size run; stage e adds them)."""
        import json

        path = out / "study.json"
        config = json.loads(json.dumps(config))  # tuples -> lists: compare as stored
        if path.exists():
            doc = read_json(path)
            old = doc.get("config", {})
            changed = sorted(k for k in set(config) | set(old) if config.get(k) != old.get(k) and k != "full_seeds")
            if changed:
                raise ValueError(f"{path}: this folder holds a study with other settings (differing: "
                                 f"{', '.join(changed)}); give another --out, or delete the folder")
            doc["config"] = config
            return cls(path, doc)
        return cls(path, {"config": config, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "stages": {}})

    def stage(self, name: str) -> dict[str, Any]:
        return self.doc["stages"].get(name, {})

    def done(self, name: str) -> bool:
        return self.stage(name).get("status") == "done"

    def record(self, name: str, **values: Any) -> None:
        self.doc["stages"][name] = {**self.stage(name), **values}
        self.save()

    def save(self) -> None:
        from lab.fit.engine.result import to_jsonable

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, to_jsonable(self.doc))

    def measured_rate(self) -> float | None:
        """FLOP/s of the study's sweeps so far (planned FLOPs over wall time), for the next ETAs."""
        flops = wall = 0.0
        for st in self.doc["stages"].values():
            for r in st.get("sweeps_run", []):
                if r.get("wall_s", 0) > 30:  # a relaunch that only skipped finished runs says nothing
                    flops, wall = flops + r["planned_flops"], wall + r["wall_s"]
        return flops / wall if wall else None
