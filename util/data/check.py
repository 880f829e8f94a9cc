"""The pre-flight check of a run's data (docs/datasets.md#the-pre-flight-check), run before anything is written.

One pass over every line of each list a run reads checks that the image decodes (a truncated JPEG is refused, see
util.data.dataset.read_image), that the label decodes as 8-bit class ids, that both have the same size and that the
label holds only class ids below DATA.classes or DATA.ignore_index. The same pass counts each class's pixels (the
class weights of MCE-Bal), so the counts never cost a second pass.

A list that passes is cached in <EXP.root>/<DATA.name>/data_check/, keyed by the list file's bytes, the size and
modification time of every file it names, DATA.classes and DATA.ignore_index: a second run with the same data pays
only for those file stats, and any change checks again. A list that fails writes nothing. The first bad line is
reported with its list file and line, with the count of further bad lines (exit code 2).

Training, evaluation, the convergence study and the benchmark run it themselves; on its own, before queueing a job:

    python -m util.data.check --config config/voc2012/voc2012_pspnet50_sat.yaml [SECTION.key value ...]
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from util.data.dataset import Entry, read_image, read_list
from util.data.label_png import bad_values, read_label_png
from util.distributed import DistEnv, barrier
from util.errors import UserError
from util.outputs import write_json


@dataclass(frozen=True)
class ListCheck:
    """A list that passed: its path, its number of samples, the pixels of each class over its labels (ignored
    pixels not counted), whether it came from the cache, and the seconds the check took."""
    list_file: Path
    samples: int
    counts: list[int]
    cached: bool
    seconds: float
    cache: tuple[Path, dict] | None = None  # (cache file, content) still to write, for a fresh check

    def save(self) -> None:
        """Write the cache of a fresh check (nothing for a cached one)."""
        if self.cache is not None:
            write_cache(*self.cache)


def check_entry(entry: Entry, classes: int, ignore_index: int) -> np.ndarray | str:
    """The class pixel counts of one sample, or the message of what is wrong with it."""
    try:
        image = read_image(entry)
        label = read_label_png(entry.label, entry.where())
    except UserError as exc:
        return str(exc)
    if image.shape[:2] != label.shape:
        return (f"{entry.where()}: image '{entry.image}' is {image.shape[1]}x{image.shape[0]} but label "
                f"'{entry.label}' is {label.shape[1]}x{label.shape[0]} (width x height)")
    bad = bad_values(label, classes, ignore_index)
    if bad:
        return (f"{entry.where()}: label '{entry.label}' holds value(s) {bad[:10]}, which are neither a class id "
                f"(0-{classes - 1}, DATA.classes {classes}) nor DATA.ignore_index {ignore_index}")
    return np.bincount(label[label != ignore_index].ravel(), minlength=classes)[:classes]


def cache_key(root: Path, list_path: Path, classes: int, ignore_index: int) -> dict:
    """What decides a list's check: the list's bytes, the size and mtime of every file it names (a missing one
    marked so), the class settings. Read without building the dataset's entries, so a cached check costs little."""
    text = list_path.read_bytes()
    files = hashlib.sha256()
    for line in text.decode(errors="replace").splitlines():
        for name in line.split() if not line.lstrip().startswith("#") else ():
            try:
                stat = os.stat(os.path.join(root, name))
                files.update(f"{stat.st_size} {stat.st_mtime_ns}\n".encode())
            except OSError:
                files.update(b"missing\n")
    return {"list": str(list_path), "list_sha256": hashlib.sha256(text).hexdigest(),
            "files_sha256": files.hexdigest(), "classes": classes, "ignore_index": ignore_index}


def cache_path(cfg, list_path: Path, cache_dir: Path | None = None) -> Path:
    """<cache_dir>/<list name>-<digest of its resolved path>.json; cache_dir defaults to
    <EXP.root>/<DATA.name>/data_check."""
    where = hashlib.sha256(str(list_path).encode()).hexdigest()[:12]
    folder = Path(cfg.EXP.root) / cfg.DATA.name / "data_check" if cache_dir is None else cache_dir
    return folder / f"{list_path.stem}-{where}.json"


