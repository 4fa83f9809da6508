"""What InvarianceMonitor shows: TensorBoard layout, figures and histograms read back from the event files, named
dataloaders, a reference set's scale, per-layer actions, the tidy table and CSV export, and other loggers."""

import csv
import math
import re

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.custom_scalar import layout_pb2

from lightning_invariance import InvarianceMonitor
from lightning_invariance.groups import CyclicRotation, SpatialAction

from models import ImageClassifier, quiet_trainer

GROUP = CyclicRotation(4)


def _fit(tmp_path, monitor, logger=True, max_epochs=2, **model_kwargs) -> pl.Trainer:
    if logger is True:
        logger = TensorBoardLogger(tmp_path, name="logs", version=0)
    trainer = quiet_trainer(tmp_path, [monitor], max_epochs, logger)
    torch.manual_seed(0)
    trainer.fit(ImageClassifier(**model_kwargs))
    return trainer


def _events(log_dir):
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def _layout(log_dir) -> layout_pb2.Layout:
    for path in sorted(log_dir.glob("events.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "custom_scalars__config__":
                    return layout_pb2.Layout.FromString(value.tensor.string_val[0])
    raise AssertionError(f"no custom-scalars layout in {log_dir}")


def test_tensorboard_layout_figures_and_histograms(tmp_path):
    layers = ["output", "net.features.2", "net.features.0"]  # given out of order: shown in network order
    monitor = InvarianceMonitor(
        GROUP, layers=layers, measure_before_training=True, figure_every_n=1, max_samples=16, log_figures=True
    )
    _fit(tmp_path, monitor)
    log_dir = tmp_path / "logs" / "version_0"
    events = _events(log_dir)
    tags = events.Tags()
    scalar_tags = tags["scalars"]

    charts = [(chart.title, list(chart.multiline.tag)) for chart in _layout(log_dir).category[0].chart]
    assert [title for title, _ in charts] == ["geed_normalized, every layer", "geed, every layer"]
    network_order = ["net.features.0", "net.features.2", "output"]
    for title, regexes in charts:
        score = title.split(",")[0]
        expected = [f"invariance/{layer}/{score}" for layer in network_order]
        # each regex matches its own tag and nothing else (TensorBoard's matching is re.search)
        assert [[tag for tag in scalar_tags if re.search(regex, tag)] for regex in regexes] == [[t] for t in expected]

    steps = [step for step, _ in ((e.step, e.value) for e in events.Scalars("invariance/output/geed"))]
    assert steps == [0, 4, 8]  # before training, then after each epoch's 4 optimizer steps
    for kind in ("depth_profile", "curves"):
        assert [e.step for e in events.Images(f"invariance_figures/{kind}/geed_normalized")] == steps
    for layer in network_order:
        histograms = events.Histograms(f"invariance_histograms/{layer}/sample_deviations_normalized")
        assert [h.step for h in histograms] == steps
    assert not [tag for tag in scalar_tags + tags["images"] if tag.startswith("invariance/figures")]
    assert "invariance/setup/text_summary" in tags["tensors"]
    assert monitor.summary_table().splitlines()[2].startswith("invariance/net.features.0/")


def test_named_dataloaders_and_a_reference_scale(tmp_path):
    monitor = InvarianceMonitor(
        GROUP, dataloaders={"id": 0, "ood": 1}, normalize_by="id", max_samples=16, print_summary=False
    )
    _fit(tmp_path, monitor, logger=False, max_epochs=1, num_val_loaders=2)
    own = InvarianceMonitor(GROUP, dataloaders={"id": 0, "ood": 1}, max_samples=16, print_summary=False)
    _fit(tmp_path, own, logger=False, max_epochs=1, num_val_loaders=2)
    values, own_values = monitor.history[-1]["values"], own.history[-1]["values"]
    assert set(values) == {f"invariance/output/{s}/{d}" for s in ("geed", "geed_normalized") for d in ("id", "ood")}
    id_scale = values["invariance/output/geed/id"] / values["invariance/output/geed_normalized/id"]
    assert values["invariance/output/geed_normalized/ood"] == pytest.approx(
        values["invariance/output/geed/ood"] / id_scale, rel=1e-9
    )
    own_id = own_values["invariance/output/geed_normalized/id"]
    assert values["invariance/output/geed_normalized/id"] == pytest.approx(own_id)
    assert values["invariance/output/geed_normalized/ood"] != pytest.approx(
        own_values["invariance/output/geed_normalized/ood"], rel=1e-3
    )
    with pytest.raises(Exception, match="normalize_by='test'"):
        _fit(tmp_path, InvarianceMonitor(GROUP, normalize_by="test"), logger=False, max_epochs=1)


def test_one_callback_measures_inner_equivariance_and_output_invariance(tmp_path):
    both = InvarianceMonitor(
        GROUP, layers=["net.features.2", "output"], action={"net.features.2": SpatialAction(GROUP)}, max_samples=16
    )
    _fit(tmp_path, both, logger=False, max_epochs=1)
    inner = InvarianceMonitor(GROUP, layers=["net.features.2"], action=SpatialAction(GROUP), max_samples=16)
    _fit(tmp_path, inner, logger=False, max_epochs=1)
    outer = InvarianceMonitor(GROUP, layers=["output"], max_samples=16)
    _fit(tmp_path, outer, logger=False, max_epochs=1)
    values = both.history[-1]["values"]
    for separate in (inner, outer):
        for name, value in separate.history[-1]["values"].items():
            assert values[name] == pytest.approx(value, rel=1e-9), name


def test_tidy_table_csv_export_and_csv_logger(tmp_path):
    monitor = InvarianceMonitor(
        GROUP, layers=["net.features.2", "output"], scores=("geed_normalized", "consistency"), max_samples=16
    )
    trainer = _fit(tmp_path, monitor, logger=CSVLogger(tmp_path, name="csv", version=0))  # no figures: no crash
    rows = monitor.history_rows()
    assert {row["layer"] for row in rows} == {"net.features.2", "output"}
    scores = {"geed_normalized", "consistency", "consistency_chance", "consistency_kappa"}
    assert {row["score"] for row in rows} == scores
    assert all(set(row) == {"stage", "epoch", "step", "dataloader", "layer", "score", "value"} for row in rows)
    path = monitor.to_csv(tmp_path / "out" / "history.csv")
    with path.open() as file:
        read = list(csv.DictReader(file))
    assert len(read) == len(rows) and float(read[0]["value"]) == pytest.approx(rows[0]["value"])
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as file:
        logged = list(csv.DictReader(file))
    for record in monitor.history:  # every scalar arrives, at the step it was measured
        row = next(row for row in logged if row["step"] == str(record["step"]) and row[next(iter(record["values"]))])
        for name, value in record["values"].items():
            assert math.isclose(float(row[name]), value, rel_tol=1e-6) or math.isnan(value), name
    assert trainer.callback_metrics["invariance/output/consistency"] >= 0


def test_each_layer_keeps_its_colour_in_every_figure():
    from lightning_invariance.callbacks._tensorboard import write_figures

    class Writer:
        def __init__(self) -> None:
            self.figures = {}

        def add_figure(self, tag, figure, global_step, close):
            self.figures[tag] = figure

    layers = ["a", "b", "output"]
    rows = [
        {"stage": "fit", "epoch": 0, "step": 1, "dataloader": "", "layer": layer, "score": score, "value": 0.5}
        for layer in layers
        for score in ("geed_normalized", "consistency")
        if score != "consistency" or layer == "output"
    ]
    writer = Writer()
    write_figures([writer], "invariance", rows, ("geed_normalized", "consistency"), layers, 1)

    def colour(tag: str) -> tuple:
        axes = writer.figures[tag].axes[0]
        return next(line.get_color() for line in axes.get_lines() if line.get_label() == "output")

    assert colour("invariance_figures/curves/consistency") == colour("invariance_figures/curves/geed_normalized")
    assert "invariance_figures/depth_profile/consistency" not in writer.figures  # one layer: no profile
