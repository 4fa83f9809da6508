"""Models whose invariance is known: the metrics must say so."""

import pytest
import torch

from lightning_invariance import EquivarianceDeviation, InvarianceDeviation, Probe
from lightning_invariance.groups import CyclicRotation, RegularAction, TrivialAction
from lightning_invariance.testing import assert_equivariant, assert_invariant

from models import C4Averaged, SmallCNN

GROUP = CyclicRotation(4)


def _images(n: int = 32, size: int = 12) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(5))


def test_group_averaged_model_is_invariant():
    torch.manual_seed(0)
    model = C4Averaged(SmallCNN())
    metric = InvarianceDeviation(len(GROUP), normalize=True)
    raw = InvarianceDeviation(len(GROUP))
    Probe(model, GROUP).update(_images(), {"output": [metric, raw]})
    print(f"C4-averaged CNN: G-EED {raw.compute().item():.3g}, normalised {metric.compute().item():.3g}")
    assert raw.compute().item() < 1e-6
    assert metric.compute().item() < 1e-5
    with torch.no_grad():
        assert_invariant(model.eval(), GROUP, _images())  # every element and image within float32 tolerance


def test_plain_cnn_is_not_invariant():
    torch.manual_seed(0)
    metric = InvarianceDeviation(len(GROUP), normalize=True)
    Probe(SmallCNN(), GROUP).update(_images(), {"output": metric})
    print(f"plain CNN: normalised G-EED {metric.compute().item():.3g}")
    assert metric.compute().item() > 0.05
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(SmallCNN().eval(), GROUP, _images())


def test_e2cnn_regular_fields_are_equivariant_under_the_regular_action_only():
    e2cnn = pytest.importorskip("e2cnn")
    gspace = e2cnn.gspaces.Rot2dOnR2(4)
    in_type = e2cnn.nn.FieldType(gspace, [gspace.trivial_repr])
    out_type = e2cnn.nn.FieldType(gspace, 4 * [gspace.regular_repr])
    torch.manual_seed(0)
    model = e2cnn.nn.SequentialModule(
        e2cnn.nn.R2Conv(in_type, out_type, kernel_size=5, padding=2), e2cnn.nn.ReLU(out_type)
    )

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(e2cnn.nn.GeometricTensor(x, in_type))

    wrapper = Wrapper()
    regular = EquivarianceDeviation(RegularAction(GROUP), len(GROUP), normalize=True)
    trivial = EquivarianceDeviation(TrivialAction(), len(GROUP), normalize=True)
    Probe(wrapper, GROUP, layers=["net"]).update(_images(16, 13), {"net": [regular, trivial]})
    print(
        f"e2cnn C4 regular fields: regular action {regular.compute().item():.3g}, "
        f"trivial action {trivial.compute().item():.3g}"
    )
    assert regular.compute().item() < 1e-4
    assert trivial.compute().item() > 0.1
    with torch.no_grad():  # the same, with the assertion helper: every element and image, float32 tolerances
        assert_equivariant(lambda x: wrapper(x).tensor, GROUP, RegularAction(GROUP), _images(16, 13))
