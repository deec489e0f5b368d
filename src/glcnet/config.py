"""Typed configs for every command, loaded from YAML with ``key.sub=value`` overrides.

The dataclasses below are the schema; OmegaConf structured configs load them
(:mod:`glcnet.utils.structured`): defaults <- YAML file <- overrides, in struct mode (an
unknown key is an error that lists the valid keys) with type checks (a wrong type is an
error naming the key), each as one line.
Every run saves its resolved config (``config.yaml``) in its run directory, so a run
can be repeated exactly with ``glcnet <command> --config RUN/config.yaml``.

Longer than ~300 lines because it is the one schema of every setting (with its comment)
plus the one table of allowed ranges (:data:`RANGES`): split, they would be read together anyway.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from glcnet.errors import GlcnetError
from glcnet.utils.structured import from_dict as from_dict  # re-exported: the config API is glcnet.config
from glcnet.utils.structured import load
from glcnet.utils.structured import split_top as split_top
from glcnet.utils.structured import to_dict as to_dict
from glcnet.utils.structured import with_overrides as with_overrides

T = TypeVar("T")


# ----------------------------------------------------------------------------- parts
@dataclass
class ModelConfig:
    """DeepLabv3+ (smp) built from scratch, ``encoder_weights=None``."""

    encoder: str = "resnet18"  # any smp encoder; the paper uses resnet50
    output_stride: int = 16
    aspp_channels: int = 256  # smp ``decoder_channels``: ASPP and decoder width
    in_channels: int = 0  # 0: take the band count of the prepared data set
    # ASPP dilation rates; null: DeepLabv3+'s for the output stride, (6, 12, 18) at 16 and (12, 24, 36) at 8.
    # A rate r >= (view or crop side) / output_stride leaves its branch a 1x1 conv (glcnet.models.deeplab)
    atrous_rates: tuple[int, int, int] | None = None


@dataclass
class ViewConfig:
    """Two-view generation for pretraining (:class:`glcnet.transforms.ViewGenerator`)."""

    size: int = 224  # output side of both views
    scale: tuple[float, float] = (0.4, 1.0)  # RandomResizedCrop area fraction
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect ratio
    # strengths of view 2's augmentations: a preset (glcnet.transforms.presets: reference = the authors'
    # code, mocov2, strong = glcnet's earlier defaults); each field below, when not null, overrides it
    preset: str = "reference"
    p_flip: float | None = None  # view 2: horizontal / vertical flip, each with this probability
    p_rot: float | None = None  # view 2: rotation by k*90 degrees, k in {1,2,3}
    p_jitter: float | None = None  # view 2: colour jitter
    brightness: float | None = None  # factor 1 +- brightness
    contrast: float | None = None
    saturation: float | None = None  # HSV jitter on the RGB bands only
    hue: float | None = None  # in turns (1 = 360 degrees)
    per_band: bool | None = None  # brightness/contrast factors drawn per band (colour casts) or one per image
    p_gray: float | None = None
    p_blur: float | None = None
    blur_sigma: tuple[float, float] | None = None  # in view pixels (presets: given at 224 px, scaled to views.size)
    rgb_bands: tuple[int, int, int] | None = (0, 1, 2)  # band indices of R,G,B; None: no HSV jitter
    in_loader: bool = False  # make the views in the DataLoader workers (CPU) instead of on the training device
    cpu_chunk: int = 4  # float tiles on the CPU: samples per cache-sized sub-batch; 0 = all


@dataclass
class MethodConfig:
    """Pretraining method and its options (one registry: ``glcnet.ssl.METHODS``)."""

    name: str = "glcnet"
    temperature: float = 0.5  # NT-Xent tau (glcnet global+local, simclr)
    proj_dim: int = 64
    # glcnet
    lam: float = 0.5  # L = lam * L_global + (1 - lam) * L_local
    style: bool = True  # mean+variance of ASPP features; False = "no style" ablation
    patch_num: int = 4
    patch_size: int = 48  # in view pixels (paper: 48 at 224)
    fn_topk: int = 0  # local term: the fn_topk negatives most like the anchor's key are not negatives; 0 = off
    # mocov2, glcnet_m: momentum encoder + queue(s) of keys
    queue_size: int = 2048  # keys in the queue (glcnet_m: the style-embedding queue of the global term)
    momentum: float = 0.999
    moco_temperature: float = 0.2  # InfoNCE tau against a queue
    bn_splits: int = 4  # one process: shuffle-BN as BatchNorm over this many sub-batches (1 = plain BatchNorm)
    patch_queue_size: int = 4096  # glcnet_m: the patch-embedding queue of the local term
    # vicregl
    vicreg_weights: tuple[float, float, float] = (25.0, 25.0, 1.0)  # lambda (invariance), mu (variance), nu (cov.)
    vicregl_alpha: float = 0.75  # L = alpha * L_global + (1 - alpha) * L_local
    vicregl_matches: tuple[int, int] = (20, 4)  # local matches kept per image: a -> b, b -> a
    vicregl_cell: int = 8  # view pixels per local feature (a multiple of 4 dividing views.size)
    expander_dim: int = 512  # width of the VICRegL expanders (global and local)
    # inpainting
    mask_ratio: float = 0.25  # fraction of the view area that is masked
    mask_block: int = 32  # side of the masked square blocks
    # jigsaw
    jigsaw_grid: int = 3
    jigsaw_permutations: int = 1000


@dataclass
class OptimConfig:
    """AdamW (or Adam) and its learning-rate schedule (:func:`glcnet.engine.lr_factor`)."""

    # adamw: decoupled decay w <- w (1 - lr wd), which leaves a weight without gradient where it is;
    # adam: the reference's coupled L2 (g + wd w, normalised by Adam: such a weight moves ~lr a step)
    optimizer: str = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-5
    epochs: int = 400
    schedule: str = "cosine"  # cosine (to min_lr) | exp (lr * gamma**epoch) | constant
    min_lr: float = 4e-8
    gamma: float = 0.98
    warmup_epochs: int = 0
    # lr is for a global batch of ref_batch; other global batches B scale it by
    # linear: B / ref | sqrt: sqrt(B / ref) | none (glcnet.engine.scaled_lr)
    scale_lr: str = "sqrt"
    ref_batch: int = 0  # 0: trainer.batch_size, i.e. lr is for one device (one process is never rescaled)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings: one CPU, one GPU, or DDP over GPUs/nodes."""

    accelerator: str = "auto"
    devices: str = "auto"  # "auto", "1", "4", ...
    num_nodes: int = 1
    strategy: str = "auto"  # "auto" or "ddp"; torchrun / SLURM are detected by Lightning
    sync_batchnorm: bool | None = None  # batch norm over the global batch; null: on for DDP over GPUs, off on CPU
    precision: str = "32-true"  # "16-mixed" / "bf16-mixed" on GPU
    batch_size: int = 256  # per device (process); the global batch is batch_size x devices x num_nodes
    num_workers: int = 4
    max_steps: int = -1  # >0: stop after this many optimizer steps (smoke runs)
    limit_batches: float = 1.0  # fraction (or count if > 1) of batches per epoch
    log_every: int = 10
    channels_last: bool = False
    progress: bool = True  # Lightning's bar when the output is a terminal (else an epoch line at most each minute)
    tensorboard: bool = False  # also log to RUN/tensorboard/ (tensorboard --logdir RUN)
    checkpoint_every: int = 1  # epochs between "last" checkpoints


