"""One config schema (segloss.config): every option and experiment composes against it, the
composed values are those from before the schema, typos and wrong types fail at composition,
range checks are one-line errors, and no config default is repeated in src/."""

from __future__ import annotations

import ast
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import compose
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import segloss.cli  # noqa: F401  (the segloss_folds resolver, as every entry point)
from segloss import config
from segloss.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# Composed at 76a9900 (the last commit before the schema), by the cases of _cases() below.
SNAPSHOT = json.loads((Path(__file__).parent / "config_snapshot.json").read_text())
# What the schema adds: the loss class and the model function the schemas name, and
# experiment=tuned's slot; and the recipe's settings added since (issue 19).
ADDED = {"loss._target_", "model._target_", "tuned_lr", "train.val_batch_size"}
ADDED |= {"train.sampling", "train.uniform_share", "train.samples_per_epoch", "train.val_every"}
ADDED |= {"factor"}  # a second factor crossed with the loss (issue 20, experiment=lgg_sampling)
# margins of the metrics whose verdicts the report checks for agreement (issue 20)
ADDED |= {f"report.margins.{m}" for m in ("dice_per_image", "dice_tumour_slices", "iou")}
ADDED |= {"report.margins.pixel_accuracy"}
# Values changed on purpose since the snapshot, as (before, after), all by issue 19:
# loss=dice and bce_dice pool the soft Dice over the batch, as the article's code;
# experiment=lgg_cv trains 5 seeds for 25 epochs (docs/real-data.md, "Ablation").
CHANGED = {
    "loss.reduction": ("image", "batch"),
    "train.epochs": (20, 25),
    "hydra.sweeper_params.seed": ("0,1,2", "0,1,2,3,4"),
}
# The fake rates experiment=tuned reads in these tests (conf/tuned/lr.yaml is tune's output).
TUNED = "bce: 0.003\ndice: 0.001\nbce_dice: 0.0003\nfocal: 0.001\nlovasz: 0.001\ntversky: 0.001\n"
OPTIONS = {group: sorted(p.stem for p in (CONF / group).glob("*.yaml")) for group in config.GROUPS}


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory) -> Path:
    """conf/ with a conf/tuned/lr.yaml, so experiment=tuned composes."""
    conf = tmp_path_factory.mktemp("schema") / "conf"
    shutil.copytree(CONF, conf)
    (conf / "tuned").mkdir(exist_ok=True)
    (conf / "tuned" / "lr.yaml").write_text(TUNED)
    return conf


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)  # tracking.uri as in the snapshot
    monkeypatch.setenv("TMPDIR", "/tmp")  # experiment=debug's store, as in the snapshot


@functools.cache
def _compose(conf: Path, *overrides: str, hydra: bool = False):
    """The composed config (cached: composing takes a second or two; callers only read it)."""
    return compose(*overrides, hydra=hydra, conf=conf)


def _plain(cfg) -> dict:
    keys = [k for k in cfg if k != "hydra"]
    return OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, keys), resolve=True, throw_on_missing=False
    )


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(before, after) -> bool:
    """Equal, and of the same type, except an int the schema now types as float (1 -> 1.0)."""
    if isinstance(before, bool) or isinstance(after, bool):
        return type(before) is type(after) and before == after
    if isinstance(before, int) and isinstance(after, float):
        return float(before) == after
    if isinstance(before, list) and isinstance(after, list):
        return len(before) == len(after) and all(map(_same, before, after))
    return type(before) is type(after) and before == after


