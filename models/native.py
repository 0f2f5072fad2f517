"""What the models whose per-call step runs in Rust (`native/`) share.

`BehaviourDetector`, `LinkObserver` and `ExtractionShareSuspicion` keep a Rust core
(`self._core`) built from their configuration. A core holds nothing that is not rebuilt
from it (at most a memo), and it does not pickle: pickling leaves it out and loading
builds it again.

The cores read a call's fields by their slots (`native/src/fields.rs`) once they know the
layout of `ApiCall`, registered here: any model with a core imports this module.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from distillwatch_native import register_call_type

from models.records import ApiCall

register_call_type(ApiCall)

Core = TypeVar("Core")


class RebuiltCore(Generic[Core]):
    """Pickles without `self._core`; `_new_core()` builds it again on load."""

    _core: Core

    def _new_core(self) -> Core:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_core"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._core = self._new_core()