@dataclass
class ProbeConfig:
    """Dense linear probe of frozen features (``glcnet.finetune.probe``), during pretraining and ``glcnet probe``."""

    every: int = -1  # pretraining steps between probes; -1 = auto (~10 points per run, <= ~10% of its time); 0 = off
    fraction: float = 0.01  # labelled train subset the probe is fitted on (scored on the val scenes)
    subset_seed: int = -1  # as finetune.subset_seed
    subset: str = ""  # as finetune.subset
    layers: list[str] = field(default_factory=lambda: ["aspp", "decoder"])
    pixels: int = 65536  # labelled training pixels sampled (fixed sample)
    window: int = 0  # val-scene window; 0 = the prepared tile size (the context the probe was fitted on)
    batch_size: int = 16
    l2: float = 1.0e-4  # L2 penalty of the logistic regression
    max_iter: int = 100  # L-BFGS iterations
    # batch-norm statistics recomputed on this many train/unlabelled tiles (the same for every network)
    # before the features are read (glcnet.models.batchnorm); 0: the network's own running statistics
    bn_tiles: int = 256


# ----------------------------------------------------------------------------- commands
@dataclass
class PretrainConfig:
    """``glcnet pretrain``: data, run folder, seed and the parts above."""

    data: str = ""  # prepared data set folder (glcnet prepare)
    out: str = "runs/pretrain"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


@dataclass
class EvalConfig:
    """Whole-scene sliding-window inference and metrics."""

    window: int = 256
    stride: int = 128
    blend: str = "gaussian"  # gaussian | linear | mean
    tta: bool = False  # average over flips
    batch_size: int = 8
    isprs: bool = True  # also report the ISPRS convention when eroded labels exist


