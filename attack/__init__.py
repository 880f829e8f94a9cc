"""Adversarial attacks on semantic segmentation models: `build_attack(name, model, **params)`.

Every attack works on any nn.Module that maps images (N,3,H,W) in [0,1] to logits (N,K,H,W); RP-PGD also needs
`model(x, return_dict=True)["feat"]`. See attack/base.py for the call contract. The package imports nothing but
torch, and adv_lib for its minimal-norm attacks (attack/minimal_norm.py): lift it into another project as it is.
"""
from attack.apgd import APGD
from attack.base import Attack, AttackResult, NonFiniteError, StepRecord
from attack.cospgd import CosPGD
from attack.minimal_norm import ASMA, DAG, PDGD, PDPGD, ALMAProx, MinimalNorm
from attack.padam import PAdam
from attack.pgd import BIM, FGSM, PGD
from attack.pirat_pgd import PIRATPGD
from attack.registry import ATTACKS, attack_parameters, build_attack, register_attack
from attack.rppgd import RPPGD, RPPGDPlusPlus
from attack.sea import SEA
from attack.segpgd import SegPGD

__all__ = ["ALMAProx", "APGD", "ASMA", "ATTACKS", "Attack", "AttackResult", "BIM", "CosPGD", "DAG", "FGSM",
           "MinimalNorm", "NonFiniteError", "PAdam", "PDGD", "PDPGD", "PGD", "PIRATPGD", "RPPGD", "RPPGDPlusPlus",
           "SEA", "SegPGD", "StepRecord", "attack_parameters", "build_attack", "register_attack"]
