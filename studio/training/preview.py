"""How one training record reaches the model: rendered through the chat template, with the
tokens that carry loss marked. The CLI (`studio train preview`) and the Train screen share it."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from studio.training.backend_base import TrainContext
from studio.recipes.train import TrainRecipe


def preview(ws, recipe: TrainRecipe, index: int = 0, host=None) -> dict[str, Any]:
    """The back-end's preview of training record ``index`` (after the held-out split)."""
    from studio.training.preflight import preflight

    checked = preflight(ws, recipe, host)
    if not 0 <= index < len(checked.train):
        raise ValueError(f"record {index} is out of range: the training split has {len(checked.train)} records")
    with tempfile.TemporaryDirectory(prefix="studio-preview-") as tmp:
        ctx = TrainContext(recipe=recipe, config=checked.config, run_dir=Path(tmp), train_records=checked.train,
                           eval_records=checked.eval)
        shown = checked.backend.preview(ctx, checked.train[index])
    if shown is None:
        raise ValueError(f"back-end {recipe.backend!r} has no preview")
    return {"index": index, "records": len(checked.train), "backend": recipe.backend, **shown}
