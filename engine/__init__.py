"""Where model, data and attacks meet (docs/design.md, Layers): scripts -> engine -> attack, model -> util.

- attacks.py: the attack spec of the config (ADV_TRAIN.attack, ADV_TRAIN.val_attack, ATTACK.attacks)
- protocols.py: the evaluation protocols (full, legacy, center) and their registry
- evaluation.py: the one evaluation loop, clean and attacked
- worst_case.py: the worst case over several attacks
- training.py: the training step, optimizer, scheduler and the adversarial batch
- trained_model.py: loading a trained model for evaluation
- passes.py: counting forward and backward passes with hooks (benchmarks, tests)
"""
