"""The probe against the straightforward loop a user would write without this package.

The straightforward way: one forward pass per group element over the data in dataloader-sized batches with autograd
on (as in a training script), forward hooks that keep every layer's features, then the centroid and a Python-level
distance per sample and element, and the normaliser per batch with ``torch.cdist``. Both give the same G-EED
(checked to 1e-4; the normalised ones to 5%, as the normalisers pair samples in different groups). The probe runs at
its defaults. Time: median of repeats in this process; peak memory: a fresh process each, resident memory above
the model's and data's set-up.

    python benchmarks/vs_loop.py [--quick]
"""

from __future__ import annotations

import argparse
import functools

import torch

from lightning_invariance import InvarianceDeviation, Probe
from lightning_invariance.groups import Dihedral

from _common import median_seconds, peak_memory_mib, small_cnn, table

BATCH = 128
INNER = ["1", "3", "6"]


def straightforward(
    model: torch.nn.Module, inputs: torch.Tensor, group, layers: list[str]
) -> dict[str, tuple[float, float]]:
    modules = dict(model.named_modules())
    stored: dict[str, list[list[torch.Tensor]]] = {layer: [[] for _ in range(len(group))] for layer in layers}
    element = [0]
    handles = []
    for layer in layers:
        module = model if layer == "output" else modules[layer]

        def hook(module, args, output, layer=layer):
            stored[layer][element[0]].append(output.detach().flatten(1))

        handles.append(module.register_forward_hook(hook))
    for k in range(len(group)):
        element[0] = k
        for batch in inputs.split(BATCH):
            model(group.act(batch, k))  # autograd on, as in a training script
    for handle in handles:
        handle.remove()
    scores = {}
    for layer in layers:
        orbit = torch.stack([torch.cat(chunks) for chunks in stored[layer]])  # (|G|, N, D)
        centroid = orbit.mean(0)
        total = 0.0
        for i in range(orbit.shape[1]):
            for g in range(orbit.shape[0]):
                total += torch.dist(orbit[g, i], centroid[i]).item()
        geed = total / (orbit.shape[0] * orbit.shape[1])
        pair_sum, pair_count = 0.0, 0
        for batch in orbit[0].split(BATCH):
            distances = torch.cdist(batch, batch)
            pair_sum += distances.sum().item()
            pair_count += batch.shape[0] * (batch.shape[0] - 1)
        scores[layer] = (geed, geed / (pair_sum / pair_count))
    return scores


def with_probe(
    model: torch.nn.Module, inputs: torch.Tensor, group, layers: list[str]
) -> dict[str, tuple[float, float]]:
    """The probe at its defaults (chunk size, normaliser pairs within each chunk)."""
    metrics = {layer: InvarianceDeviation(len(group)) for layer in layers}
    Probe(model, group, layers=layers).update(inputs, metrics)
    summaries = {layer: metric.compute_summary() for layer, metric in metrics.items()}
    return {layer: (s["geed"].item(), s["geed_normalized"].item()) for layer, s in summaries.items()}


def _setup(n: int, how: str, layers: list[str]):
    torch.manual_seed(0)
    model, inputs, group = small_cnn().eval(), torch.randn(n, 1, 16, 16), Dihedral(4)
    fn = straightforward if how == "loop" else with_probe
    return functools.partial(fn, model, inputs, group, layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = 128 if args.quick else 2048
    repeats = 1 if args.quick else args.repeats
    rows = []
    for layers in (["output"], ["output", *INNER]):
        loop_run, probe_run = _setup(n, "loop", layers), _setup(n, "probe", layers)
        loop_scores, probe_scores = loop_run(), probe_run()
        for layer in layers:  # the same G-EED; the normalisers pair samples within different groups
            (loop_raw, loop_normalized), (probe_raw, probe_normalized) = loop_scores[layer], probe_scores[layer]
            assert abs(loop_raw - probe_raw) <= 1e-4 * abs(loop_raw), (layer, loop_raw, probe_raw)
            assert abs(loop_normalized - probe_normalized) <= 0.05 * abs(loop_normalized), layer
        loop_time = median_seconds(loop_run, repeats, warmup=0)
        probe_time = median_seconds(probe_run, repeats, warmup=0)
        _, loop_mib = peak_memory_mib(functools.partial(_setup, n, "loop", layers))
        _, probe_mib = peak_memory_mib(functools.partial(_setup, n, "probe", layers))
        rows.append([len(layers), loop_time, probe_time, loop_time / probe_time, loop_mib, probe_mib])
    print(
        f"Small CNN, |G| = 8 (D4), N = {n} 16x16 inputs, batch {BATCH}; median of {repeats} "
        f"({torch.get_num_threads()} threads)"
    )
    print(table(["L", "loop s", "probe s", "speed-up", "loop peak MiB", "probe peak MiB"], rows))


if __name__ == "__main__":
    main()
