import pytest
import torch
from torch import nn

from lightning_invariance import InvarianceDeviation, Probe, measure
from lightning_invariance.groups import CyclicRotation

from models import SmallCNN

torch.manual_seed(3)
GROUP = CyclicRotation(4)
IMAGES = torch.randn(10, 1, 8, 8)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(batch_norm=True)


def _snapshot(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_unchanged(before: dict, after: dict) -> None:
    assert before["modes"] == after["modes"]
    assert before["hooks"] == after["hooks"]
    assert torch.equal(before["rng"], after["rng"])
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for a, b in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_orbit_features_equal_one_forward_per_element():
    model = _model().eval()
    probe = Probe(model, GROUP, layers=["features.2", "output"], chunk_size=12)
    features = probe.orbit_features(IMAGES)
    with torch.no_grad():
        for k in range(4):
            rotated = torch.rot90(IMAGES, k, dims=(-2, -1))
            assert torch.allclose(features["output"][k], model(rotated), atol=1e-6)
            inner = model.features[:3](rotated)
            assert torch.allclose(features["features.2"][k], inner, atol=1e-6)


def test_chunk_size_does_not_change_features():
    model = _model()
    small = Probe(model, GROUP, chunk_size=4).orbit_features(IMAGES)["output"]
    large = Probe(model, GROUP, chunk_size=1000).orbit_features(IMAGES)["output"]
    assert torch.allclose(small, large, atol=1e-6)


def test_model_left_as_found_in_train_mode_with_grads():
    model = _model().train()
    model.head.eval()  # a deliberately mixed configuration must be restored module by module
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    before = _snapshot(model)
    metric = InvarianceDeviation(4)
    Probe(model, GROUP, layers=["features.1", "output"]).update(IMAGES, {"output": metric})
    _assert_unchanged(before, _snapshot(model))
    assert metric.compute() > 0


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        self.bn(x.flatten(1)[:, :4])
        torch.rand(1)  # would advance the global RNG
        raise RuntimeError("boom")


def test_model_left_as_found_when_forward_raises():
    model = Exploding().train()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        Probe(model, GROUP, layers=["bn", "output"]).orbit_features(IMAGES[:, 0])
    _assert_unchanged(before, _snapshot(model))


def test_inplace_relu_after_hooked_layer_does_not_change_capture():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.ReLU(inplace=True)).eval()
    features = Probe(model, GROUP, layers=["1"]).orbit_features(IMAGES)["1"]
    assert (features < 0).any()  # captured before the in-place ReLU


class TupleAndTensorAttr(nn.Module):
    class Wrapped:
        def __init__(self, tensor):
            self.tensor = tensor

    class ReturnsTuple(nn.Module):
        def forward(self, x):
            return x * 2, "aux"

    class ReturnsWrapped(nn.Module):
        def forward(self, x):
            return TupleAndTensorAttr.Wrapped(x + 1)

    def __init__(self) -> None:
        super().__init__()
        self.pair = self.ReturnsTuple()
        self.wrapped = self.ReturnsWrapped()

    def forward(self, x):
        return self.wrapped(self.pair(x)[0]).tensor


def test_tuple_outputs_and_tensor_attribute():
    model = TupleAndTensorAttr()
    features = Probe(model, GROUP, layers=["pair", "wrapped"]).orbit_features(IMAGES[:3])
    assert torch.equal(features["pair"][0], IMAGES[:3] * 2)
    assert torch.equal(features["wrapped"][1], torch.rot90(IMAGES[:3], 1, dims=(-2, -1)) * 2 + 1)


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown layer 'backbone'.*'features.0'.*'head'"):
        Probe(_model(), GROUP, layers=["backbone"])


def test_unknown_layer_suggests_a_close_name_and_says_when_there_are_none():
    with pytest.raises(ValueError, match=r"Unknown layer 'featurs.1'\. Did you mean 'features.1' or"):
        Probe(_model(), GROUP, layers=["featurs.1"])
    with pytest.raises(ValueError, match=r"This model has no submodules: the one layer to capture is 'output'"):
        Probe(nn.Flatten(), GROUP, layers=["flatten"])


def test_module_run_twice_is_refused():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Flatten(), shared, nn.ReLU(), shared)
    with pytest.raises(RuntimeError, match="ran 2 times"):
        Probe(model, CyclicRotation(2), layers=["1"]).orbit_features(torch.randn(3, 2, 2))


def test_group_that_does_not_fit_fails_before_forward():
    calls = []
    model = nn.Flatten()
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="square"):
        Probe(model, GROUP).orbit_features(torch.randn(2, 1, 4, 6))
    assert calls == []


