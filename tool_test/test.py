"""Evaluate a trained checkpoint, clean and under the attacks of the config's ATTACK section.

    python tool_test/test.py --config config/demo/demo_pspnet18_sat.yaml [SECTION.key value ...]

Reads TEST.model_path (default: the run's model/last.pth), evaluates the clean model and then every
ATTACK.attacks entry under ATTACK.protocol (full | legacy | center, METHOD.md §7), with random starts seeded per
image, and writes <EXP.root>/<DATA.name>/<EXP.name>/result/<run_name>/: metrics.json (protocol, clean, every
attack with its parameters, the per-image worst case over the attacks), report.md (engine/report.py) and, with
TEST.save_pictures, colour predictions under pictures/<clean|attack>/; TEST.vis N panels of the first N images
under panels/, TEST.vis_regions INDEX RP-PGD's region strips under regions/ (engine/pictures.py). TEST.num_images
N evaluates the first N images. A second evaluation never overwrites the first. Without pictures an interrupted
evaluation continues where it stopped when run again with the same settings (engine/result_store.py).
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.data import Subset

from engine.attacks import attack_list
from engine.evaluation import evaluate
from engine.pictures import Panels, region_strip
from engine.precision import check_amp
from engine.protocols import build_protocol
from engine.report import write_results
from engine.result_store import ShardStore, file_digest, settings_digest
from engine.sanity import attack_above_clean_warnings
from engine.trained_model import load_trained_model
from engine.worst_case import sea_summary, worst_case_summary
from util.config import config_from_cli, run_dir
from util.data.dataset import build_dataset, prepare_on_first_use
from util.data.datasets import class_names, palette
from util.data.loader import make_loader
from util.distributed import all_gather_objects, barrier, cleanup, init_distributed
from util.errors import run_cli
from util.evaluation.metrics import SegMetric
from util.logger import make_logger
from util.outputs import new_result_dir
from util.visualisation.tiles import save_colour_label, save_png

PER_IMAGE_RULE = ("per image the run with the lowest pixel accuracy: the adversarial images that pictures and "
                  "the per-image scores show")


def attack_entry(atk, metric: SegMetric) -> dict:
    """An attack's metrics.json entry. For an attack with separate runs (SEA) the scores are SEA's figure, the
    dataset-level worst case over its runs ("figure" says how it is computed), and "per_image_choice" holds the
    scores of the images the attack returns."""
    entry = {"name": atk.name, "params": atk.params()}
    if not metric.runs:
        return {**entry, **metric.summary()}
    sea = sea_summary(metric.runs)
    return {**entry, "figure": sea.pop("rule"), **sea, "per_image_choice": {"rule": PER_IMAGE_RULE, **metric.summary()}}


def shard_store(cfg, out_dir: Path, model_path: Path, protocol, images: int) -> ShardStore:
    """Where this evaluation's finished shards are kept: named by a digest of everything that decides the figures
    (not the batch size's split into processes, which the file names carry, nor workers or pictures)."""
    settings = {"checkpoint": file_digest(model_path), "protocol": protocol.describe(), "images": images,
                "DATA": {k: v for k, v in cfg.DATA.to_dict().items() if k != "workers"},
                "TEST": {k: v for k, v in cfg.TEST.to_dict().items() if k not in ("workers", "run_name",
                                                                                   "save_pictures", "model_path")}}
    return ShardStore(out_dir / "result" / ".partial" / settings_digest(settings))


def save_region_strip(protocol, atk, dataset, index: int, key: str, result_dir: Path, entries, device) -> Path:
    """RP-PGD's region map after every step on dataset image `index` (its seed is the evaluation's, so the iterates
    are the evaluation's): regions/<key>_<index>_<stem>.png."""
    image, label, _ = dataset[index]
    history = atk.region_history()
    protocol.predict(image[None].to(device), label[None].to(device), [index], atk, on_iterate=history)
    stem = entries[index].image.stem
    return save_png(region_strip(history.maps, f"{key} (eps {atk.eps:.4g}, {atk.steps} steps) on image {index} "
                                               f"({stem}): True / Boundary / False after each step"),
                    result_dir / "regions" / f"{key}_{index:05d}_{stem}.png")


def main(argv: list[str] | None = None) -> None:
    cfg = config_from_cli("Evaluate a segmentation model, clean and under attack.", argv)
    env = init_distributed(cfg.DIST.backend)
    out_dir = run_dir(cfg)
    logger = make_logger("test", None, enabled=env.is_main)
    if env.is_main:
        prepare_on_first_use(cfg, logger)
    barrier(env)
    dataset = build_dataset(cfg, cfg.TEST.split, train=False)  # a missing dataset stops before anything else
    check_amp(cfg.ATTACK.amp, env.device, "ATTACK.amp")
    trained = load_trained_model(cfg, env.device)
    model_path = trained.path
    protocol = build_protocol(cfg, trained.model)
    # every attack is built (and its parameters checked) before anything is written
    attacks = {spec.key: protocol.build_attack(spec, cfg) for spec in attack_list(cfg)}
    if cfg.TEST.num_images:
        dataset = Subset(dataset, range(min(cfg.TEST.num_images, len(dataset))))
    loader = make_loader(dataset, cfg.TEST.batch_size, cfg.TEST.workers, env.rank, env.world, train=False)

    name = cfg.TEST.run_name or f"{cfg.TEST.split}_{model_path.stem}_{protocol.name}"
    result_dir = all_gather_objects(
        str(new_result_dir(out_dir / "result", name)) if env.is_main else None, env)[0]
    result_dir = Path(result_dir)
    logger.info(f"evaluating {model_path} (epoch {trained.epoch}) on {len(dataset)} images of "
                f"{cfg.TEST.split}, protocol {protocol.name}, clean and {len(attacks)} attack(s); results in "
                f"{result_dir}")
    entries = dataset.dataset.entries if isinstance(dataset, Subset) else dataset.entries
    colours = palette(cfg.DATA.name)
    # pictures need every image predicted in this run, so they turn off the store of finished shards
    store = None if cfg.TEST.save_pictures or cfg.TEST.vis else shard_store(cfg, out_dir, model_path, protocol,
                                                                            len(dataset))
    if store is not None and store.folder.is_dir():
        logger.info(f"continuing the interrupted evaluation kept in {store.folder}")
    panels = Panels(result_dir / "panels", cfg.TEST.vis, colours, class_names(cfg.DATA.name, cfg.DATA.classes),
                    [e.image.stem for e in entries], cfg.DATA.ignore_index)

    def shard(key: str, atk=None):
        if store is None:
            return None
        return store, store.path(key, atk.config() if atk is not None else {}, env.rank, env.world)

    def pictures(key: str, atk=None):
        """on_prediction: colour predictions (TEST.save_pictures) and panels (TEST.vis)."""
        calls = []
        if cfg.TEST.save_pictures:
            folder = result_dir / "pictures" / key
            folder.mkdir(parents=True, exist_ok=True)
            calls.append(lambda v: save_colour_label(v.pred.cpu().numpy(), colours,
                                                     folder / f"{entries[v.index].image.stem}.png"))
        if cfg.TEST.vis:
            calls.append(panels.clean() if atk is None else panels.attacked(key, atk.eps))
        return (lambda view: [call(view) for call in calls]) if calls else None

    try:
        start = time.time()
        k = cfg.DATA.classes
        clean = evaluate(protocol, loader, env, k, desc="clean", on_prediction=pictures("clean"), shard=shard("clean"))
        strips = []
        results = {"clean": clean.summary(), "attacks": {}}
        logger.info(f"clean: mIoU {results['clean']['mIoU']:.4f}")
        attacked: dict[str, SegMetric] = {}
        for key, atk in attacks.items():
            attacked[key] = evaluate(protocol, loader, env, k, attack=atk, desc=key, on_prediction=pictures(key, atk),
                                     shard=shard(key, atk))
            if 0 <= cfg.TEST.vis_regions < len(dataset) and atk.region_history() is not None and env.is_main:
                strips.append(save_region_strip(protocol, atk, dataset, cfg.TEST.vis_regions, key, result_dir,
                                                entries, env.device))
            results["attacks"][key] = attack_entry(atk, attacked[key])
            logger.info(f"{key}: mIoU {results['attacks'][key]['mIoU']:.4f} ({atk!r})")
        results["warnings"] = clean.warnings + [w for key in attacked for w in attacked[key].warnings]
        results["warnings"] += [w for key, r in results["attacks"].items()
                                for w in attack_above_clean_warnings(key, r["mIoU"], results["clean"]["mIoU"])]
        for w in results["warnings"]:
            logger.warning(f"sanity check: {w}")
        # SEA's own choice is a start of the overall worst case, so that is never above SEA's figure
        starts = [[f"{key}/{run}" for run in r["per_image_run"]] for key, r in results["attacks"].items()
                  if "per_image_run" in r]
        results["worst_case"] = worst_case_summary(attacked, starts)
        seconds = time.time() - start
    except BaseException:
        if env.is_main:  # nothing half-written: a failed evaluation leaves no result folder
            shutil.rmtree(result_dir, ignore_errors=True)
        raise
    written = [p for part in all_gather_objects(panels.written, env) for p in part]  # every process's panels
    if env.is_main:
        write_results(cfg, result_dir, model_path, trained.epoch,
                      {"split": cfg.TEST.split, "images": len(dataset), **protocol.describe()}, results, seconds,
                      {"panels": written, "strips": strips})
        logger.info(f"report: {result_dir / 'report.md'}" + (f"; panels under {result_dir / 'panels'}" if written
                                                               else ""))
        if store is not None:
            store.clear()
    cleanup(env)


if __name__ == "__main__":
    run_cli(main)