@pytest.mark.parametrize("case", sorted(SNAPSHOT))
def test_composed_values_are_those_before_the_schema(conf_dir, case):
    group, _, option = case.partition("=")
    cfg = _compose(conf_dir, *([] if case == "default" else [case]), hydra=True)
    if group == "hydra/launcher":
        after = {"hydra": {"launcher": OmegaConf.to_container(cfg.hydra.launcher)}}
    else:
        after = _plain(cfg)
        if case == "default" or group == "experiment":
            after["hydra"] = {
                "callbacks": OmegaConf.to_container(cfg.hydra.callbacks),
                "sweeper_params": OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True),
                "job_chdir": cfg.hydra.job.chdir,
                "run_dir": OmegaConf.to_container(cfg.hydra.run)["dir"],
                "sweep": OmegaConf.to_container(cfg.hydra.sweep),
            }
        else:
            after = {group: after[group]}
    before, after = _flat(SNAPSHOT[case]), _flat(after)
    assert set(after) - set(before) <= ADDED
    assert set(before) <= set(after)
    changed = {k: (before[k], after[k]) for k in before if not _same(before[k], after[k])}
    assert {k: v for k, v in changed.items() if CHANGED.get(k) != v} == {}


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g, options in OPTIONS.items() for o in options]
)
def test_every_group_option_composes_against_its_schema(group, option):
    """Each option's yaml selects its schema (defaults: [base_<name>, _self_]), which types
    the composed node; every range check passes on what conf/ ships."""
    selected = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())["defaults"]
    assert selected[-1] == "_self_"
    cfg = _compose(CONF, f"{group}={option}")
    schema = OmegaConf.get_type(cfg[group])
    assert schema is config.schemas()[(group, selected[0])]
    assert issubclass(schema, config.GROUPS[group])
    assert isinstance(getattr(config.validate(cfg), group), schema)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_passes_the_checks(conf_dir, name):
    cfg = _compose(conf_dir, f"experiment={name}")
    checked = config.validate(cfg)
    assert isinstance(checked.train, config.TrainConfig)
    assert isinstance(checked.train.epochs, int) and isinstance(checked.train.lr, float)
    assert isinstance(checked.data.split.train, float)


def test_composed_types_follow_the_schema():
    cfg = _compose(CONF)
    assert OmegaConf.get_type(cfg) is config.Config
    assert OmegaConf.get_type(cfg.data) is config.SyntheticData
    assert OmegaConf.get_type(_compose(CONF, "data=lgg").data) is config.LggData
    assert OmegaConf.is_missing(_compose(CONF, "data=lgg").data, "root")
    cfg = _compose(CONF, "train.epochs=3", "eval.threshold=0.25", "tracking.uri=null")
    assert cfg.train.epochs == 3 and cfg.eval.threshold == 0.25 and cfg.tracking.uri is None


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.epochz=3", "train.epochz"),  # a typo key
        ("data.tiff_size=9.5", "data.tiff_size"),  # a wrong type
        ("train.epochs=abc", "train.epochs"),
        ("train.augment.enabled=maybe", "train.augment.enabled"),
        ("cv.folds=[2]", "cv.folds"),
        ("seed=one", "seed"),
    ],
)
def test_typo_keys_and_wrong_types_fail_at_composition(override, fragment):
    with pytest.raises(ConfigCompositionException, match=fragment.replace(".", r"\.")):
        _compose(CONF, override)


