"""The one robustness evaluation: clean, then every attack, then the sanity warnings, SEA's figure and the worst case,
written as metrics.json and report.md (docs/evaluation.md). tool_test/test.py, the convergence study and notebooks
run it; from Python, for any model and loader:

    evaluation = RobustnessEvaluation(cfg, model, attacks=[{"name": "pgd", "eps": 8 / 255, "steps": 10}])
    result = evaluation.run(loader, "exp/notebook", "pgd")      # exp/notebook/pgd/metrics.json and report.md
    result.entries["worst_case"]["mIoU"]

Building the evaluation builds the protocol (ATTACK.protocol) and every attack on the protocol's target, so a bad
name or parameter stops before anything is written. Random starts are seeded per image from (ATTACK.seed, dataset
index), so the figures do not depend on the batch size or the number of processes. What depends on an attack's kind
is asked of the attack: its separate runs (SEA's losses, scored on their own and as SEA's figure) and its region
maps (strips); the evaluation never tests an attack's class.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from attack import Attack
from engine.attacks import AttackSpec, attack_list, attack_specs
from engine.eps_sweep import sweep_entries, sweep_section, sweep_specs
from engine.evaluation import evaluate
from engine.pictures import Pictures
from engine.protocols import OnIterate, build_protocol
from engine.report import attack_entry, worst_case_entry, write_results
from engine.result_store import ShardStore
from engine.sanity import attack_above_clean_warnings, mixed_eps_warnings
from engine.surrogate import load_surrogate
from util.distributed import DistEnv, all_gather_objects, single_process
from util.errors import UserError
from util.evaluation.metrics import SegMetric
from util.logger import make_logger
from util.outputs import new_result_dir


@dataclass
class RobustnessResult:
    """One evaluation: the metrics of the clean entry and of every attack, metrics.json's entries ("clean",
    "attacks", "worst_case", "warnings"), the seconds each entry took, and the folder its files went to."""
    clean: SegMetric
    attacks: dict[str, SegMetric]
    entries: dict
    seconds: dict[str, float] = field(default_factory=dict)
    result_dir: Path | None = None


class RobustnessEvaluation:
    """A model's evaluation under cfg's protocol and attacks: `attacks` is a list of attack specs ({name, key,
    parameters}, as ATTACK.attacks takes them) or None for ATTACK.attacks; ATTACK.eps_sweep adds the robustness curves
    and ATTACK.surrogate makes it a transfer evaluation. The model is evaluated in eval mode and its mode restored
    afterwards."""

    def __init__(self, cfg, model: nn.Module, attacks: Sequence[dict | AttackSpec] | None = None,
                 env: DistEnv | None = None) -> None:
        self.cfg, self.env = cfg, env or single_process()
        # ATTACK.surrogate: the attacks run on another model, their images are scored on this one (transfer)
        self.surrogate = load_surrogate(cfg, self.env.device)
        self.protocol = build_protocol(cfg, model, self.surrogate)
        specs = attack_list(cfg) if attacks is None else attack_specs(attacks, "attacks")
        self.attacks: dict[str, Attack] = {s.key: self.protocol.build_attack(s, cfg) for s in specs}
        # ATTACK.eps_sweep: the fixed-budget attacks again at each eps (engine/eps_sweep.py), reported as curves
        extra, self.sweep = sweep_specs(specs, list(cfg.ATTACK.eps_sweep))
        taken = [s.key for s in extra if s.key in self.attacks]
        if taken:
            raise UserError(f"ATTACK.eps_sweep: the result name(s) {taken} of the sweep are taken by ATTACK.attacks")
        self.sweep_attacks: dict[str, Attack] = {s.key: self.protocol.build_attack(s, cfg) for s in extra}

    def run(self, loader, parent: str | Path, name: str, *, model_path: Path | None = None, epoch: int | None = None,
            store: ShardStore | None = None, pictures: bool = False,
            on_iterate: Callable[[str], OnIterate | None] | None = None, logger=None) -> RobustnessResult:
        """Evaluate over `loader` (every process its shard) and write <parent>/<name>/ (or <name>_2, ...: results are
        never overwritten) with metrics.json and report.md; a failure leaves no folder behind.

        store: finished shards of an interrupted run with the same settings are loaded from it (and it is cleared at
        the end). model_path, epoch: the checkpoint the model came from, for the report (None: a model handed over
        in Python). pictures: draw what the TEST section asks for (colour predictions, panels, region strips).
        on_iterate(key): a callback for every judged iterate of that attack (convergence curves), or None.
        """
        env, cfg, protocol = self.env, self.cfg, self.protocol
        logger = logger or make_logger("robustness", None, enabled=env.is_main)
        folder = all_gather_objects(str(new_result_dir(Path(parent), name)) if env.is_main else None, env)[0]
        result_dir = Path(folder)
        drawing = Pictures(cfg, result_dir, loader.dataset) if pictures else None
        try:
            result = self.evaluate(loader, store, drawing, on_iterate, logger)
        except BaseException:
            if env.is_main:  # nothing half-written: a failed evaluation leaves no result folder
                shutil.rmtree(result_dir, ignore_errors=True)
            raise
        result.result_dir = result_dir
        written = [] if drawing is None else [p for part in all_gather_objects(drawing.panels.written, env)
                                              for p in part]  # every process's panels
        if env.is_main:
            description = {"split": cfg.TEST.split, "images": len(loader.dataset), **protocol.describe()}
            sections = [] if "eps_sweep" not in result.entries else [sweep_section(
                result_dir, result.entries["eps_sweep"], result.entries["clean"],
                f"{cfg.EXP.name}: mIoU against eps ({protocol.name}, {len(loader.dataset)} images)")]
            write_results(cfg, result_dir, model_path, epoch, description, result.entries,
                          sum(result.seconds.values()),
                          {"panels": written, "strips": [] if drawing is None else drawing.strips}, sections)
            logger.info(f"report: {result_dir / 'report.md'}" + (f"; panels under {result_dir / 'panels'}"
                                                                   if written else ""))
            if store is not None:
                store.clear()
        return result

    def evaluate(self, loader, store: ShardStore | None, pictures: Pictures | None,
                 on_iterate: Callable[[str], OnIterate | None] | None, logger) -> RobustnessResult:
        """The figures, without writing them: clean, every attack, sanity warnings, SEA's figure, the worst case."""
        env, k, protocol = self.env, self.cfg.DATA.classes, self.protocol

        def shard(key: str, atk: Attack | None = None):
            if store is None:
                return None
            return store, store.path(key, atk.config() if atk is not None else {}, env.rank, env.world)

        seconds, start = {}, time.time()
        clean = evaluate(protocol, loader, env, k, desc="clean", shard=shard("clean"),
                         on_prediction=None if pictures is None else pictures.on_prediction("clean"))
        seconds["clean"] = time.time() - start
        entries = {"clean": clean.summary(), "attacks": {}}
        logger.info(f"clean: mIoU {entries['clean']['mIoU']:.4f}")
        attacked: dict[str, SegMetric] = {}
        swept: dict[str, SegMetric] = {}
        for key, atk in {**self.attacks, **self.sweep_attacks}.items():
            main = key in self.attacks  # else a run of the eps sweep: no pictures, no convergence curves
            start = time.time()
            metric = evaluate(protocol, loader, env, k, attack=atk, desc=key, shard=shard(key, atk),
                              on_prediction=None if pictures is None or not main else pictures.on_prediction(key, atk),
                              on_iterate=None if on_iterate is None or not main else on_iterate(key))
            seconds[key] = time.time() - start
            (attacked if main else swept)[key] = metric
            if main and pictures is not None and env.is_main:
                pictures.region_strip(protocol, key, atk, env.device)
            entry = attack_entry(atk, metric)
            if main:
                entries["attacks"][key] = entry
            logger.info(f"{key}: mIoU {entry['mIoU']:.4f} ({atk!r})")
        warnings = clean.warnings + [w for key in attacked for w in attacked[key].warnings]
        warnings += [w for key, r in entries["attacks"].items()
                     for w in attack_above_clean_warnings(key, r["mIoU"], entries["clean"]["mIoU"])]
        warnings += mixed_eps_warnings({key: r["params"]["eps"] for key, r in entries["attacks"].items()
                                        if r["params"].get("eps") is not None})
        for w in warnings:
            logger.warning(f"sanity check: {w}")
        entries["warnings"] = warnings
        # SEA's own choice is a start of the overall worst case, so that is never above SEA's figure
        starts = [[f"{key}/{run}" for run in r["per_image_run"]] for key, r in entries["attacks"].items()
                  if "per_image_run" in r]
        entries["worst_case"] = worst_case_entry(attacked, starts)
        if self.surrogate is not None:
            entries["surrogate"] = self.surrogate.describe()
        if self.sweep:
            entries["eps_sweep"] = sweep_entries(self.sweep, {**attacked, **swept},
                                                 {**self.attacks, **self.sweep_attacks})
        return RobustnessResult(clean, {**attacked, **swept}, entries, seconds)
