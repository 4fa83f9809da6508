"""InvarianceMonitor in the Trainer set-ups users have: spawn, low precision, NaN, resume, monitoring, bad shapes."""

import math
import pickle
import warnings

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from lightning_invariance import InvarianceMonitor, PredictionConsistency
from lightning_invariance.groups import AugmentationFamily, CyclicRotation, SpatialAction

from models import ImageClassifier, synthetic_images
from models import quiet_trainer as _trainer

GROUP = CyclicRotation(4)


# ------------------------------------------------------------------ 1. ddp_spawn
def test_monitor_pickles_with_every_input_getter():
    for key in (None, 0, "pixels"):
        monitor = InvarianceMonitor(GROUP, input_key=key, num_classes=4)
        copy = pickle.loads(pickle.dumps(monitor))
        assert copy.state_key == monitor.state_key


def test_ddp_spawn_history_comes_back_to_the_launching_process(tmp_path):
    monitor = InvarianceMonitor(GROUP, layers=["net.features.2", "output"], max_samples=32, print_summary=False)
    trainer = _trainer(tmp_path, [monitor], max_epochs=2, strategy="ddp_spawn", devices=2, num_sanity_val_steps=0)
    trainer.fit(ImageClassifier())
    assert [record["epoch"] for record in monitor.history] == [0, 1]
    assert math.isfinite(monitor.history[-1]["values"]["invariance/net.features.2/geed_normalized"])
    assert monitor.history is monitor.history  # read once; the handoff file is gone
    assert not monitor._handoff.path.exists()


# ------------------------------------------------------------------ 2. and 6. precision
class ScaledInputs(ImageClassifier):
    """Batches arrive scaled by 100 and on_after_batch_transfer undoes it; lr 0 and frozen BatchNorm statistics, so
    the model never changes."""

    def __init__(self) -> None:
        super().__init__()
        self.autocast_seen: list[bool] = []
        self.net.features[1].momentum = 0.0

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return x / 100.0, y

    def forward(self, x):
        if not self.training:
            self.autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return super().forward(x)

    def val_dataloader(self):
        images, labels = synthetic_images(32, seed=10).tensors
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images * 100.0, labels), batch_size=16)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("precision", ["bf16-true", "32-true"])
def test_the_baseline_sees_the_inputs_validation_sees(tmp_path, precision):
    torch.manual_seed(0)
    model = ScaledInputs()
    monitor = InvarianceMonitor(GROUP, measure_before_training=True, max_samples=32, print_summary=False)
    _trainer(tmp_path, [monitor], precision=precision).fit(model)
    baseline, epoch0 = (record["values"]["invariance/output/geed"] for record in monitor.history)
    assert math.isfinite(baseline)
    assert baseline == pytest.approx(epoch0, rel=1e-6)  # the same inputs, the same (unchanged) model


def test_measures_under_the_autocast_validation_runs_in(tmp_path):
    torch.manual_seed(0)
    model = ScaledInputs()
    monitor = InvarianceMonitor(GROUP, max_samples=32, print_summary=False)
    _trainer(tmp_path, [monitor], precision="bf16-mixed").fit(model)
    assert len(model.autocast_seen) > 4 and all(model.autocast_seen)  # validation and measuring forwards alike


# ------------------------------------------------------------------ 3. NaN
class DivergesAfterEpoch0(ImageClassifier):
    def forward(self, x):
        out = super().forward(x)
        return out * float("nan") if self.current_epoch >= 1 and not self.training else out

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        pass


@pytest.mark.parametrize("non_finite", ["nan", "skip", "error"])
def test_a_diverging_layer_does_not_kill_the_run(tmp_path, non_finite):
    # each of these counts NaN/inf on the device; the fitted maps are fitted on the finite inputs
    scores = ("geed", "consistency", "normalized_variance", "lie_derivative", "linear_equivariance")
    monitor = InvarianceMonitor(
        GROUP,
        layers=["net.features.2", "output"],
        non_finite=non_finite,
        max_samples=32,
        scores=scores,
        lie_generator="rotation",
    )
    trainer = _trainer(tmp_path, [monitor], max_epochs=2, num_sanity_val_steps=0)
    if non_finite == "error":
        with pytest.raises(MisconfigurationException, match="layer 'output' produced NaN"):
            trainer.fit(DivergesAfterEpoch0())
        return
    with pytest.warns(UserWarning, match="layer 'output' produced NaN or infinite values for 32") as caught:
        trainer.fit(DivergesAfterEpoch0())
    assert sum("produced NaN" in str(w.message) for w in caught) == 1
    last = monitor.history[-1]["values"]
    healthy = ("geed", "normalized_variance", "lie_derivative", "linear_equivariance")  # still measured
    assert all(math.isfinite(last[f"invariance/net.features.2/{score}"]) for score in healthy)
    diverged = (*healthy, "consistency")  # "skip" has no finite input left
    first = monitor.history[0]["values"]
    assert all(math.isfinite(first[f"invariance/output/{score}"]) for score in diverged)  # before diverging
    assert all(math.isnan(last[f"invariance/output/{score}"]) for score in diverged)