def test_a_typo_key_in_a_config_file_fails_at_composition(conf_dir, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir, conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\ntrain:\n  epochz: 3\n")
    with pytest.raises(ConfigCompositionException) as caught:
        _compose(conf, "experiment=typo")
    assert segloss.cli.one_line(caught.value) == (
        "In 'experiment/typo': ConfigKeyError raised while composing config: "
        "Key 'epochz' not in 'TrainConfig' (full_key: train.epochz)"
    )


RANGE_ERRORS = [
    ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
    ("train.lr=0", "train.lr must be a number > 0, got 0.0"),
    (
        "train.scheduler=step",
        "train.scheduler must be one of onecycle, cosine, constant, got 'step'",
    ),
    ("train.precision=fp16", "train.precision must be one of fp32, bf16, got 'fp16'"),
    ("train.patience=0", "train.patience must be an integer >= 1 or null, got 0"),
    ("train.augment.hflip=2", "train.augment.hflip must be a number in [0, 1], got 2.0"),
    ("train.sampling=tumour", "train.sampling must be one of uniform, foreground, got 'tumour'"),
    ("train.uniform_share=1.5", "train.uniform_share must be a number in [0, 1], got 1.5"),
    ("train.uniform_share=-0.1", "train.uniform_share must be a number in [0, 1], got -0.1"),
    ("train.samples_per_epoch=0", "train.samples_per_epoch must be an integer >= 1 or null"),
    ("train.val_every=0", "train.val_every must be an integer >= 1, got 0"),
    (
        "tracking.system_metrics_interval=0",
        "tracking.system_metrics_interval must be a number of seconds > 0 or null, got 0.0",
    ),
    ("cv.folds=0", "cv.folds=0 must be an integer >= 1 (1: no cross-validation)"),
    ("cv.val_fraction=1", "cv.val_fraction=1.0 must be a number in (0, 1)"),
    (
        "data.split.train=0.7",
        "data.split: fractions {'train': 0.7, 'val': 0.15, 'test': 0.25} must be >= 0 and sum to 1",
    ),
    ("data.image_size=4", "data.image_size=4 must be >= 8"),
    ("data.n_slices=[5,2]", "data.n_slices=[5, 2] must be [min, max] with 1 <= min <= max"),
    ("data.normalise.low=99", "data.normalise={'low': 99.0, 'high': 99.0}: need 0 <= low < high"),
    ("eval.threshold=1", "eval.threshold must be in (0, 1), got 1.0"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
    ("eval.nsd_tolerance=-1", "eval.nsd_tolerance must be >= 0, got -1.0"),
    ("eval.threshold_grid.step=0", "eval.threshold_grid must satisfy 0 < start <= stop < 1"),
    ("report.alpha=0", "report.alpha must be a number in (0, 1), got 0.0"),
    ("report.margins.hd95=-1", "report.margins.hd95 must be a number >= 0, got -1.0"),
    ("model.encoder_depth=4", "model.decoder_channels=[128, 64, 32, 16, 8] must be 4"),
    ("tune.grid=[]", "tune.grid must be a non-empty list of numbers > 0, got []"),
]


@pytest.mark.parametrize(("override", "message"), RANGE_ERRORS)
def test_each_range_check_is_one_line_naming_the_setting(override, message):
    key, value = override.split("=", 1)
    cfg = _compose(CONF).copy()
    OmegaConf.update(cfg, key, yaml.safe_load(value))  # as the override would (types checked)
    with pytest.raises(ConfigError) as caught:
        config.validate(cfg)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_plain_mappings_get_the_same_checks():
    cv = {"folds": 1, "val_fraction": 0.2, "fold": None}
    with pytest.raises(ConfigError, match="cv: unknown setting.s. fold_count; known: folds"):
        config.from_mapping(config.CvConfig, cv | {"fold_count": 2}, "cv")
    with pytest.raises(ConfigError, match=r"^cv: setting\(s\) val_fraction, fold not set$"):
        config.from_mapping(config.CvConfig, {"folds": 1}, "cv")  # no default in the schema
    with pytest.raises(ConfigError, match=r"^data\.source='mnist': expected one of"):
        config.data_config({"source": "mnist"})
    shared = config.data_config({"source": "lgg", "root": "r", "download": True, "cache": "c"})
    assert shared.image_size == config.DataConfig.image_size  # the shared defaults, set once


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("train.epochs=abc", "error: Error merging override train.epochs=abc: Value 'abc' of"),
        ("loss=nope", "error: In 'config': Could not find 'loss/nope'; Available options in"),
        ("eval.threshold=2", "error: eval.threshold must be in (0, 1), got 2.0"),
        ("train.val_every=0", "error: train.val_every must be an integer >= 1, got 0"),
        ("train.uniform_share=2", "error: train.uniform_share must be a number in [0, 1], got 2"),
    ],
)
def test_entry_points_print_one_error_line_and_exit_2(tmp_path, override, line):
    done = _run(
        "pipelines/prepare.py",
        override,
        f"paths.prepared={tmp_path / 'prepared'}",
        f"paths.reports={tmp_path / 'reports'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(line), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "prepared").exists()
    if override == "loss=nope":
        assert "base_" not in errors[0] and "bce_dice" in errors[0]


def test_hydra_finds_the_schemas_without_importing_segloss():
    """The Hydra plugin hydra_plugins.segloss_config registers them before any compose."""
    code = (
        "from hydra import compose, initialize_config_dir\n"
        f"with initialize_config_dir(config_dir={str(CONF)!r}, version_base='1.3'):\n"
        "    print(type(compose('config')._metadata.object_type).__name__,"
        " compose('config')._metadata.object_type.__name__)\n"
    )
    done = _run("-c", code)
    assert done.returncode == 0 and done.stdout.split()[-1] == "Config", done.stderr[-2000:]


# --- No second copy of a default in src/ -------------------------------------------------
# A copy is a literal in src/ (outside segloss.config) that equals the composed default of a
# config key of the same name (the last part of its path: train.epochs -> epochs), where:
#   1. a function's keyword default:        def f(epochs=12)
#   2. a class field's default:             class S: threshold: float = 0.5
#   3. the fallback of a read of a config mapping, ``.get``/``.setdefault``/``.pop`` with a
#      constant key on a receiver whose source names cfg/config/settings/options/kwargs:
#      cfg["train"].get("reuse", True)
# None is no default (a null setting) and lists are left out. No copy is allowed: a value
# the config sets is passed in by the caller (a required argument), or read from the config.
MAPPINGS = ("cfg", "config", "settings", "options", "kwargs")


def _defaults() -> dict[str, set[tuple[bool, object]]]:
    """Every scalar the composed config of any group option holds, by key name."""
    found: dict[str, set[tuple[bool, object]]] = {}

    def walk(tree: dict) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value)
            elif value is not None and not isinstance(value, list):
                found.setdefault(str(key), set()).add((isinstance(value, bool), value))

    for group, options in OPTIONS.items():
        for option in options:
            walk(OmegaConf.to_container(_compose(CONF, f"{group}={option}"), resolve=False))
    return found