@dataclass
class FinetuneConfig:
    """``glcnet finetune``: labelled fraction, initialisation, what to load/freeze, schedule."""

    data: str = ""
    out: str = "runs/finetune"
    seed: int = 0
    init: str = "none"  # "none" or a pretrained checkpoint (pretrained.pt or a run dir)
    load: str = "encoder+aspp"  # encoder | encoder+aspp | all
    freeze: str = "none"  # none | encoder | encoder+aspp: not trained (BN statistics too), e.g. to probe features
    bn_tiles: int = 256  # with freeze: BN statistics first recomputed on this many train/unlabelled tiles (0: kept)
    loaded_lr_mult: float = 1.0  # learning rate of the loaded (pretrained) parts = optim's rate x this; 1: one rate
    # with a pretrained init: for the first warmup_steps optimizer steps only the new layers (decoder, head)
    # learn; the loaded part's rate is 0 (its batch norms still adapt), so the random head's first large
    # gradients do not reach the pretrained features (linear-probe-then-fine-tune, Kumar et al. 2022)
    warmup_steps: int = 0
    fraction: float = 0.01  # labelled subset chosen by prepare: 0.01 0.05 0.1 0.2 1.0
    subset_seed: int = -1  # -1: prepare's labelled subset; >= 0: a same-sized nested subset drawn with this seed
    subset: str = ""  # a subset file of glcnet select: exactly its tiles are labelled (fraction, subset_seed unused)
    crop: int = 256
    class_weights: str = "none"  # none | inverse | sqrt-inverse (from train class counts)
    val_every: int = 1  # epochs between validation passes on the val scenes
    val_stride: int = 0  # sliding-window stride of those passes (at most eval.window); 0: eval.stride
    early_stop: int = 0  # patience in validations; 0 = off
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, epochs=150, schedule="exp", gamma=0.98)
    )
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(batch_size=16))
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class ExperimentConfig:
    """Grid of methods x label fractions x seeds; each cell pretrains (cached), fine-tunes, tests."""

    data: str = ""
    out: str = "runs/experiment"
    methods: list[str] = field(default_factory=lambda: ["none", "simclr", "glcnet"])
    fractions: list[float] = field(default_factory=lambda: [0.01])
    seeds: list[int] = field(default_factory=lambda: [0])
    probe: bool = True  # frozen-feature probe (pretrain.probe.*) of every cell's initial network, and probe curves
    pretrain_seed: int = -1  # -1: one pretraining per seed; >= 0: one pretraining (this seed) shared by all seeds
    # several pretrainings shared by all seeds: every cell of a pretrained method runs once per pretraining
    # (intervals then include the pretraining's variance); [] = pretrain_seed's rule
    pretrain_seeds: list[int] = field(default_factory=list)
    # cells' labelled subsets: prepared (prepare's, one for all seeds) | seed (one per seed) | a subset file
    # path with {seed} (and {fraction}) in it, e.g. subsets/typiclust-s{seed}.json (glcnet select)
    subsets: str = "prepared"
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


# ----------------------------------------------------------------------------- loading
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping gives the same key twice (``key``, 1-based ``line`` of the repeat, ``first`` line)."""

    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"line {line}: key {key!r} is given twice (also on line {first}); "
                         "YAML would silently keep the last one")
        self.key, self.line, self.first = key, line, first


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding the same key twice (PyYAML keeps the
    last one without a word). Keys brought in by a merge (``<<: *base``) may be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise DuplicateKeyError(key, key_node.start_mark.line + 1, seen[key])
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` for a key given twice in a mapping."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors naming the file (also a key given twice)."""
    path = Path(path)
    if not path.is_file():
        raise GlcnetError(f"{path}: config file not found")
    try:
        data = load_yaml(path.read_text()) or {}
    except DuplicateKeyError as e:
        raise GlcnetError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise GlcnetError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise GlcnetError(f"{path}: expected a mapping at the top level")
    return data


def resolve_config(name: str | Path) -> Path:
    """A config file path, or the name of a packaged config (``pretrain_cpu`` -> glcnet/configs/pretrain_cpu.yaml)."""
    p = Path(name)
    if p.exists():
        return p
    packaged = CONFIG_DIR / f"{p.stem}.yaml"
    if packaged.exists() and p.suffix in ("", ".yaml", ".yml") and p.parent == Path("."):
        return packaged
    known = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")))
    raise GlcnetError(f"{name}: config file not found (packaged configs: {known})")


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] | None = None) -> T:
    """Defaults <- YAML file or packaged config name (if any) <- ``key=value`` overrides, checked against ``cls``."""
    if not path:
        cfg = load(cls, {}, overrides or [])
    else:
        path = resolve_config(path)
        cfg = load(cls, read_yaml(path), overrides or [], where=str(path))
    check_values(cfg)
    return cfg