# ------------------------------------------------------------------ 4. resuming
def _fit_and_checkpoint(tmp_path, monitor, max_epochs, ckpt_path=None):
    tmp_path = tmp_path / str(len(list(tmp_path.iterdir())))  # each run its own checkpoints
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = _trainer(tmp_path, [monitor, checkpoint], max_epochs=max_epochs, enable_checkpointing=True)
    torch.manual_seed(0)
    trainer.fit(ImageClassifier(), ckpt_path=ckpt_path)
    return tmp_path / "ckpt" / "last.ckpt"


def test_resuming_continues_the_history_only_under_the_same_settings(tmp_path):
    last = _fit_and_checkpoint(tmp_path, InvarianceMonitor(GROUP, max_samples=16), 1)
    same = InvarianceMonitor(GROUP, max_samples=16)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*measured with other settings")
        _fit_and_checkpoint(tmp_path, same, 2, ckpt_path=last)
    assert [record["epoch"] for record in same.history] == [0, 1]
    for changed in (
        {"distance": "cosine"},
        {"reference": "identity"},
        {"group": CyclicRotation(2)},
        {"layers": ["net.features.2"]},
        {"scores": ("geed", "max")},
    ):
        monitor = InvarianceMonitor(**({"group": GROUP, "max_samples": 16} | changed))
        with pytest.warns(UserWarning, match=f"measured with other settings.*{next(iter(changed))}"):
            _fit_and_checkpoint(tmp_path, monitor, 2, ckpt_path=last)
        assert [record["epoch"] for record in monitor.history] == [1], changed


# ------------------------------------------------------------------ 5. every_n_epochs with monitoring callbacks
def test_every_n_epochs_with_early_stopping_and_checkpoints(tmp_path):
    key = "invariance/output/geed_normalized"
    strict = InvarianceMonitor(GROUP, every_n_epochs=2, max_samples=16)
    with pytest.raises(MisconfigurationException, match="strict=False"):
        _trainer(tmp_path, [strict, EarlyStopping(monitor=key)]).fit(ImageClassifier())
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "a", monitor=key)
    monitor = InvarianceMonitor(GROUP, every_n_epochs=2)
    with pytest.raises(MisconfigurationException, match="every_n_epochs=2"):
        _trainer(tmp_path, [monitor, every_epoch], enable_checkpointing=True).fit(ImageClassifier())
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "b", monitor=key, every_n_epochs=2, save_top_k=2)
    stopping = EarlyStopping(monitor=key, strict=False, patience=5)
    monitor = InvarianceMonitor(GROUP, every_n_epochs=2, max_samples=16)
    trainer = _trainer(tmp_path, [monitor, checkpoint, stopping], max_epochs=4, enable_checkpointing=True)
    trainer.fit(ImageClassifier())
    assert [record["epoch"] for record in monitor.history] == [1, 3]
    assert sorted(path.name.split("-")[0] for path in (tmp_path / "b").iterdir()) == ["epoch=1", "epoch=3"]


# ------------------------------------------------------------------ 7. shape mistakes before training
class CountsTrainingSteps(ImageClassifier):
    def __init__(self, size: int = 8, width: int = 8) -> None:
        super().__init__()
        self.size, self.width, self.steps = size, width, 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        return super().training_step(batch, batch_idx)

    def val_dataloader(self):
        images = torch.randn(32, 1, self.size, self.width)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(32).long()), 16)


def test_a_group_that_does_not_fit_the_inputs_fails_before_training(tmp_path):
    model = CountsTrainingSteps(size=16, width=12)
    with pytest.raises(MisconfigurationException, match=r"\(16, 12\)|16, 12"):
        _trainer(tmp_path, [InvarianceMonitor(GROUP)], num_sanity_val_steps=0).fit(model)
    assert model.steps == 0


def test_an_action_that_does_not_fit_a_layer_fails_before_training_naming_it(tmp_path):
    model = CountsTrainingSteps()
    monitor = InvarianceMonitor(GROUP, layers=["net.features.2", "output"], action=SpatialAction(GROUP))
    with pytest.raises(MisconfigurationException, match="layer 'output'"):
        _trainer(tmp_path, [monitor], num_sanity_val_steps=0).fit(model)
    assert model.steps == 0


def test_the_check_changes_nothing(tmp_path):
    def weights(callbacks):
        torch.manual_seed(0)
        model = ImageClassifier(shuffle_val=True)
        _trainer(tmp_path, callbacks, max_epochs=2, num_sanity_val_steps=0).fit(model)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    every_third = InvarianceMonitor(GROUP, every_n_epochs=3, max_samples=16)  # checks, never measures
    assert torch.equal(weights([]), weights([every_third]))