def _copies(tree: ast.AST, defaults: dict) -> list[tuple[int, str]]:
    def same(key: str, node: ast.AST | None) -> bool:
        try:
            value = ast.literal_eval(node) if node is not None else None
        except ValueError:
            return False
        if value is None or isinstance(value, list | tuple | dict | set):
            return False
        return (isinstance(value, bool), value) in defaults.get(key, ())

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            positional = a.posonlyargs + a.args
            with_default = positional[len(positional) - len(a.defaults) :]
            pairs = list(zip(with_default, a.defaults, strict=True))
            pairs += list(zip(a.kwonlyargs, a.kw_defaults, strict=True))
            found += [(d.lineno, arg.arg) for arg, d in pairs if same(arg.arg, d)]
        elif isinstance(node, ast.ClassDef):
            for st in node.body:
                named = isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
                if named and same(st.target.id, st.value):
                    found.append((st.lineno, st.target.id))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "setdefault", "pop")
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and any(word in ast.unparse(node.func.value) for word in MAPPINGS)
            and same(node.args[0].value, node.args[1])
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_no_config_default_is_repeated_in_src():
    defaults = _defaults()
    assert {"epochs", "threshold", "image_size", "smooth", "dpi"} <= set(defaults)
    copies = {}
    for path in sorted((REPO / "src").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("src/segloss/config/"):
            continue
        for line, key in _copies(ast.parse(path.read_text(), rel), defaults):
            copies.setdefault(rel, []).append(f"{key} (line {line})")
    assert not copies


def test_the_copy_finder_finds_each_kind_of_copy():
    source = (
        "def f(epochs=12, lr=0.5):\n    return cfg['train'].get('dpi', 110), meta.get('dpi', 110)\n"
        "class S:\n    threshold: float = 0.5\n    device: str = 'cuda'\n"
    )
    defaults = {"epochs": {(False, 12)}, "dpi": {(False, 110)}, "threshold": {(False, 0.5)}}
    defaults["device"] = {(False, "auto")}
    assert sorted(_copies(ast.parse(source), defaults)) == [
        (1, "epochs"),
        (2, "dpi"),
        (4, "threshold"),
    ]


def test_the_threshold_grid_includes_both_ends_without_float_error():
    from segloss.config.eval import ThresholdGrid

    assert ThresholdGrid(0.1, 0.9, 0.2).values() == (0.1, 0.3, 0.5, 0.7, 0.9)
    assert ThresholdGrid(0.05, 0.95, 0.05).values()[-1] == 0.95
    assert len(ThresholdGrid(0.5, 0.5, 0.1).values()) == 1
