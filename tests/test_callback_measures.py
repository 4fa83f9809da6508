"""InvarianceMonitor with the measures beyond G-EED: variances, fitted maps, Lie derivative, classes, histograms."""

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_callback import GROUP, _train_weights, _trainer

from lightning_invariance import (
    InvarianceDeviation,
    InvarianceMonitor,
    LieDerivative,
    LieProbe,
    LinearMapFit,
    NormalizedVariance,
    Probe,
)
from lightning_invariance.groups import ContinuousRotation, SpatialAction

from models import ImageClassifier, synthetic_images

ALL_SCORES = (
    "geed_normalized",
    "normalized_variance",
    "transformation_variance",
    "sample_variance",
    "dead_units",
    "linear_equivariance",
    "linear_invariance",
    "lie_derivative",
)
LAYERS = ["net.features.2", "output"]


def _monitor(**kwargs) -> InvarianceMonitor:
    kwargs = {
        "layers": LAYERS,
        "scores": ALL_SCORES,
        "max_samples": 40,
        "lie_generator": "rotation",
        "num_classes": 4,
        **kwargs,
    }
    return InvarianceMonitor(GROUP, **kwargs)


def _standalone(model, inputs, labels, layer) -> dict[str, float]:
    """Every score of one layer, measured directly on the 40 cached inputs (batches of 16 as validation gives)."""
    deviation = InvarianceDeviation(4, normalize=True, num_classes=4)
    variance, fit, lie = NormalizedVariance(), LinearMapFit(4), LieDerivative(normalize=True)
    linear = None
    probe, lie_probe = Probe(model, GROUP, [layer]), LieProbe(model, "rotation", [layer])
    parts = [(inputs[s : s + 16], labels[s : s + 16]) for s in range(0, 40, 16)]  # 16, 16, 8
    halves = (
        [(parts[0][0], parts[0][1]), (parts[1][0][:4], parts[1][1][:4])],
        [
            (parts[1][0][4:], parts[1][1][4:]),
            (parts[2][0], parts[2][1]),
        ],
    )
    for phase, batches in enumerate(halves):
        if phase == 1:
            linear = fit.held_out_metric(normalize=True)
        for x, y in batches:
            features = probe.orbit_features(x)[layer]
            deviation.update(features, y)
            variance.update(features)
            (linear or fit).update(features)
            lie_probe.update(x, {layer: lie})
    summary, fitted = deviation.compute_summary(), linear.compute_summary()
    return {
        "geed_normalized": float(summary["geed_normalized"]),
        "geed_normalized/class_1": float(summary["per_class_normalized"][1]),
        "normalized_variance": float(variance.compute()),
        "sample_variance": float(variance.compute_summary()["sample_variance"]),
        "linear_equivariance": float(fitted["linear_geed_normalized"]),
        "linear_invariance": float(fitted["invariance_geed_normalized"]),
        "lie_derivative": float(lie.compute()),
    }