# ------------------------------------------------------------------ 8. consistency that cannot be misread
def test_chance_corrected_consistency_against_a_loop():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, 3, generator=generator)
    logits[1:, :25] = logits[0, :25]  # half the samples never flip
    metric = PredictionConsistency(4)
    metric.update(logits)
    summary = metric.compute_summary()
    labels = logits.argmax(-1).double()
    transformed_flips = sum(float(labels[g, i] != labels[0, i]) for g in range(1, 4) for i in range(50)) / 150
    pairs = [(i, j) for i in range(50) for j in range(i)]  # 50 <= 64: the normaliser's window holds every pair
    chance_flips = sum(float(labels[0, i] != labels[0, j]) for i, j in pairs) / len(pairs)
    assert summary["chance_consistency"].item() == pytest.approx(1 - chance_flips, abs=1e-12)
    assert summary["consistency_kappa"].item() == pytest.approx(1 - transformed_flips / chance_flips, abs=1e-12)


def test_a_constant_classifier_is_not_read_as_invariant(tmp_path):
    class Constant(ImageClassifier):
        def forward(self, x):
            return torch.tensor([5.0, 0.0, 0.0, 0.0]).expand(x.shape[0], 4) + 0 * super().forward(x)

    monitor = InvarianceMonitor(GROUP, scores=("consistency",), max_samples=16)
    with pytest.warns(RuntimeWarning, match="same predicted label"):
        _trainer(tmp_path, [monitor]).fit(Constant())
    values = monitor.history[-1]["values"]
    assert values["invariance/output/consistency"] == 1.0
    assert values["invariance/output/consistency_chance"] == 1.0
    assert math.isnan(values["invariance/output/consistency_kappa"])


# ------------------------------------------------------------------ messages
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group": CyclicRotation}, r"the class CyclicRotation: call it"),
        ({"group": nn.Identity()}, "AugmentationFamily"),
        ({"action": SpatialAction(GROUP), "reference": "identity"}, "applies to invariance only"),
        ({"action": SpatialAction(CyclicRotation(2))}, "does not fit the group"),
        ({"action": {"net.head": SpatialAction(GROUP)}}, r"not in `layers`"),
        ({"non_finite": "ignore"}, "non_finite"),
        ({"dataloaders": {"a/b": 0}}, "without '/'"),
    ],
)
def test_constructor_messages(kwargs, message):
    with pytest.raises(MisconfigurationException, match=message):
        InvarianceMonitor(**({"group": GROUP} | kwargs))


def test_augmentation_family_is_accepted():
    InvarianceMonitor(AugmentationFamily(lambda x: x, num_elements=2, seed=0))