def test_measure_over_dataloader_matches_probe():
    model = _model()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(IMAGES, torch.zeros(10)), batch_size=4)
    results = measure(model, GROUP, loader, InvarianceDeviation(4), layers=["features.2", "output"], progress=False)
    direct = InvarianceDeviation(4)
    direct.update(Probe(model, GROUP).orbit_features(IMAGES)["output"])
    assert results["output"].item() == pytest.approx(direct.compute().item(), rel=1e-6)
    assert set(results) == {"features.2", "output"}


def test_e2cnn_model_in_train_mode_keeps_its_state_dict_keys():
    e2cnn = pytest.importorskip("e2cnn")
    gspace = e2cnn.gspaces.Rot2dOnR2(4)
    in_type = e2cnn.nn.FieldType(gspace, [gspace.trivial_repr])
    conv = e2cnn.nn.R2Conv(in_type, e2cnn.nn.FieldType(gspace, 2 * [gspace.regular_repr]), kernel_size=3, padding=1)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(e2cnn.nn.GeometricTensor(x, in_type))

    model = Wrapper().train()
    keys = set(model.state_dict())
    Probe(model, GROUP, layers=["conv"]).orbit_features(IMAGES[:4])
    assert model.training and model.conv.training
    assert set(model.state_dict()) == keys  # eval mode's cached filter is gone again


def test_update_in_hook_sees_features_before_inplace_ops():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.ReLU(inplace=True), nn.Linear(5, 3)).eval()
    probe = Probe(model, GROUP, layers=["1", "output"], chunk_size=8)
    metric = InvarianceDeviation(4, normalize=True)
    probe.update(IMAGES, {"1": metric})
    expected = InvarianceDeviation(4, normalize=True)
    for chunk in probe.orbit_features(IMAGES)["1"].split(2, dim=1):  # chunks of 8 // 4 = 2 samples
        expected.update(chunk)
    assert metric.compute().item() == pytest.approx(expected.compute().item(), rel=1e-12)


def test_layer_that_never_runs_is_reported():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Flatten(), nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(RuntimeError, match=r"\['unused'\] did not run"):
        Probe(Skips(), GROUP, layers=["unused"]).orbit_features(IMAGES[:2])


def test_forward_passes_stop_after_the_last_layer_when_the_output_is_not_measured():
    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x.flatten(1).sum(1, keepdim=True)

    torch.manual_seed(0)
    tail = Counting()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), tail)
    group, images = CyclicRotation(4), torch.randn(20, 1, 6, 6)
    inner = InvarianceDeviation(len(group))
    Probe(model, group, layers=["1"], chunk_size=16).update(images, {"1": inner})  # 5 chunks of 4 images
    assert tail.calls == 1  # only the first chunk ran the whole model (checking every layer runs once)
    both = {"1": InvarianceDeviation(len(group)), "output": InvarianceDeviation(len(group))}
    Probe(model, group, layers=["1", "output"], chunk_size=16).update(images, both)
    assert tail.calls == 1 + 5  # with the output measured, every pass runs whole
    assert inner.compute().item() == pytest.approx(both["1"].compute().item(), rel=1e-12)


class _SmallLargeSmall(nn.Module):
    """A small layer, a large one (at least GATHER_VALUES values per chunk), and small class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Conv2d(1, 1, 1)
        self.large = nn.Conv2d(1, 64, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 3))

    def forward(self, x):
        return self.head(self.large(self.small(x)))


def test_small_layers_are_gathered_over_chunks_in_order_and_large_ones_are_not(monkeypatch):
    import lightning_invariance.probe as probe_module

    monkeypatch.setattr(probe_module, "GATHER_VALUES", 4 * 3 * 64 * 64)  # the large layer's 3 samples per chunk
    torch.manual_seed(0)
    model, images = _SmallLargeSmall().eval(), torch.randn(10, 1, 8, 8)
    probe = Probe(model, GROUP, layers=["small", "large", "output"], chunk_size=4 * 3)  # 4 chunks: 3, 3, 3, 1
    calls: list[tuple[str, int]] = []
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in probe.layers}

    def consume(name, features):
        calls.append((name, features.shape[1]))
        parts[name].append(features.clone())

    probe.run(images, consume)
    # large: each full chunk at once, inside its hook; small ones: gathered, handed over at the end in network order
    assert calls == [("large", 3), ("large", 3), ("large", 3), ("small", 10), ("large", 1), ("output", 10)]
    assert probe.layer_order == ["small", "large", "output"]
    with torch.no_grad():
        orbit = GROUP.orbit(images).flatten(0, 1)
        expected = {"small": model.small(orbit), "output": model(orbit)}
    for name, value in expected.items():
        torch.testing.assert_close(torch.cat(parts[name], dim=1), value.unflatten(0, (len(GROUP), -1)))
