"""The recipes' presets for the bench scripts (``recipes/`` is a folder of scripts, not a package)."""

import importlib.util
from pathlib import Path


def recipe_presets(name: str) -> dict:
    """``PRESETS`` of ``recipes/<name>.py``."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "recipes" / f"{name}.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe.PRESETS


def distill_and_evaluate(chain, teacher, class_names, images, test, output_dir: str, target_mode: str,
                         config_overrides: dict | None = None, **distill_kwargs):
    """The chain's student stage on ``images`` (``chain.build_student``, ``chain.student_config`` with
    ``config_overrides``, ``distill_detector`` with ``distill_kwargs``), timed, then its mAP on ``test``.

    Returns ``(student, optimiser steps, training seconds, evaluate_detectors row)``."""
    import time

    from hf_dfkd.detection import distill_detector, evaluate_detectors

    size = (chain.image_size, chain.image_size)
    config = chain.student_config(output_dir, target_mode, len(images), disable_tqdm=True, **(config_overrides or {}))
    start = time.perf_counter()
    trainer = distill_detector(chain.build_student(class_names), teacher, images, config, image_size=size,
                               **distill_kwargs)
    seconds = time.perf_counter() - start
    student = trainer.accelerator.unwrap_model(trainer.model).eval()
    row = evaluate_detectors({"s": student}, test, image_size=size, latency_repeats=0, disable_tqdm=True)["s"]
    return student, trainer.state.global_step, seconds, row
