"""Pressure in pore networks under Stokes flow, with OpenPNM 3 as simulator and ground truth.

**Networks.** Random pore networks in a cube of side :data:`DOMAIN` = 1 mm, from a Delaunay
tessellation of uniform random points, from its Voronoi dual, or a cubic lattice (the kind is
drawn per network). With ``s = DOMAIN / n^(1/3)`` the mean pore spacing of an ``n``-pore
network, pore diameters are lognormal (median :data:`DIAMETER_MEDIAN` · s, log-σ
:data:`DIAMETER_SIGMA`), capped at :data:`OVERLAP_MARGIN` times OpenPNM's largest
non-overlapping sphere so no two pores overlap. Throats follow OpenPNM's
``spheres_and_cylinders`` geometry (diameter half the smaller neighbouring pore's); their
hydraulic conductance ``g`` [m³/(Pa·s)] is OpenPNM's ``generic_hydraulic`` model for water at
298 K. Diameters scale with the spacing, so larger networks in the same cube are finer, not
different, and the features below do not change range with the network size.

**Flow.** Pores within :data:`BOUNDARY_DEPTH` · s of the face x = 0 or on it (OpenPNM's
``pore.xmin`` label) form the inlet, held at :data:`PRESSURE_DROP` = 1 bar; those as close
to x = 1 mm, the outlet, at 0. OpenPNM's
``StokesFlow`` solves ``Σ_j g_ij (p_i − p_j) = 0`` at every other pore.

**As graphs** (PyG ``Data``): every throat gives two directed edges, one each way, with the
same features. Units and scaling:

* ``x`` ``[N, 6]``: pore coordinates / 1 mm (3), inlet flag, outlet flag, imposed pressure in
  bar (1 at the inlet, 0 elsewhere: masked by the flags);
* ``edge_attr`` ``[E, 4]``: throat diameter / s, throat length / s,
  ``ln(g / median g)`` over the network's throats (pressures do not change when all
  conductances are scaled alike, so only relative conductance is given), and the edge's step
  along x, ``(x_t − x_s) / s`` (the pressure gradient's direction; opposite on the two edges
  of a throat);
* ``y`` ``[N, 1]``: pore pressure in bar;
* kept for metrics and the classical solver: ``pos`` ``[N, 3]`` (m), ``conductance`` ``[E]``
  (m³/(Pa·s), float64), ``inlet`` / ``outlet`` ``[N]`` bool, ``flow_rate`` ``[1]`` (m³/s, the
  flow OpenPNM computes into the outlet pores).

**CGS form.** At a free pore ``p_i = Σ_j (g_ij / Σ_k g_ik) p_j``; at a boundary pore
``p_i = p̄_i``. That is ``p = A p + b`` with a substochastic ``A`` whose spectral radius is
below 1 but whose row sums are 1 at most free pores; :func:`cgs_form` rescales it by a
positive diagonal into the contracting form ``q = γ Ã q + b̃`` that :func:`convergent.solve`
takes, so a hand-set CGS reproduces OpenPNM exactly.

OpenPNM is an optional dependency: ``pip install -e '.[porenet]'``.
"""

from __future__ import annotations

import copy
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import scatter
from tqdm import tqdm

from convergent.cache import load_entry, store_entry
from convergent.systems._optional import importable, optional_module

DOMAIN = 1e-3
PRESSURE_DROP = 1e5
KINDS = ("delaunay", "voronoi", "cubic")
DIAMETER_MEDIAN = 0.4
DIAMETER_SIGMA = 0.3
OVERLAP_MARGIN = 0.9
BOUNDARY_DEPTH = 0.6
#: Pores of a trimmed Voronoi network per base point (measured); sets the point count.
VORONOI_PORES_PER_POINT = 5.0
TEMPERATURE = 298.0
_FIELDS = ("x", "edge_index", "edge_attr", "y", "pos", "conductance", "inlet", "outlet", "flow_rate")


def openpnm():
    """The ``openpnm`` module, imported quietly; an ImportError that says how to install it."""
    # Its import logs an error about the optional PARDISO solver; SciPy's solver is used without it.
    logging.getLogger("openpnm").setLevel(logging.CRITICAL)
    return optional_module("openpnm", "porenet", "porenet", "OpenPNM 3")


def available() -> bool:
    """Whether OpenPNM can be imported."""
    return importable(openpnm)


