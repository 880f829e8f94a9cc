"""The config schema: every section and key with its default value (the type a value must have), and the keys
whose value is one of a fixed set. util/config.py reads YAML files and overrides against it."""
from __future__ import annotations

from typing import Any

# The schema: every key the project reads, with its default. The type of the default is the key's type
# (an int default also admits nothing but ints; a float default admits ints, floats and "a/b" strings).
DEFAULTS: dict[str, dict[str, Any]] = {
    "EXP": {
        "root": "exp",  # outputs go to <root>/<DATA.name>/<name>/
        "name": "",  # empty: the config file's stem
        "seed": 0,
    },
    "DATA": {
        "name": "demo",  # a dataset of util.data.datasets.DATASETS: demo | voc2012 | cityscapes | ade20k
        "data_root": "",
        "train_list": "list/train.txt",  # relative to data_root
        "val_list": "list/val.txt",
        "classes": 7,
        "ignore_index": 255,
        "mean": [0.485, 0.456, 0.406],  # ImageNet statistics in [0,1] RGB; applied inside the model
        "std": [0.229, 0.224, 0.225],
        "workers": 2,  # data loader processes per training process (and threads of the pre-flight data check)
        # check every line of the lists a run reads before anything is written (util/data/check.py, cached)
        "check": True,
    },
    "MODEL": {
        "arch": "pspnet",  # an architecture of model.ARCHITECTURES (model/architectures.py): its heads
        # the heads' style, one the architecture registers: torchvision (this project's heads) | semseg (semseg's
        # PSPNet / the RP-PGD release's DeepLabV3 heads and align_corners=True, so their checkpoints load)
        "style": "torchvision",
        "backbone": "resnet",  # a backbone of model.BACKBONES: resnet (the dilated ResNet of model/resnet.py)
        "layers": 50,  # resnet: 18 | 34 | 50 | 101
        "deep_stem": True,  # resnet: semseg's 3-conv stem; false: torchvision's 7x7 stem
        "pretrained": "",  # ImageNet backbone file (initmodel/README.md); empty: random init
        "variant": "",  # convnext: t | s (ConvNeXt-T / -S); vit: s (ViT-S/16)
        "stem": "patch",  # convnext: patch (4x4 patchify) | conv (the convolutional stem of SEA's _CVST models)
        "depths": [],  # convnext / vit: blocks per stage (vit: [encoder, decoder]); []: the variant's
        "widths": [],  # convnext: channels per stage; vit: [width, heads]; []: the variant's (small demo models)
        "psp_bins": [1, 2, 3, 6],
        "aspp_rates": [6, 12, 18],
        "head_channels": 0,  # 0: the architecture's default (PSPNet 512, DeepLabv3 256, UperNet 512)
        "dropout": 0.1,
        # channels-last memory layout for the network's weights and inputs (faster convolutions on recent GPUs;
        # the same results to float tolerance)
        "channels_last": False,
        # MODEL.arch torchvision:<builder>, smp:<Architecture>, hf:<folder>, python:<module>:<function>
        # (docs/your_own_model.md): the builder's keyword arguments (hf: config attributes)
        "kwargs": {},
        # the module (dotted name) whose output is RP-PGD's `feat`; empty: the family's default
        "feature_layer": "",
        # the modules whose parameters train at TRAIN.base_lr x TRAIN.head_lr_mult; []: the family's default
        "head_modules": [],
    },
    "TRAIN": {
        "epochs": 50,
        "batch_size": 16,  # global batch, split evenly over the processes
        "crop_size": [473, 473],  # [h, w]
        "scale_range": [0.5, 2.0],
        "rotate_range": [-10.0, 10.0],
        "rotate_prob": 0.5,
        "blur_prob": 0.5,
        "flip_prob": 0.5,
        # an optimizer of engine.optim.OPTIMIZERS: sgd (the backbone at base_lr, the heads at head_lr_mult x base_lr)
        # | adamw (PIR-AT's: every parameter at base_lr, no weight decay on 1-D parameters and names with "norm")
        "optimizer": "sgd",
        # a schedule of engine.optim.SCHEDULERS, stepped once per iteration: poly | poly-sea (SEA's PSPNet: iteration
        # 0 at base_lr on every group, iteration i at poly(i - 1)) | warmup-poly (PIR-AT's linear warm-up, then poly)
        "scheduler": "poly",
        "base_lr": 0.01,
        "head_lr_mult": 10.0,
        "momentum": 0.9,  # sgd only (adamw's betas are 0.9, 0.999)
        "weight_decay": 0.0001,
        "power": 0.9,  # poly decay per iteration
        "warmup_epochs": 0,  # warmup-poly: epochs of linear warm-up, < epochs
        "warmup_ratio": 0.00001,  # warmup-poly: the learning rate of iteration 0, as a fraction of base_lr
        "aux_weight": 0.4,
        "eval_freq": 1,  # validate every N epochs (0: never)
        "save_freq": 10,  # keep model/epoch_<N>.pth every N epochs (0: only last.pth)
        "save_iters": 0,  # also write model/last.pth every N iterations within an epoch (0: at epoch ends only)
        "resume": "",  # a checkpoint written by train.py; "auto": <run>/model/last.pth if present
        # start the whole network (not the optimizer) from a checkpoint: this project's, or semseg's, DDC-AT's or the
        # RP-PGD release's (with MODEL.style semseg), loaded strictly, as the release's TRAIN.weight
        "weight": "",
        "print_freq": 10,  # log a line every N iterations
        # mixed precision of the training step, its attack included: none (fp32) | bf16 (CUDA, or the CPU's
        # autocast) | fp16 (CUDA only, with a grad scaler kept in the checkpoints)
        "amp": "none",
    },
    "TEST": {
        "model_path": "",  # empty: <run>/model/last.pth
        "split": "val",  # which DATA list to evaluate: val | train
        "mode": "slide",  # whole | slide
        "base_size": 0,  # resize the long side to this before inference (0: keep the size)
        "crop_size": [473, 473],  # sliding-window crop [h, w]
        "stride_rate": 0.6666666666666666,
        # protocol legacy only (the released test scripts): multi-scale testing, the long side at
        # round(scale * base_size) for each scale, class probabilities averaged over the scales
        "scales": [1.0],
        # protocol legacy only: [h, w] to which images and labels are first resized (cv2 bilinear / nearest), as the
        # release's Cityscapes scripts do with [512, 1024]; []: keep the size
        "legacy_resize": [],
        "batch_size": 1,
        "workers": 2,
        "num_images": 0,  # evaluate only the first N images (0: all)
        "run_name": "",  # result/<run_name>/; empty: derived from the split and checkpoint
        "save_pictures": False,  # colour prediction PNGs under result/<run_name>/pictures/
        # panels (image, adversarial image, perturbation, labels, predictions, RP-PGD regions) of the first N
        # images for every attack under result/<run_name>/panels/, embedded in report.md (0: none)
        "vis": 0,
        # the dataset index of an image whose RP-PGD region map after every step is saved as a strip under
        # result/<run_name>/regions/ for each RP-PGD attack (-1: none)
        "vis_regions": -1,
    },
    "ADV_TRAIN": {
        # the training recipe of engine.recipes.RECIPES: none (clean training) | at (adversarial training,
        # docs/method.md §6) | release (the RP-PGD release's composition: the whole per-process batch attacked, its
        # batch-pooled terms then seeing every image, and the adversarial second half kept; needs adv_ratio 0.5) |
        # pirat (PIR-AT, docs/training.md: every image attacked; needs adv_ratio 1)
        "method": "none",
        # the training attack, an attack spec {name: registry name, <build_attack parameters>} (absent parameters
        # take the attack's defaults); override one entry with ADV_TRAIN.attack.steps 7
        "attack": {"name": "rppgd++", "eps": 0.03, "alpha": 0.01, "steps": 3, "random_start": True},
        "adv_ratio": 0.5,  # fraction of each per-process batch replaced by its adversarial version (0, 1]
        # method pirat only: also descend the eval-mode cross-entropy at each iterate the training attack took a
        # gradient at, as SEA's training loop does by leaving its attack's parameter gradients in place
        "iterate_grads": False,
        # robust validation, which then chooses model/best.pth: an attack spec {name: pgd, eps: 0.03, ...}; {} is off
        "val_attack": {},
        "val_images": 32,  # robust validation runs on the first N validation images (0: all)
    },
    "ATTACK": {
        "protocol": "full",  # a protocol of engine.protocols.PROTOCOLS: full | legacy | center (docs/protocols.md)
        # attacks that tool_test/test.py runs after the clean evaluation: a list of attack specs
        # {name: registry name, key: result name (default: name), any build_attack parameter}
        "attacks": [],
        # a named suite of attacks with presets, run before ATTACK.attacks (engine/suites.py): sea | rse | strongest |
        # legacy; "": none
        "suite": "",
        "suite_eps": 8 / 255,  # the eps a suite's presets are set at (the legacy suite keeps its own 0.03)
        # robustness curves: every fixed-budget attack of ATTACK.attacks again at each eps of this list (step sizes
        # scaled with eps), with the worst case per eps; e.g. [1/255, 2/255, 4/255, 8/255, 12/255]; []: off
        "eps_sweep": [],
        # transfer: {config: <a surrogate's config>, model_path: <its checkpoint>}; the attacks run on the surrogate
        # and their images are scored on the evaluated model (engine/surrogate.py); {}: white-box
        "surrogate": {},
        "seed": 0,  # image i's random start is seeded from (seed, dataset index i)
        # precision of the evaluation attacks' forward and backward passes: none (fp32) | bf16 | fp16 (CUDA only);
        # the perturbation, its projection and the scored predictions stay fp32
        "amp": "none",
    },
    "DIST": {
        "backend": "auto",  # auto (nccl on GPU, gloo on CPU) | nccl | gloo
        "sync_bn": "auto",  # auto (SyncBatchNorm with several GPU processes) | true | false
    },
}

# Keys whose values are a fixed set. Keys that name a registry entry (DATA.name, MODEL.arch, MODEL.backbone,
# MODEL.style, ADV_TRAIN.method, TRAIN.optimizer, TRAIN.scheduler, ATTACK.protocol) are checked against their
# registry where it is looked up, so that a registered entry is a valid value without a list kept here.
CHOICES: dict[str, tuple[Any, ...]] = {
    "TEST.split": ("val", "train"),
    "TEST.mode": ("whole", "slide"),
    "TRAIN.amp": ("none", "bf16", "fp16"),
    "ATTACK.amp": ("none", "bf16", "fp16"),
    "DIST.backend": ("auto", "nccl", "gloo"),
    "DIST.sync_bn": ("auto", "true", "false"),
}