def test_every_new_score_is_logged_and_equals_the_standalone_metrics(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier()
    monitor = _monitor()
    trainer = _trainer(tmp_path, [monitor], max_epochs=2)
    trainer.fit(model)
    log_dir = tmp_path / "logs" / "version_0"
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    val = synthetic_images(48, seed=10)
    inputs, labels = val.tensors[0][:40], val.tensors[1][:40]
    for layer in LAYERS:
        expected = _standalone(model, inputs, labels, layer)
        for score, value in expected.items():
            logged = accumulator.Scalars(f"invariance/{layer}/{score}")
            assert len(logged) == 2, (layer, score)
            assert logged[-1].value == pytest.approx(value, rel=1e-4, abs=1e-6), (layer, score)
        for c in range(4):
            assert f"invariance/{layer}/geed_normalized/class_{c}" in tags["scalars"]
        histograms = accumulator.Histograms(f"invariance_histograms/{layer}/sample_deviations_normalized")
        assert len(histograms) == 2 and histograms[-1].histogram_value.num == 40
    last = monitor.history[-1]["values"]
    assert last["invariance/output/dead_units"] == 0
    assert 0 < last["invariance/output/linear_equivariance"] < last["invariance/output/linear_invariance"] + 0.5


def test_new_scores_leave_training_unchanged(tmp_path):
    without = _train_weights(tmp_path / "a", [], shuffle_val=True)
    monitor = _monitor(layers=["net.features.1", "output"], max_samples=20, measure_before_training=True)
    with_monitor = _train_weights(tmp_path / "b", [monitor], shuffle_val=True)
    assert len(monitor.history) == 4
    for key, value in without.items():
        assert torch.equal(value, with_monitor[key]), key


def test_border_mask_and_equivariant_lie_derivative_with_a_spatial_action(tmp_path):
    rotations = ContinuousRotation(angles=[30.0, -30.0])
    kwargs = {"scores": ("geed", "lie_derivative"), "max_samples": 16, "lie_generator": "rotation"}
    monitors = [
        InvarianceMonitor(
            rotations,
            layers=["net.features.0"],
            action=SpatialAction(rotations),
            border_mask=mask,
            prefix=name,
            **kwargs,
        )
        for name, mask in (("masked", True), ("unmasked", False))
    ]
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, monitors, max_epochs=1, logger=TensorBoardLogger(tmp_path, name="logs", version=0))
    trainer.fit(ImageClassifier())
    masked, unmasked = (m.history[-1]["values"][f"{m.prefix}/net.features.0/geed"] for m in monitors)
    assert masked < 0.9 * unmasked  # the empty corners no longer count
    assert monitors[0].history[-1]["values"]["masked/net.features.0/lie_derivative"] > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": ("linear_equivariance",), "max_samples": None}, "max_samples"),
        ({"scores": ("lie_derivative",)}, "lie_generator"),
        ({"scores": ("geed",), "lie_generator": "rotation"}, "lie_generator"),
        ({"scores": ("lie_derivative",), "lie_generator": "shear"}, "lie_generator"),
        ({"border_mask": True}, "border_mask"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_new_options_are_checked_in_the_constructor(kwargs, message):
    with pytest.raises(MisconfigurationException, match=message):
        InvarianceMonitor(GROUP, **kwargs)


def test_labels_missing_from_the_batch_fail_on_the_first_batch(tmp_path):
    monitor = InvarianceMonitor(GROUP, num_classes=4, max_samples=8, input_key=lambda batch: batch[0])
    model = ImageClassifier()
    model.val_dataloader = lambda: torch.utils.data.DataLoader(  # batches of images only, no labels
        torch.utils.data.TensorDataset(torch.randn(8, 1, 8, 8)), batch_size=4
    )
    model.validation_step = lambda batch, batch_idx: None
    with pytest.raises(MisconfigurationException, match="labels"):
        _trainer(tmp_path, [monitor], max_epochs=1).validate(model)


def test_labels_out_of_range_fail_on_the_first_batch(tmp_path):
    monitor = InvarianceMonitor(GROUP, num_classes=2, max_samples=8)  # the digits-like data has 4 classes
    with pytest.raises(MisconfigurationException, match=r"validation batch 0 .*labels` in \[0, 2\)"):
        _trainer(tmp_path, [monitor], max_epochs=1).validate(ImageClassifier())


def test_a_cache_too_small_to_fit_the_linear_maps_warns_and_logs_the_rest(tmp_path):
    monitor = InvarianceMonitor(GROUP, scores=("geed", "linear_equivariance"), max_samples=1)
    with pytest.warns(UserWarning, match="fit the linear maps"):
        _trainer(tmp_path, [monitor], max_epochs=1).validate(ImageClassifier())
    assert set(monitor.history[-1]["values"]) == {"invariance/output/geed"}