def _network(op: Any, num_pores: int, kind: str, rng: np.random.Generator) -> Any:
    shape = [DOMAIN] * 3
    if kind == "delaunay":
        return op.network.Delaunay(shape=shape, points=rng.random((num_pores, 3)) * DOMAIN)
    if kind == "voronoi":
        points = max(4, round(num_pores / VORONOI_PORES_PER_POINT))
        return op.network.Voronoi(shape=shape, points=rng.random((points, 3)) * DOMAIN)
    if kind == "cubic":
        side = max(2, round(num_pores ** (1 / 3)))
        cells = [side, side, max(2, round(num_pores / side**2))]
        return op.network.Cubic(shape=cells, spacing=[DOMAIN / c for c in cells])
    raise ValueError(f"unknown network kind {kind!r}; choose one of {', '.join(KINDS)}")


def _spacing(network: Any) -> float:
    """The mean pore spacing ``s = DOMAIN / n^(1/3)`` of an ``n``-pore network."""
    return DOMAIN / network.Np ** (1 / 3)


def _boundaries(network: Any, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Pores within ``BOUNDARY_DEPTH · spacing`` of the x faces, and those OpenPNM labels as on them."""
    x, depth = network.coords[:, 0], BOUNDARY_DEPTH * spacing
    return (x < depth) | network["pore.xmin"], (x > DOMAIN - depth) | network["pore.xmax"]


def stokes_flow(pos: np.ndarray, conns: np.ndarray, conductance: np.ndarray, inlet: np.ndarray,
                outlet: np.ndarray) -> tuple[np.ndarray, float]:
    """OpenPNM's ``StokesFlow`` on a network given by its pores and throats.

    Args:
        pos: ``[N, 3]`` pore coordinates (m).
        conns: ``[T, 2]`` the two pores of every throat.
        conductance: ``[T]`` hydraulic conductance (m³/(Pa·s)).
        inlet, outlet: ``[N]`` bool; held at 1 bar and 0.

    Returns:
        ``(pressure, flow)``: ``[N]`` pore pressures (Pa) and the flow into the outlet pores (m³/s).
    """
    op = openpnm()
    network = op.network.Network(coords=pos, conns=conns)
    phase = op.phase.Phase(network=network)
    phase["throat.hydraulic_conductance"] = conductance
    flow = op.algorithms.StokesFlow(network=network, phase=phase)
    flow.set_value_BC(pores=np.flatnonzero(inlet), values=PRESSURE_DROP)
    flow.set_value_BC(pores=np.flatnonzero(outlet), values=0.0)
    flow.run()
    rate = flow.rate(pores=np.flatnonzero(outlet), mode="group")[0]
    return np.asarray(flow["pore.pressure"], dtype=np.float64), -float(rate)


def build_network(num_pores: int, kind: str, seed: int | tuple[int, ...]) -> Any:
    """An OpenPNM network of about ``num_pores`` pores of ``kind`` with its geometry (module docstring)."""
    op = openpnm()
    rng = np.random.default_rng(seed)
    network = _network(op, num_pores, kind, rng)
    spacing = _spacing(network)
    network["pore.max_size"] = op.models.geometry.pore_size.largest_sphere(network)
    lognormal = rng.lognormal(math.log(DIAMETER_MEDIAN * spacing), DIAMETER_SIGMA, network.Np)
    network["pore.diameter"] = np.minimum(lognormal, OVERLAP_MARGIN * network["pore.max_size"])
    geometry = copy.deepcopy(op.models.collections.geometry.spheres_and_cylinders)
    for computed in ("pore.seed", "pore.max_size", "pore.diameter"):
        del geometry[computed]
    network.add_model_collection(geometry)
    network.regenerate_models()
    return network


def pore_network(num_pores: int, kind: str, seed: int | tuple[int, ...]) -> Data:
    """One network of about ``num_pores`` pores with its Stokes-flow pressures, as a graph (module docstring)."""
    op = openpnm()
    network = build_network(num_pores, kind, seed)
    spacing = _spacing(network)
    water = op.phase.Water(network=network)
    water["pore.temperature"] = TEMPERATURE
    water.regenerate_models()
    water.add_model(propname="throat.hydraulic_conductance",
                    model=op.models.physics.hydraulic_conductance.generic_hydraulic)
    conductance = np.asarray(water["throat.hydraulic_conductance"], dtype=np.float64)
    if not (np.isfinite(conductance).all() and (conductance > 0).all()):
        raise RuntimeError(f"OpenPNM gave non-positive throat conductances for {kind} network seed {seed}")
    coords, conns = np.asarray(network.coords, dtype=np.float64), np.asarray(network.conns)
    inlet, outlet = _boundaries(network, spacing)
    pressure, flow = stokes_flow(coords, conns, conductance, inlet, outlet)
    return _as_data(coords, conns, conductance, spacing, network["throat.diameter"], network["throat.length"],
                    inlet, outlet, pressure, flow)


def _as_data(coords, conns, conductance, spacing, diameter, length, inlet, outlet, pressure, flow) -> Data:
    conns = torch.as_tensor(conns, dtype=torch.long)
    edge_index = torch.cat([conns.T, conns.T.flip(0)], 1)
    shared = np.stack([diameter / spacing, length / spacing, np.log(conductance / np.median(conductance))], 1)
    along = (coords[conns[:, 1], 0] - coords[conns[:, 0], 0]) / spacing  # the edge's step along x
    edge_attr = torch.as_tensor(np.concatenate([np.column_stack([shared, along]), np.column_stack([shared, -along])]),
                                dtype=torch.float32)
    inlet, outlet = torch.as_tensor(inlet), torch.as_tensor(outlet)
    x = torch.cat([torch.as_tensor(coords / DOMAIN, dtype=torch.float32),
                   torch.stack([inlet, outlet, inlet], 1).float()], 1)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr,
                y=torch.as_tensor(pressure / PRESSURE_DROP, dtype=torch.float32).unsqueeze(1),
                pos=torch.as_tensor(coords), conductance=torch.as_tensor(conductance).repeat(2),
                inlet=inlet, outlet=outlet, flow_rate=torch.tensor([flow], dtype=torch.float64))


def throats(graph: Data) -> tuple[np.ndarray, np.ndarray]:
    """``([T, 2] conns, [T] conductance)`` of a graph made by :func:`pore_network` (first half of its edges)."""
    half = graph.edge_index.shape[1] // 2
    return graph.edge_index[:, :half].T.numpy(), graph.conductance[:half].numpy()


def outlet_flow(pressure: Tensor, edge_index: Tensor, conductance: Tensor, outlet: Tensor, batch: Tensor | None,
                num_graphs: int) -> Tensor:
    """``[G]`` flow into the outlet pores (m³/s) of every graph for pore pressures in bar.

    The sum of ``g · (p_s − p_t)`` over the edges ``s → t`` from a free pore into an outlet pore.
    """
    source, target = edge_index
    into = outlet[target] & ~outlet[source]
    pressure = pressure.reshape(-1).double() * PRESSURE_DROP
    flow = conductance[into] * (pressure[source[into]] - pressure[target[into]])
    graph = torch.zeros_like(target) if batch is None else batch[target]
    return torch.zeros(num_graphs, dtype=torch.float64).index_add_(0, graph[into], flow)


def uniform_medium(x: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
    """The pressure of a uniform medium and the mean pore spacing, from node features alone.

    Args:
        x: ``[N, 6]`` node features as in this module's graphs; batch: ``[N]`` graph of each pore.

    Returns:
        ``([N] pressure in bar, [N] spacing s / 1 mm)``. The pressure is the imposed one at
        boundary pores and, elsewhere, linear in x between the inlet pores' mean x (inlet
        pressure) and the outlet pores' mean x (outlet pressure), clamped to that range; the
        spacing is ``n^(-1/3)`` for a network of ``n`` pores (the scale on which pressures
        deviate from the uniform medium).
    """
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    inlet, outlet = x[:, 3] > 0.5, x[:, 4] > 0.5

    def mean(values: Tensor, where: Tensor) -> Tensor:
        return scatter(values[where], batch[where], 0, dim_size=num_graphs, reduce="mean")[batch]

    start, end = mean(x[:, 0], inlet), mean(x[:, 0], outlet)
    high, low = mean(x[:, 5], inlet), mean(x[:, 5], outlet)
    fraction = ((end - x[:, 0]) / (end - start).clamp_min(1e-6)).clamp(0, 1)
    pressure = torch.where(inlet | outlet, x[:, 5], low + (high - low) * fraction)
    pores = torch.bincount(batch, minlength=num_graphs).to(x.dtype)
    return pressure, pores.pow(-1 / 3)[batch]


def cgs_form(edge_index: Tensor, conductance: Tensor, inlet: Tensor, outlet: Tensor) -> dict[str, Any]:
    """The pressure equations as one contracting CGS system, set by hand (float64).

    With ``A[i, j] = g_ij / Σ_k g_ik`` at free pores (rows of boundary pores empty) and
    ``b`` the imposed pressures in bar, ``w = (I − A)⁻¹ 1 ≥ 1`` gives ``A w = w − 1``, so
    ``Ã = W⁻¹ A W / γ`` with ``W = diag w`` and ``γ = max_i (1 − 1 / w_i)`` has row sums
    at most 1. The fixed point of ``q = γ Ã q + W⁻¹ b`` is ``q = W⁻¹ p``.

    Returns:
        dict with ``edge_index`` ``[2, E']`` (edges into free pores), ``edge_weight`` ``[E']``,
        ``bias`` ``[N]``, ``gamma`` and ``scale`` ``[N]`` (= ``w``; pressure ``p = w · q``).
    """
    num_nodes = inlet.numel()
    source, target = edge_index
    fixed = inlet | outlet
    keep = ~fixed[target]
    source, target, g = source[keep], target[keep], conductance[keep].double()
    total = torch.zeros(num_nodes, dtype=torch.float64).index_add_(0, target, g)
    weight = g / total[target]
    matrix = scipy.sparse.csr_matrix((weight.numpy(), (target.numpy(), source.numpy())), shape=(num_nodes, num_nodes))
    steps = torch.as_tensor(scipy.sparse.linalg.spsolve(
        (scipy.sparse.identity(num_nodes, format="csr") - matrix).tocsc(), np.ones(num_nodes)))
    scaled = weight * steps[source] / steps[target]
    rows = torch.zeros(num_nodes, dtype=torch.float64).index_add_(0, target, scaled)
    gamma = float(rows.max()) * (1 + 1e-12)
    return {"edge_index": torch.stack([source, target]), "edge_weight": scaled / gamma,
            "bias": inlet.double() / steps, "gamma": gamma, "scale": steps}


def _make(arguments: tuple[int, int, int]) -> dict[str, Tensor]:
    seed, index, num_pores = arguments
    rng = np.random.default_rng((seed, index))
    kind = KINDS[int(rng.integers(len(KINDS)))]
    graph = pore_network(num_pores, kind, (seed, index, 1))
    return {field: graph[field] for field in _FIELDS}


def porenet_graphs(count: int, *, pores: tuple[int, int] = (50, 200), seed: int = 0, workers: int | None = None,
                   cache: Path | None = None, progress: bool = False) -> list[Data]:
    """``count`` networks with uniformly drawn pore counts in ``[pores[0], pores[1])`` (about:
    Voronoi counts are approximate) and random kinds, seeded by ``(seed, index)``.

    ``workers`` processes generate them (default: one per core for 64 networks or more, else
    in this process); the result does not depend on it. With ``cache``, the networks are stored
    there (tensors only) and reused when asked for with the same arguments.
    """
    if count < 1 or not 3 < pores[0] < pores[1]:
        raise ValueError(f"need count ≥ 1 and 3 < pores[0] < pores[1] (got {count}, {pores})")
    key = {"count": count, "pores": list(pores), "seed": seed, "version": 2}
    stored = load_entry(cache, key)
    if stored is not None:
        return [Data(**fields) for fields in stored["graphs"]]
    sizes = np.random.default_rng((seed, 2**32 - 1)).integers(pores[0], pores[1], count)
    jobs = [(seed, index, int(size)) for index, size in enumerate(sizes)]
    if workers is None:
        workers = (os.cpu_count() or 1) if count >= 64 or sizes.max() >= 5000 else 1
    if workers > 1:
        # Spawned, not forked: a forked child would inherit the parent's numba and torch thread pools.
        with ProcessPoolExecutor(min(workers, count), mp_context=multiprocessing.get_context("spawn")) as pool:
            made = list(_progress(pool.map(_make, jobs), count, progress))
    else:
        made = [_make(job) for job in _progress(jobs, count, progress)]
    store_entry(cache, key, graphs=made)
    return [Data(**fields) for fields in made]


def _progress(items, total: int, shown: bool):
    return tqdm(items, total=total, desc="pore networks", disable=not shown, leave=False)


def solve_seconds(graph: Data) -> float:
    """Wall time of OpenPNM's ``StokesFlow`` (network set-up and solve) on ``graph``."""
    conns, conductance = throats(graph)
    start = time.perf_counter()
    stokes_flow(graph.pos.numpy(), conns, conductance, graph.inlet.numpy(), graph.outlet.numpy())
    return time.perf_counter() - start