# ------------------------------------------------------------------ a time budget (issue 11)
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedClassifier(ImageClassifier):
    """On a fake clock: a training step costs 1 s and every eval-mode forward 0.5 s (validation_step runs none)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def training_step(self, batch, batch_idx):
        self.clock.now += 1.0
        return super().training_step(batch, batch_idx)

    def forward(self, x):
        if not self.training:
            self.clock.now += 0.5
        return super().forward(x)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        pass


def test_max_overhead_skips_measurements_to_stay_within_the_budget(tmp_path):
    clock = FakeClock()
    monitor = InvarianceMonitor(GROUP, max_samples=16, max_overhead=0.0625)  # 1/16: exact in binary
    monitor._budget.clock = clock
    trainer = _trainer(tmp_path, [monitor], max_epochs=8, num_sanity_val_steps=0)
    trainer.fit(TimedClassifier(clock))
    # 4 s of training per epoch, 0.5 s per measurement: measure when spent + 0.5 <= (4 x epochs so far) / 16
    assert [record["epoch"] for record in monitor.history] == [0, 3, 5, 7]
    assert [record["seconds"] for record in monitor.history] == [0.5] * 4
    budget = monitor._budget
    assert budget.train_seconds == 32.0 and budget.measure_seconds == 2.0 <= 0.0625 * 32.0 and budget.skipped == 4
    summary = "measuring took 2.0 s, 6% of the 32.0 s of training (max_overhead=0.0625: 4 validation run(s) left"
    assert budget.summary().startswith(summary)


def test_max_overhead_checks():
    with pytest.raises(MisconfigurationException, match="max_overhead"):
        InvarianceMonitor(GROUP, max_overhead=0)
    with pytest.raises(MisconfigurationException, match="max_overhead"):
        InvarianceMonitor(GROUP, max_overhead=True)


def test_max_overhead_refuses_a_checkpoint_on_a_score(tmp_path):
    key = "invariance/output/geed_normalized"
    monitor = InvarianceMonitor(GROUP, max_overhead=0.1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "c", monitor=key)
    with pytest.raises(MisconfigurationException, match="cannot save on measured epochs only"):
        _trainer(tmp_path, [monitor, checkpoint], enable_checkpointing=True).fit(ImageClassifier())
    with pytest.raises(MisconfigurationException, match="strict=False"):
        _trainer(tmp_path, [InvarianceMonitor(GROUP, max_overhead=0.1), EarlyStopping(key)]).fit(ImageClassifier())


def test_chance_corrected_consistency_is_the_same_for_every_split_and_dtype():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 150, 5, generator=generator)  # more than one normaliser window (64)
    logits[1:, :70] = logits[0, :70]
    whole = PredictionConsistency(4)
    whole.update(logits)
    expected = whole.compute_summary()
    for sizes in ((150,), (7, 64, 79), (1, 1, 148), (100, 50)):
        for dtype in (torch.float32, torch.float16, torch.float64):
            metric = PredictionConsistency(4)
            for part in torch.split(logits.to(dtype), list(sizes), dim=1):
                metric.update(part)
            summary = metric.compute_summary()
            for key in ("consistency", "chance_consistency", "consistency_kappa"):
                assert summary[key].item() == pytest.approx(expected[key].item(), abs=1e-12), (sizes, dtype, key)


# ------------------------------------------------------------------ fits with nothing to measure
class NoValidationData(ImageClassifier):
    """A module with a validation step but no `val_dataloader`: Lightning trains and skips validation."""

    val_dataloader = LightningModule.val_dataloader  # the base hook (raises if called): not overridden


@pytest.mark.parametrize("measure_before_training", [False, True])
def test_a_fit_without_validation_data_trains_and_says_nothing_was_measured(tmp_path, measure_before_training):
    """The monitor set the validation data up itself and raised Lightning's "`val_dataloader` must be implemented",
    killing a fit Lightning runs without it (it skips validation); then it said nothing of measuring nothing."""
    monitor = InvarianceMonitor(GROUP, max_samples=16, measure_before_training=measure_before_training)
    with pytest.warns(UserWarning, match="measured nothing during this fit: validation never ran"):
        _trainer(tmp_path, [monitor], max_epochs=2).fit(NoValidationData())
    assert monitor.history == []


@pytest.mark.parametrize(
    ("trainer_options", "monitor_options", "reason"),
    [
        ({"limit_val_batches": 0}, {}, "validation never ran"),
        ({"max_steps": 1}, {}, "validation never ran"),
        ({"max_epochs": 2}, {"every_n_epochs": 3}, r"none of the 2 validation runs of this fit was measured"),
    ],
)
def test_a_fit_that_measured_nothing_says_so_and_why(tmp_path, trainer_options, monitor_options, reason):
    monitor = InvarianceMonitor(GROUP, max_samples=16, **monitor_options)
    with pytest.warns(UserWarning, match=f"measured nothing during this fit: {reason}"):
        _trainer(tmp_path, [monitor], **trainer_options).fit(ImageClassifier())
    assert monitor.history == []


def test_a_fit_that_measured_says_nothing_of_it(tmp_path):
    monitor = InvarianceMonitor(GROUP, max_samples=16, print_summary=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*measured nothing.*")
        _trainer(tmp_path, [monitor], max_epochs=1).fit(ImageClassifier())
    assert len(monitor.history) == 1


class DeadFirstLayer(ImageClassifier):
    """The first ReLU outputs 0 for every input (its convolution's bias far below its reach)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            self.net.features[0].weight.zero_()
            self.net.features[0].bias.fill_(-1.0)
        self.net.features[1] = nn.Identity()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_a_dead_layer_is_named_as_such_not_as_too_few_inputs(tmp_path):
    """Its normaliser is exactly 0 (all-zero rows). The layers after it are the same for every input too, but not
    exactly zero: there the normaliser's float32 Gram products leave rounding noise instead of 0 (see the README's
    "same number" section), so only the dead layer itself is checked."""
    scores = ("geed", "geed_normalized", "normalized_variance", "linear_equivariance", "lie_derivative")
    layer = ["net.features.2"]
    monitor = InvarianceMonitor(GROUP, layers=layer, scores=scores, lie_generator="rotation", max_samples=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [monitor]).fit(DeadFirstLayer())
    messages = [str(warning.message) for warning in caught]
    assert len([m for m in messages if "layer 'net.features.2'" in m and "same representation" in m]) == 1, messages
    assert not [m for m in messages if "too few measured inputs" in m], messages
    values = monitor.history[-1]["values"]
    assert values["invariance/net.features.2/geed"] == 0.0
    for score in ("geed_normalized", "linear_equivariance", "lie_derivative"):  # 0/0, each for this reason
        assert math.isnan(values[f"invariance/net.features.2/{score}"]), score