# Allowed values by field name (in any section; "Class.field" where one class differs):
# (low, high, low included, high included).
# One table, checked for every config a command loads (check_values), so that a zero batch
# size or a negative learning rate is one line naming the key, not a traceback from torch.
_POS, _NONNEG, _UNIT, _PROB = (0, None, False, True), (0, None, True, True), (0, 1, False, True), (0, 1, True, True)
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    **dict.fromkeys(("lr", "epochs", "batch_size", "size", "proj_dim", "patch_num", "patch_size", "queue_size",
                     "temperature", "moco_temperature", "mask_block", "jigsaw_grid", "jigsaw_permutations", "window",
                     "stride", "crop", "val_every", "log_every", "checkpoint_every", "num_nodes", "aspp_channels",
                     "output_stride", "gamma", "limit_batches", "ratio"), _POS),
    **dict.fromkeys(("weight_decay", "min_lr", "warmup_epochs", "warmup_steps", "num_workers", "early_stop",
                     "in_channels", "bn_tiles", "val_stride", "blur_sigma", "brightness", "contrast", "saturation",
                     "cpu_chunk"), _NONNEG),
    **dict.fromkeys(("fraction", "scale", "mask_ratio"), _UNIT),
    **dict.fromkeys(("p_flip", "p_rot", "p_jitter", "p_gray", "p_blur", "lam", "momentum", "betas", "hue"), _PROB),
    **dict.fromkeys(("pixels", "max_iter", "atrous_rates"), _POS),
    "l2": _NONNEG,
    # NumPy's (and Lightning's) seed range; outside it Lightning would quietly seed 0
    **dict.fromkeys(("seed", "seeds", "pretrain_seeds"), (0, 2**32 - 1, True, True)),
    "ProbeConfig.window": _NONNEG,  # 0: the prepared tile size
}


def _in_range(v: float, rule: tuple[float | None, float | None, bool, bool]) -> bool:
    lo, hi, lo_in, hi_in = rule
    return ((lo is None or (v >= lo if lo_in else v > lo)) and (hi is None or (v <= hi if hi_in else v < hi))
            and v == v)  # NaN is never in range


def _describe(rule: tuple[float | None, float | None, bool, bool]) -> str:
    lo, hi, lo_in, hi_in = rule
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def check_values(cfg: Any, where: str = "", flag: bool = False) -> None:
    """Raise a one-line error for the first number of ``cfg`` outside :data:`RANGES`
    (``flag``: name it as a command-line option, ``--batch-size``)."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        key = f"{where}{f.name}"
        if is_dataclass(v):
            check_values(v, f"{key}.", flag)
            continue
        rule = RANGES.get(f"{type(cfg).__name__}.{f.name}", RANGES.get(f.name))
        if rule is None:
            if f.name == "max_steps" and (v == 0 or v < -1):
                raise GlcnetError(f"{key}: must be -1 (no limit) or > 0, got {v}")
            continue
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, (int, float)) and not isinstance(x, bool) and not _in_range(x, rule):
                name = "--" + key.replace("_", "-") if flag else key
                raise GlcnetError(f"{name}: must be {_describe(rule)}, got {v!r}")


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from glcnet.utils.atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` re-exported for convenience."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def add_config_args(parser: argparse.ArgumentParser, packaged: str, *, resume: bool = True,
                    out_help: str = "run directory (overrides out:)", example: str = "optim.epochs=5") -> None:
    """The config arguments of a command: ``--config``, ``--data``, ``--out``, positional
    ``KEY=VALUE`` overrides and, for a command with one run directory, ``--resume`` and ``--overwrite``."""
    parser.add_argument("--config", help=f"YAML config or packaged config name ({packaged})")
    parser.add_argument("--data", help="prepared data set folder (overrides data:)")
    parser.add_argument("--out", help=out_help)
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue a killed run from checkpoints/last.ckpt")
        parser.add_argument("--overwrite", action="store_true", help="replace a run of the same command in --out")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {example}")


def config_from_args(cls: type[T], args: argparse.Namespace, flags: Mapping[str, str] | None = None) -> T:
    """``cls`` loaded from ``args.config`` with ``args.overrides``, then the given flags
    (``{argument: config key}``; default ``--data``, ``--out``) where set: flags win."""
    flags = {"data": "data", "out": "out"} if flags is None else flags
    given = [f"{key}={getattr(args, dest)}" for dest, key in flags.items() if getattr(args, dest, None) is not None]
    return load_config(cls, args.config, [*args.overrides, *given])
