import math
import random

import lightning.pytorch as pl
import numpy
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_invariance import InvarianceDeviation, InvarianceMonitor, PredictionConsistency, Probe
from lightning_invariance.groups import AugmentationFamily, CyclicRotation

from models import ImageClassifier, quiet_trainer, synthetic_images

GROUP = CyclicRotation(4)


def _trainer(tmp_path, callbacks, max_epochs=2, logger=True, **kwargs) -> pl.Trainer:
    if logger is True:
        logger = TensorBoardLogger(tmp_path, name="logs", version=0)
    return quiet_trainer(tmp_path, callbacks, max_epochs, logger, deterministic=True, **kwargs)


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def _probe_value(model, inputs, layer="output", normalize=False, consistency=False) -> float:
    metric = PredictionConsistency(len(GROUP)) if consistency else InvarianceDeviation(len(GROUP), normalize=normalize)
    probe = Probe(model, GROUP, layers=[layer])
    for start in range(0, len(inputs), 16):  # the validation batches, as the callback measured them
        probe.update(inputs[start : start + 16], {layer: metric})
    return metric.compute().item()


def test_fit_logs_each_epoch_and_matches_probe(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier()
    monitor = InvarianceMonitor(
        GROUP, layers=["net.features.2", "output"], scores=("geed", "geed_normalized", "consistency"), max_samples=40
    )
    trainer = _trainer(tmp_path, [monitor], max_epochs=3, num_sanity_val_steps=2)
    trainer.fit(model)
    scalars = _scalars(tmp_path / "logs" / "version_0")
    names = [
        "invariance/output/geed",
        "invariance/output/geed_normalized",
        "invariance/output/consistency",
        "invariance/net.features.2/geed",
        "invariance/net.features.2/geed_normalized",
    ]
    for name in names:
        assert len(scalars[name]) == 3, name  # one per epoch, none from the sanity check
    assert len(monitor.history) == 3
    inputs = synthetic_images(48, seed=10).tensors[0][:40]
    assert scalars["invariance/output/geed"][-1][1] == pytest.approx(_probe_value(model, inputs), rel=1e-5)
    assert scalars["invariance/output/geed_normalized"][-1][1] == pytest.approx(
        _probe_value(model, inputs, normalize=True), rel=1e-5
    )
    assert scalars["invariance/output/consistency"][-1][1] == pytest.approx(
        _probe_value(model, inputs, consistency=True), rel=1e-6
    )
    inner = _probe_value(model, inputs, layer="net.features.2")
    assert scalars["invariance/net.features.2/geed"][-1][1] == pytest.approx(inner, rel=1e-5)
    assert trainer.callback_metrics["invariance/output/geed"].item() == pytest.approx(_probe_value(model, inputs), 1e-5)


def test_validate_logs_and_returns_scores(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier()
    trainer = _trainer(tmp_path, [InvarianceMonitor(GROUP, max_samples=None)])
    (results,) = trainer.validate(model, verbose=False)
    inputs = synthetic_images(48, seed=10).tensors[0]
    assert results["invariance/output/geed"] == pytest.approx(_probe_value(model, inputs), rel=1e-5)
    assert not math.isnan(results["invariance/output/geed_normalized"])


def test_two_dataloaders_logged_separately_and_selectable(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(num_val_loaders=2)
    both = InvarianceMonitor(GROUP, scores=("geed",), max_samples=16)
    second = InvarianceMonitor(GROUP, scores=("geed",), max_samples=16, dataloaders=[1], prefix="ood")
    trainer = _trainer(tmp_path, [both, second], max_epochs=1)
    trainer.fit(model)
    scalars = _scalars(tmp_path / "logs" / "version_0")
    first = scalars["invariance/output/geed/dataloader_idx_0"][0][1]
    other = scalars["invariance/output/geed/dataloader_idx_1"][0][1]
    assert first == pytest.approx(_probe_value(model, synthetic_images(48, seed=10).tensors[0][:16]), rel=1e-5)
    assert other == pytest.approx(_probe_value(model, synthetic_images(48, seed=11).tensors[0][:16]), rel=1e-5)
    assert scalars["ood/output/geed"][0][1] == pytest.approx(other, rel=1e-6)  # one loader: no suffix
    assert not any(name.startswith("ood/") and "dataloader_idx_0" in name for name in scalars)


def test_every_n_epochs(tmp_path):
    monitor = InvarianceMonitor(GROUP, scores=("geed",), every_n_epochs=2, max_samples=16)
    _trainer(tmp_path, [monitor], max_epochs=5).fit(ImageClassifier())
    assert [record["epoch"] for record in monitor.history] == [1, 3]


def test_dict_batch_and_max_samples_smaller_than_a_batch(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(dict_batches=True)
    monitor = InvarianceMonitor(GROUP, scores=("geed",), input_key="pixels", max_samples=5)
    trainer = _trainer(tmp_path, [monitor], max_epochs=1)
    trainer.fit(model)
    inputs = synthetic_images(48, seed=10).tensors[0][:5]
    assert monitor.history[-1]["values"]["invariance/output/geed"] == pytest.approx(_probe_value(model, inputs), 1e-5)
    assert monitor._measurer.scores[(0, "output")].deviation.num_samples.item() == 5


def test_baseline_and_per_element_scalars(tmp_path):
    monitor = InvarianceMonitor(
        GROUP,
        layers=["net.features.2", "output"],
        measure_before_training=True,
        log_per_element=True,
        max_samples=16,
        figure_every_n=1,
    )
    trainer = _trainer(tmp_path, [monitor], max_epochs=2)
    trainer.fit(ImageClassifier())
    log_dir = tmp_path / "logs" / "version_0"
    scalars = _scalars(log_dir)
    assert scalars["invariance/output/geed"][0][0] == 0  # the baseline, before any step
    assert len(scalars["invariance/output/geed"]) == 3
    assert len(scalars["invariance/output/geed_normalized/rot90"]) == 3
    assert monitor.history[0]["stage"] == "baseline"
    assert "before training" in monitor.summary_table()


def test_csv_logger_gets_the_same_names(tmp_path):
    monitor = InvarianceMonitor(GROUP, scores=("geed", "geed_normalized"), max_samples=16)
    trainer = _trainer(tmp_path, [monitor], max_epochs=1, logger=CSVLogger(tmp_path, name="csv", version=0))
    trainer.fit(ImageClassifier())
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "invariance/output/geed" in header and "invariance/output/geed_normalized" in header


class PythonAndNumpyRandomClassifier(ImageClassifier):
    """Draws from Python's and NumPy's global RNGs in every forward pass, measured ones included."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * (1 + 0.01 * random.random() + 0.01 * float(numpy.random.rand())))


def _train_weights(tmp_path, callbacks, shuffle_val: bool, model_class=ImageClassifier) -> dict[str, torch.Tensor]:
    pl.seed_everything(123, workers=True)
    model = model_class(shuffle_val=shuffle_val)
    _trainer(tmp_path, callbacks, max_epochs=3, logger=False).fit(model)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _noise(x: torch.Tensor) -> torch.Tensor:
    return x + 0.1 * torch.randn_like(x)


@pytest.mark.parametrize("group", [GROUP, AugmentationFamily(_noise, num_elements=3)], ids=["rot90", "random-aug"])
def test_zero_observer_effect(tmp_path, group):
    """Same seed, same data: the final weights are bit-identical with and without the callback.

    The validation loader shuffles (its sampler draws from the global RNG) and the augmentation family draws random
    numbers, so any leak into the global RNG, BatchNorm statistics or train/eval mode would change the weights.
    """
    without = _train_weights(tmp_path / "a", [], shuffle_val=True)
    monitor = InvarianceMonitor(
        group,
        layers=["net.features.1", "output"],
        scores=("geed", "geed_normalized", "consistency", "max"),
        measure_before_training=True,
        log_per_element=True,
        max_samples=20,
    )
    with_monitor = _train_weights(tmp_path / "b", [monitor], shuffle_val=True)
    assert len(monitor.history) == 4
    assert without.keys() == with_monitor.keys()
    for key, value in without.items():
        assert torch.equal(value, with_monitor[key]), key


def test_a_model_drawing_from_python_and_numpy_rngs_trains_the_same(tmp_path):
    """The probe once forked torch's RNG only: such a model trained differently with the callback (issue 9)."""
    without = _train_weights(tmp_path / "a", [], shuffle_val=False, model_class=PythonAndNumpyRandomClassifier)
    monitor = InvarianceMonitor(GROUP, layers=["output"], measure_before_training=True, max_samples=20)
    with_monitor = _train_weights(
        tmp_path / "b", [monitor], shuffle_val=False, model_class=PythonAndNumpyRandomClassifier
    )
    assert len(monitor.history) == 4
    for key, value in without.items():
        assert torch.equal(value, with_monitor[key]), key


class LoudClassifier(ImageClassifier):
    """Activations of a few hundred: their squares overflow float16 (65504)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 200)


def test_half_precision_training_logs_finite_scores(tmp_path):
    """Under precision="16-true" the layers' features are float16; measuring must not overflow (it logged NaN)."""
    torch.manual_seed(0)
    monitor = InvarianceMonitor(GROUP, layers=["net.features.0", "output"], max_samples=40)
    _trainer(tmp_path, [monitor], max_epochs=1, logger=False, precision="16-true").fit(LoudClassifier())
    values = monitor.history[-1]["values"]
    assert len(values) == 4
    for name, value in values.items():
        assert math.isfinite(value) and value > 0, (name, value)


def test_a_compiled_submodule_of_a_lightning_module_is_measured_as_eager(tmp_path):
    """With torch.compile every inner layer measured NaN (issue 9); the layer keeps its uncompiled name."""
    torch.manual_seed(0)
    model = ImageClassifier()
    model.net = torch.compile(model.net)
    monitor = InvarianceMonitor(GROUP, layers=["net.features.2", "output"], max_samples=32)
    _trainer(tmp_path, [monitor], max_epochs=1, logger=False).fit(model)
    values = monitor.history[-1]["values"]
    inputs = synthetic_images(48, seed=10).tensors[0][:32]
    eager = InvarianceDeviation(len(GROUP))
    Probe(model.net._orig_mod, GROUP, ["features.2"]).update(inputs, {"features.2": eager})
    assert values["invariance/net.features.2/geed"] == pytest.approx(eager.compute().item(), rel=1e-5)


def test_checkpoint_resume_continues_history_without_duplicates(tmp_path):
    torch.manual_seed(0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    monitor = InvarianceMonitor(GROUP, scores=("geed",), max_samples=16, measure_before_training=True)
    trainer = _trainer(tmp_path, [monitor, checkpoint], max_epochs=2, enable_checkpointing=True)
    trainer.fit(ImageClassifier())
    resumed_monitor = InvarianceMonitor(GROUP, scores=("geed",), max_samples=16, measure_before_training=True)
    resumed = _trainer(
        tmp_path,
        [resumed_monitor, ModelCheckpoint(dirpath=tmp_path / "ckpt")],
        max_epochs=4,
        enable_checkpointing=True,
    )
    resumed.fit(ImageClassifier(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [r["stage"] for r in resumed_monitor.history] == ["baseline", "fit", "fit", "fit", "fit"]
    assert [r["epoch"] for r in resumed_monitor.history[1:]] == [0, 1, 2, 3]
    steps = [step for step, _ in _scalars(tmp_path / "logs" / "version_0")["invariance/output/geed"]]
    assert len(steps) == len(set(steps)) == 5  # baseline + four epochs, none logged twice


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": ["backbone"]}, r"Unknown layer 'backbone'.*'net.features.0'"),
        ({"input_key": "image"}, r"input_key='image' is not in the batch"),
    ],
)
def test_bad_configuration_fails_early_with_a_clear_message(tmp_path, kwargs, message):
    model = ImageClassifier(dict_batches="input_key" in kwargs)
    trainer = _trainer(tmp_path, [InvarianceMonitor(GROUP, **kwargs)], max_epochs=1)
    with pytest.raises(MisconfigurationException, match=message):
        trainer.fit(model)


def test_batch_without_a_tensor_input(tmp_path):
    class ListBatches(ImageClassifier):
        def validation_step(self, batch, batch_idx):
            return None

        def val_dataloader(self):
            return torch.utils.data.DataLoader([{"meta": "a"}] * 4, batch_size=2)

    trainer = _trainer(tmp_path, [InvarianceMonitor(GROUP)], max_epochs=1)
    with pytest.raises(MisconfigurationException, match=r"batch 0 of dataloader 0.*keys \['meta'\]"):
        trainer.fit(ListBatches())


def test_group_that_does_not_fit_the_inputs(tmp_path):
    class WideImages(ImageClassifier):
        def val_dataloader(self):
            data = torch.utils.data.TensorDataset(torch.randn(8, 1, 8, 10), torch.zeros(8, dtype=torch.long))
            return torch.utils.data.DataLoader(data, batch_size=4)

    trainer = _trainer(tmp_path, [InvarianceMonitor(GROUP)], max_epochs=1, num_sanity_val_steps=0)
    with pytest.raises(MisconfigurationException, match="only when it is square"):
        trainer.fit(WideImages())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": ("geed", "accuracy")}, "`scores` accepts"),
        ({"every_n_epochs": 0}, "`every_n_epochs` must be a positive int"),
        ({"max_samples": -1}, "`max_samples` must be a positive int"),
        ({"distance": "l2"}, "`distance` accepts"),
        ({"layers": ["net.head"], "scores": ("consistency",)}, 'add "output" to `layers`'),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(MisconfigurationException, match=message):
        InvarianceMonitor(GROUP, **kwargs)


def test_figures_need_tensorboard(tmp_path):
    trainer = _trainer(tmp_path, [InvarianceMonitor(GROUP, log_figures=True)], logger=CSVLogger(tmp_path))
    with pytest.raises(MisconfigurationException, match="needs a TensorBoardLogger"):
        trainer.fit(ImageClassifier())