def check_list(cfg, list_file: str, progress: bool = True, cache_dir: Path | None = None, save: bool = True
               ) -> ListCheck:
    """Check every line of DATA.data_root/`list_file` (or read the cached result, see cache_path); a bad line
    raises a UserError naming the list file and line, and how many further lines are bad. A list that passes is
    cached at once, or with `save` false when its ListCheck.save() is called."""
    start = time.perf_counter()
    d = cfg.DATA
    list_path, key = (Path(d.data_root) / list_file).resolve(), None
    if str(d.data_root) and list_path.is_file():
        key = cache_key(Path(d.data_root), list_path, d.classes, d.ignore_index)
        stored = read_cache(cache_path(cfg, list_path, cache_dir))
        if stored is not None and stored.get("key") == key:
            return ListCheck(list_path, stored["samples"], stored["counts"], True, time.perf_counter() - start)
    entries = read_list(d.data_root, list_file)  # the list's form and its files' existence, named by line
    key = key or cache_key(Path(d.data_root), list_path, d.classes, d.ignore_index)
    with ThreadPoolExecutor(max_workers=max(1, d.workers)) as pool:  # cv2 and PIL decode without the GIL
        results = list(tqdm(pool.map(lambda e: check_entry(e, d.classes, d.ignore_index), entries),
                            total=len(entries), desc=f"checking {list_file}", disable=not progress, leave=False))
    failures = [r for r in results if isinstance(r, str)]
    if failures:
        more = f" (and {len(failures) - 1} further bad line(s) in this list)" if len(failures) > 1 else ""
        raise UserError(f"{failures[0]}{more}")
    counts = np.sum(results, axis=0).tolist()
    result = ListCheck(list_path, len(entries), counts, False, time.perf_counter() - start,
                       (cache_path(cfg, list_path, cache_dir), {"key": key, "samples": len(entries), "counts": counts}))
    if save:
        result.save()
    return result


def check_data(cfg, list_files: list[str], env: DistEnv | None = None, logger=None) -> list[ListCheck]:
    """The pre-flight check of the lists a run reads (nothing when DATA.check is false), one log line per list; the
    caches are written once every list has passed.
    Under several processes the main one checks first; the others then find its cache (or check for themselves
    where EXP.root is not shared)."""
    if not cfg.DATA.check:
        if logger is not None:
            logger.info("DATA.check false: the data is not checked before the run (a bad file stops it when read)")
        return []
    lists = list(dict.fromkeys(list_files))
    main = env is None or env.is_main
    checks = [check_list(cfg, name, progress=True, save=False) for name in lists] if main else []
    for c in checks:  # only once every list passed
        c.save()
    if env is not None:
        barrier(env)
        if not main:
            checks = [check_list(cfg, name, progress=False) for name in lists]
    if logger is not None:
        log_checks(logger, checks)
    return checks


def log_checks(logger, checks: list[ListCheck]) -> None:
    for c in checks:
        how = f"unchanged since it passed ({c.seconds:.3f} s)" if c.cached else f"passed in {c.seconds:.2f} s"
        logger.info(f"data check: {c.list_file} ({c.samples} samples) {how}")


def read_cache(path: Path) -> dict | None:
    """A cache file's content; None when absent or unreadable (then the list is checked again and it is rewritten)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_cache(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(content, path)


def main(argv: list[str] | None = None) -> None:
    from util.config import config_from_cli
    from util.data.dataset import prepare_on_first_use
    from util.logger import make_logger
    cfg = config_from_cli("Check every line of a config's DATA.train_list and DATA.val_list (cached; whatever "
                          "DATA.check says).", argv)
    logger = make_logger("check", None)
    prepare_on_first_use(cfg, logger)
    log_checks(logger, [check_list(cfg, name) for name in dict.fromkeys([cfg.DATA.train_list, cfg.DATA.val_list])])


if __name__ == "__main__":
    from util.errors import run_cli
    run_cli(main)
