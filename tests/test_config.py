"""Config validation errors name the field; every file in conf/ composes against the schema."""

from pathlib import Path

import pytest

from lab.config import DataConfig, RunConfig, TrainConfig, to_run_config

CONF = Path(__file__).resolve().parent.parent / "conf"


def _cfg(**train):
    return RunConfig(train=TrainConfig(**{"tokens": 1e5, **train}), data=DataConfig(seq_len=64))


@pytest.mark.parametrize(
    "train, field",
    [
        (dict(tokens=None), "train.tokens"),
        (dict(tokens=1e5, flops=1e9), "train.tokens"),
        (dict(tokens=-5), "train.tokens"),
        (dict(tokens=None, flops=0.0), "train.flops"),
        (dict(batch_tokens=1000), "train.batch_tokens"),
        (dict(batch_tokens=640, micro_batch=3), "train.micro_batch"),
        (dict(schedule="linear"), "train.schedule"),
        (dict(lr=0), "train.lr"),
        (dict(device="tpu"), "train.device"),
    ],
)
def test_bad_train_config_names_field(train, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        _cfg(**train).validate()


def test_unknown_keys_rejected():
    with pytest.raises(ValueError, match="unknown config keys"):
        to_run_config({"train": {"tokenz": 5}})


@pytest.mark.parametrize("group", ["model", "data"])
def test_every_conf_file_composes(group):
    from hydra import compose, initialize_config_dir

    from lab.config import register_configs

    register_configs()
    names = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert names
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names:
            cfg = to_run_config(compose("config", overrides=[f"{group}={name}", "run_dir=x"])).validate()
            assert cfg.run_dir == "x"


def test_hydra_rejects_unknown_override():
    from hydra import compose, initialize_config_dir

    from lab.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(Exception) as e:
            compose("config", overrides=["model.widthh=3"])
    assert "widthh" in str(e.value)
