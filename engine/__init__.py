"""Where model, data and attacks meet (docs/design.md, Layers): scripts -> engine -> attack, model -> util.

- attacks.py: the attack spec of the config (ADV_TRAIN.attack, ADV_TRAIN.val_attack, ATTACK.attacks)
- protocols/: the evaluation protocols (full, legacy, center) and their registry
- evaluation.py: the one evaluation loop, clean and attacked
- robustness.py: the one robustness evaluation (clean, attacks, sanity checks, SEA's figure, worst case, report)
- report.py, worst_case.py: metrics.json's entries and report.md; the worst-case choices
- pictures.py, sanity.py, result_store.py: panels and region strips; sanity warnings; resumable evaluation
- recipes/, optim.py: training recipes; optimizers and schedules by name
- trainer.py, hooks.py, training.py: the training loop, its hooks, a Trainer from a config
- resume.py, interrupts.py: checkpoints and exact resume; stop requests
- trained_model.py, passes.py, precision.py: a checkpoint for evaluation; pass counting; mixed precision
"""
