"""Where a shop's self-tuning stands, kept in one small JSON file that the tuning process writes
and the serving process (and `app.py tune-status`) reads: the phase, the epoch, the figures the
switch was decided on. Written whole and renamed, so a reader never sees half a file."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

# The phases, in order; the last four are ends.
TRAINING, INDEXING, CHECKING, READY, SWITCHED, REJECTED, SKIPPED, FAILED = (
    "training", "indexing", "checking", "ready", "switched", "rejected", "skipped", "failed")
ENDS = (SWITCHED, REJECTED, SKIPPED, FAILED)


@dataclass(frozen=True)
class TuneState:
    model: str
    catalog: str                          # the catalog folder, resolved: a state of another catalog is not ours
    phase: str = TRAINING
    epoch: int = 0                        # epochs done
    epochs: int = 0
    epoch_seconds: float | None = None    # the last epoch's time, for "about N minutes left"
    indexed: int = 0
    total: int = 0
    before: dict = field(default_factory=dict)   # the served (starting) network's validation
    after: dict = field(default_factory=dict)    # the tuned one's, on the same queries
    reason: str = ""                      # why it was rejected, skipped or failed
    weights: str = ""                     # the tuned file, once written
    updated: str = ""

    @classmethod
    def read(cls, path: Path) -> TuneState | None:
        """The state in `path`; None when there is none (or it cannot be read: tuning starts over)."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or not {"model", "catalog"} <= set(values):
            return None
        return cls(**{k: v for k, v in values.items() if k in known})

    def write(self, path: Path) -> TuneState:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        stamped = replace(self, updated=time.strftime("%Y-%m-%d %H:%M:%S"))
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(stamped), indent=1))
        os.replace(partial, path)
        return stamped

    def moved(self, **changes) -> TuneState:
        return replace(self, **changes)

    @property
    def ended(self) -> bool:
        return self.phase in ENDS

    def minutes_left(self) -> int | None:
        """Of training, from the last epoch's time (None before the first epoch ends)."""
        if self.phase != TRAINING or not self.epoch_seconds or not self.epochs:
            return None
        return max(1, round((self.epochs - self.epoch) * self.epoch_seconds / 60))

    def gain(self) -> str:
        """'P@5 0.61 -> 0.81 on 1,218 held-out products' (shopper-like photos), and the real
        photos' kind when they were scored."""
        before, after = self.before, self.after
        if not before or not after:
            return ""
        text = (f"P@{after.get('k', 5)} on shopper-like photos {before['p_photo']:.2f} -> {after['p_photo']:.2f}, "
                f"catalog shots {before['p_clean']:.2f} -> {after['p_clean']:.2f} on {after['queries']:,} "
                "held-out products")
        if "p_real_served" in after and "p_real_served" in before:
            text += (f"; real photos' kind as shoppers search them {before['p_real_served']:.2f} -> "
                     f"{after['p_real_served']:.2f} on {after['real_served_queries']:,} photos")
        elif "p_real_kind" in after and "p_real_kind" in before:
            text += (f"; real photos' kind {before['p_real_kind']:.2f} -> {after['p_real_kind']:.2f} on "
                     f"{after['real_queries']:,} photos")
        return text

    def line(self) -> str:
        """For a person: what is happening now."""
        if self.phase == TRAINING:
            left = self.minutes_left()
            epoch = min(self.epoch + 1, self.epochs) if self.epochs else 1
            about = f", about {left} minute{'s' if left != 1 else ''} left" if left else ""
            return f"learning your catalog: epoch {epoch} of {self.epochs or '?'}{about}"
        if self.phase == INDEXING:
            return (f"indexing the catalog with the tuned model: {self.indexed:,} of {self.total:,} products "
                    f"({self.gain()})")
        if self.phase == CHECKING:
            return f"checking the tuned model on real photos as shoppers search them ({self.gain()})"
        if self.phase == READY:
            return f"switching to the tuned model ({self.gain()})"
        if self.phase == SWITCHED:
            return f"switched to the tuned model: {self.gain()}"
        if self.phase == REJECTED:
            return f"kept the model served: the tuned one was not better ({self.reason})"
        if self.phase == SKIPPED:
            return f"not tuned: {self.reason}"
        return f"tuning failed: {self.reason}"

    def snapshot(self) -> dict:
        """For /api/health and scripts: the state and its line."""
        return {**asdict(self), "line": self.line(), "minutes_left": self.minutes_left()}


__all__ = ["TuneState", "TRAINING", "INDEXING", "CHECKING", "READY", "SWITCHED", "REJECTED", "SKIPPED", "FAILED", "ENDS"]
