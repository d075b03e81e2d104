"""AC power flow on the grids pandapower ships, with pandapower's Newton–Raphson as ground truth.

**Samples.** A sample of grid ``name`` (one of :data:`GRIDS`, e.g. ``"case118"``) takes
pandapower's case and multiplies every load's ``p_mw`` and ``q_mvar`` by one factor drawn for
that load, and every generator's (``gen``) and static generator's (``sgen``) ``p_mw`` by its
own factor; all factors are independent draws from U(:data:`SCALE_LOW`, :data:`SCALE_HIGH`) =
U(0.7, 1.3). Voltage set-points, shunts, lines and transformers stay as in the case; the slack
(``ext_grid``) takes up the imbalance. ``pp.runpp`` solves the AC power flow by Newton–Raphson
with pandapower's defaults (DC initialisation, voltage angles and transformer shifts
considered, tolerance 1e-8 MVA, at most 10 iterations, Q limits not enforced). A draw on which
it does not converge is replaced by a new draw from a derived seed; the number of replaced
draws is kept on the sample (``redraws``) and logged, never dropped silently.

**As graphs** (PyG ``Data``): nodes are the in-service buses in the order of pandapower's bus
table; every in-service line and transformer gives two directed edges, from-bus → to-bus and
back. Parallel branches stay separate edges. Everything is read from pandapower's own internal
per-unit model after ``runpp`` (``net._ppc``, MATPOWER's column layout, on the grid's base
``sn_mva``, 100 MVA for all shipped cases; rows found through ``net._pd2ppc_lookups["bus"]``),
so that the features are the numbers Newton–Raphson used. Units and scaling:

* ``x`` ``[N, 9]``, per unit on the base MVA:

  0. ``p_demand``: active injection of the bus's loads and static generators, ``−PD`` (a load
     draws, an sgen injects);
  1. ``q_demand``: the same for reactive power, ``−QD``;
  2. ``p_gen``: the summed ``p_mw`` of the voltage-controlling generators at a PV bus (0 at
     PQ buses and at the slack, whose injection is an output);
  3. ``v_set``: ``(vm_set − 1) / VM_SCALE`` at PV buses and the slack, 0 elsewhere (the same
     scaling as the target, so a model can copy it);
  4. ``pv``: 1 at PV buses; 5. ``slack``: 1 at the slack bus;
  6. ``g_shunt``, 7. ``b_shunt``: the bus shunt ``GS``, ``BS`` (MATPOWER's convention:
     MW consumed and MVAr injected at 1 p.u.), per unit;
  8. ``ln(vn_kv / 100 kV)``, the bus's nominal voltage.

* ``edge_attr`` ``[E, 7]`` of the branch's π model, per unit: ``r``, ``x``, ``ln(1 / |r + jx|)``
  (the log series admittance), shunt ``g`` and ``b`` (total line charging or magnetising
  admittance), then ``±ln τ`` and ``±shift`` (radians) of the off-nominal tap ratio ``τ``
  (1 for lines) and phase shift at the from side: ``+`` on the from → to edge, ``−`` on the
  reverse one, so that the two directions are told apart.
* ``y`` ``[N, 2]``: ``(vm − 1) / VM_SCALE`` with ``vm`` the voltage magnitude in p.u., and the
  voltage angle relative to the slack's, in radians;
* ``dc_y`` ``[N, 2]``: pandapower's DC power flow (``pp.rundcpp``) on the same sample in the
  same scaling (``vm = 1``, so column 0 is 0), the linear baseline;
* kept to rebuild the sample (:func:`scaled_grid`): ``grid`` ``[1]`` (index into
  :data:`GRIDS`), ``load_scale`` ``[L]``, ``gen_scale`` ``[G]``, ``sgen_scale`` ``[S]``
  (float64, one factor per row of pandapower's tables), and ``redraws`` ``[1]``.

pandapower is an optional dependency: ``pip install -e '.[power]'``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
import multiprocessing
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm import tqdm

from convergent.cache import load_entry, store_entry
from convergent.systems._optional import importable, optional_module

logger = logging.getLogger(__name__)

#: The cases of ``pandapower.networks`` this module takes, in a fixed order (``Data.grid``
#: indexes it; append, never reorder). Left out: ``case11_iwamoto`` (Newton–Raphson does not
#: converge on it) and ``case6495rte`` (six slack buses).
GRIDS = ("case4gs", "case5", "case6ww", "case9", "case14", "case24_ieee_rts", "case30", "case_ieee30", "case33bw",
         "case39", "case57", "case89pegase", "case118", "case145", "case_illinois200", "case300", "case1354pegase",
         "case1888rte", "case2848rte", "case2869pegase", "case3120sp", "case6470rte", "case6515rte",
         "case9241pegase")
SCALE_LOW, SCALE_HIGH = 0.7, 1.3
#: Voltage magnitudes are given as ``(vm − 1) / VM_SCALE``.
VM_SCALE = 0.05
#: Draws tried per sample before giving up (each non-converged one is replaced by a new draw).
MAX_DRAWS = 20
_SCALED = (("load", ("p_mw", "q_mvar"), "load_scale"), ("gen", ("p_mw",), "gen_scale"),
           ("sgen", ("p_mw",), "sgen_scale"))
_FIELDS = ("x", "edge_index", "edge_attr", "y", "dc_y", "grid", "load_scale", "gen_scale", "sgen_scale", "redraws")
# Column indices of pandapower's internal case (pandapower.pypower.idx_bus, idx_gen, idx_brch:
# MATPOWER's layout, plus pandapower's BR_G), and its bus types.
_PD, _QD, _GS, _BS, _BUS_TYPE, _BASE_KV = 2, 3, 4, 5, 1, 9
_PV, _REF = 2, 3
_GEN_BUS, _PG, _VG, _GEN_STATUS = 0, 1, 5, 7
_F_BUS, _T_BUS, _BR_R, _BR_X, _BR_B, _TAP, _SHIFT, _BR_STATUS, _BR_G = 0, 1, 2, 3, 4, 8, 9, 10, 23
_BR_ASYMMETRIC = [21, 22, 24, 25]  # BR_R_ASYM, BR_X_ASYM, BR_G_ASYM, BR_B_ASYM


def pandapower():
    """The ``pandapower`` module; an ImportError that says how to install it."""
    return optional_module("pandapower", "powerflow", "power", "pandapower")


def available() -> bool:
    """Whether pandapower can be imported."""
    return importable(pandapower)


@functools.cache
def _case(name: str) -> Any:
    """pandapower's case ``name``, loaded once per process (callers copy it)."""
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}; choose one of {', '.join(GRIDS)}")
    pandapower()
    return getattr(importlib.import_module("pandapower.networks"), name)()


def grid(name: str) -> Any:
    """A fresh copy of pandapower's case ``name`` (one of :data:`GRIDS`)."""
    return copy.deepcopy(_case(name))


def scaled_grid(name: str, load_scale: np.ndarray, gen_scale: np.ndarray, sgen_scale: np.ndarray) -> Any:
    """Case ``name`` with every load's ``p_mw``/``q_mvar`` and every gen's and sgen's ``p_mw``
    multiplied by its factor (one per table row, in the table's order)."""
    net = grid(name)
    for (table, columns, label), factors in zip(_SCALED, (load_scale, gen_scale, sgen_scale)):
        factors = np.asarray(factors, dtype=np.float64)
        if factors.shape != (len(net[table]),):
            raise ValueError(f"{name} has {len(net[table])} {table} rows; got {factors.shape[0]} {label} factors")
        for column in columns:
            net[table][column] = net[table][column].to_numpy() * factors
    return net


def _quietly(function, net: Any) -> None:
    # The shipped cases predate pandapower 3's tap_dependency_table, which they do not use;
    # every solve would warn about it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="tap_dependency_table is missing", category=DeprecationWarning)
        function(net)


def run_ac(net: Any) -> None:
    """``pp.runpp(net)``: Newton–Raphson with pandapower's defaults (results in ``net.res_bus``)."""
    _quietly(pandapower().runpp, net)


def run_dc(net: Any) -> None:
    """``pp.rundcpp(net)``: the linear DC power flow (results in ``net.res_bus``)."""
    _quietly(pandapower().rundcpp, net)


def _seed_tuple(seed: int | Sequence[int]) -> tuple[int, ...]:
    return (int(seed),) if isinstance(seed, (int, np.integer)) else tuple(int(s) for s in seed)


def sample(name: str, seed: int | Sequence[int]) -> Data:
    """One randomly loaded sample of grid ``name`` with its AC and DC power flows (module docstring).

    Draw ``k`` (from 0) uses ``numpy.random.default_rng((*seed, k))``; draws on which
    Newton–Raphson does not converge are replaced, at most :data:`MAX_DRAWS` in all.
    """
    not_converged = pandapower().LoadflowNotConverged
    base = _case(name)
    for draw in range(MAX_DRAWS):
        rng = np.random.default_rng((*_seed_tuple(seed), draw))
        factors = [rng.uniform(SCALE_LOW, SCALE_HIGH, len(base[table])) for table, _, _ in _SCALED]
        net = scaled_grid(name, *factors)
        try:
            run_ac(net)
        except not_converged:
            logger.warning("power flow of %s seed %s draw %d did not converge; drawing again", name, seed, draw)
            continue
        return _as_data(net, name, factors, draw)
    raise RuntimeError(f"Newton-Raphson did not converge on {MAX_DRAWS} draws of {name} (seed {seed}); "
                       f"the loading range U({SCALE_LOW}, {SCALE_HIGH}) is too wide for this grid")


def _bus_rows(net: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(buses, rows)``: the in-service pandapower bus indices and their rows in ``net._ppc["bus"]``."""
    buses = net.bus.index[net.bus.in_service.to_numpy(bool)].to_numpy()
    rows = np.asarray(net._pd2ppc_lookups["bus"])[buses]
    if len(np.unique(rows)) != len(rows) or (rows < 0).any():
        raise ValueError(f"{name}: buses are merged or missing in pandapower's internal model (bus-bus switches?); "
                         "only grids whose in-service buses map one to one are supported")
    return buses, rows


def _node_features(ppc: dict, rows: np.ndarray, position: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """``([N, 9] x, slack node)`` from the bus rows ``rows`` of pandapower's internal case."""
    base_mva = float(ppc["baseMVA"])
    bus = ppc["bus"][rows].real
    kind = bus[:, _BUS_TYPE]
    if (kind == _REF).sum() != 1:
        raise ValueError(f"{name} has {(kind == _REF).sum()} slack buses; the angle reference needs exactly one")
    generators = ppc["gen"].real
    at = position[generators[:, _GEN_BUS].astype(int)]
    in_graph = (generators[:, _GEN_STATUS] > 0) & (at >= 0)  # others inject nothing
    generators, at = generators[in_graph], at[in_graph]
    p_gen = np.zeros(len(rows))
    np.add.at(p_gen, at, generators[:, _PG] * (kind[at] == _PV))
    v_set = np.zeros(len(rows))
    v_set[at] = (generators[:, _VG] - 1) / VM_SCALE
    v_set[(kind != _PV) & (kind != _REF)] = 0
    x = np.stack([-bus[:, _PD] / base_mva, -bus[:, _QD] / base_mva, p_gen / base_mva, v_set,
                  kind == _PV, kind == _REF, bus[:, _GS] / base_mva, bus[:, _BS] / base_mva,
                  np.log(bus[:, _BASE_KV] / 100)], 1)
    return x, int(np.flatnonzero(kind == _REF)[0])


def _edge_features(ppc: dict, position: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``([2, E] edge_index, [E, 7] edge_attr)`` of the in-service branches, both directions."""
    branch = ppc["branch"].real
    branch = branch[branch[:, _BR_STATUS] > 0]
    source, target = position[branch[:, _F_BUS].astype(int)], position[branch[:, _T_BUS].astype(int)]
    if (source < 0).any() or (target < 0).any():
        raise ValueError(f"{name}: an in-service branch ends at an out-of-service bus")
    if branch[:, _BR_ASYMMETRIC].any():
        raise ValueError(f"{name} has branches with asymmetric π models, which the edge features do not describe")
    impedance = np.hypot(branch[:, _BR_R], branch[:, _BR_X])
    if not (impedance > 0).all():
        raise ValueError(f"{name} has branches of zero impedance (r = x = 0), whose admittance is infinite")
    tap = np.where(branch[:, _TAP] == 0, 1.0, branch[:, _TAP])
    common = np.stack([branch[:, _BR_R], branch[:, _BR_X], -np.log(impedance), branch[:, _BR_G], branch[:, _BR_B]], 1)
    signed = np.stack([np.log(tap), np.radians(branch[:, _SHIFT])], 1)
    edge_attr = np.concatenate([np.concatenate([common, signed], 1), np.concatenate([common, -signed], 1)])
    return np.concatenate([np.stack([source, target]), np.stack([target, source])], 1), edge_attr


def _as_data(net: Any, name: str, factors: list[np.ndarray], redraws: int) -> Data:
    """The graph of a solved sample (``runpp`` has run on ``net``); runs ``rundcpp`` on it too."""
    buses, rows = _bus_rows(net, name)
    position = np.full(net._ppc["bus"].shape[0], -1)
    position[rows] = np.arange(len(rows))
    x, slack = _node_features(net._ppc, rows, position, name)
    edge_index, edge_attr = _edge_features(net._ppc, position, name)
    ac = net.res_bus.loc[buses]
    if ac.vm_pu.isna().any():
        raise ValueError(f"{name}: pandapower left {int(ac.vm_pu.isna().sum())} buses unsolved (isolated buses?)")
    y = _targets(ac.vm_pu.to_numpy(), ac.va_degree.to_numpy(), slack)
    run_dc(net)
    dc_y = _targets(np.ones(len(buses)), net.res_bus.loc[buses].va_degree.to_numpy(), slack)
    as_float = functools.partial(torch.as_tensor, dtype=torch.float32)
    return Data(x=as_float(x), edge_index=torch.as_tensor(edge_index, dtype=torch.long), edge_attr=as_float(edge_attr),
                y=as_float(y), dc_y=as_float(dc_y), grid=torch.tensor([GRIDS.index(name)]),
                load_scale=torch.as_tensor(factors[0]), gen_scale=torch.as_tensor(factors[1]),
                sgen_scale=torch.as_tensor(factors[2]), redraws=torch.tensor([redraws]))


def _targets(vm: np.ndarray, va_degree: np.ndarray, slack: int) -> np.ndarray:
    """``[N, 2]``: ``(vm − 1) / VM_SCALE`` and the angle relative to the slack's, in radians."""
    return np.stack([(vm - 1) / VM_SCALE, np.radians(va_degree - va_degree[slack])], 1)


class _FactorSolve(torch.autograd.Function):
    """``A⁻¹ b`` with a SciPy LU factorisation of ``A``; the gradient solves with ``Aᵀ``."""

    @staticmethod
    def forward(ctx, rhs: Tensor, factor: Any) -> Tensor:
        ctx.factor = factor
        return rhs.new_tensor(factor.solve(rhs.detach().cpu().double().numpy()))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.new_tensor(ctx.factor.solve(grad.detach().cpu().double().numpy(), trans="T")), None


class DCPowerFlow:
    """MATPOWER's DC power flow of a batch of grids, rebuilt from the features alone and factorised once.

    ``B θ = P − P_shift − G_shunt`` with ``B`` the branch susceptances ``1 / (x τ)``, ``P``
    the active injections (features 0 and 2), the phase shifters' injections and the shunt
    conductances, ``θ = 0`` at the slack; :meth:`angles` equals pandapower's ``rundcpp``
    (``dc_y``).

    Args:
        x: ``[N, 9]``, edge_index ``[2, E]``, edge_attr ``[E, 7]`` as in this module's graphs,
            batched by PyG: every graph's edges are its branches from-bus → to-bus, then the
            same branches back, so the first half of each graph's edges is the forward one.
        batch: ``[N]`` graph of each bus; each graph needs exactly one slack bus.
    """

    def __init__(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor):
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        slacks = np.bincount(batch[x[:, 5] == 1].cpu().numpy(), minlength=num_graphs)
        if (slacks != 1).any():
            graph = int(np.flatnonzero(slacks != 1)[0])
            raise ValueError(f"graph {graph} has {slacks[graph]} slack buses (feature 5); the DC angles need exactly one")
        graph_of_edge = batch[edge_index[0]].cpu().numpy()
        counts = np.bincount(graph_of_edge, minlength=num_graphs)
        if (counts % 2).any():
            raise ValueError("every branch must appear twice, from-bus → to-bus and back, for the DC angles; "
                             f"graph {int(np.flatnonzero(counts % 2)[0])} has an odd number of edges")
        position = np.arange(len(graph_of_edge)) - (np.cumsum(counts) - counts)[graph_of_edge]
        forward = position < counts[graph_of_edge] // 2
        source, target = edge_index[:, torch.as_tensor(forward)].cpu().numpy()
        edge = edge_attr[torch.as_tensor(forward)].detach().cpu().double().numpy()
        nodes = x.detach().cpu().double().numpy()
        num_nodes, branches = len(nodes), np.arange(len(source))
        susceptance = 1 / (edge[:, 1] * np.exp(edge[:, 5]))
        incidence = scipy.sparse.csr_matrix((np.r_[np.ones(len(source)), -np.ones(len(source))],
                                             (np.r_[branches, branches], np.r_[source, target])),
                                            shape=(len(source), num_nodes))
        matrix = (incidence.T @ scipy.sparse.diags(susceptance) @ incidence).tocsr()
        free = nodes[:, 5] == 0
        self._free = torch.as_tensor(free, device=x.device)
        self._factor = None
        if free.any():
            try:
                self._factor = scipy.sparse.linalg.splu(matrix[free][:, free].tocsc())
            except RuntimeError as error:  # SuperLU: "Factor is exactly singular"
                raise ValueError("the DC power-flow matrix is singular: some bus has no path of branches to its "
                                 "graph's slack bus; give every island its own slack or drop it") from error
        injection = nodes[:, 0] + nodes[:, 2] - nodes[:, 6] + incidence.T @ (susceptance * edge[:, 6])
        angle = np.zeros(num_nodes)
        if self._factor is not None:
            angle[free] = self._factor.solve(injection[free])
        flow = np.abs(susceptance * (incidence @ angle - edge[:, 6]))
        self._angle = x.new_tensor(angle)
        self._throughput = x.new_tensor(abs(incidence.T) @ flow)

    def angles(self) -> Tensor:
        """``[N]`` angles in radians, dtype and device of ``x``."""
        return self._angle

    def throughput(self) -> Tensor:
        """``[N]`` Σ |DC branch flow| over each bus's branches, per unit (flows include the phase shifts)."""
        return self._throughput

    def response(self, power: Tensor) -> Tensor:
        """``[N]`` angles ``B⁻¹ power`` (0 at the slack, whose entry of ``power`` ``[N]`` is ignored):
        how the DC angles move when ``power`` per unit is added to the injections; differentiable."""
        angle = torch.zeros_like(power)
        if self._factor is None:
            return angle
        return angle.index_put((self._free,), _FactorSolve.apply(power[self._free], self._factor))


def grid_name(graph: Data) -> str:
    """The name of the grid a sample was drawn from."""
    return GRIDS[int(graph.grid)]


def rebuild(graph: Data) -> Any:
    """The pandapower net of a sample made by :func:`sample` (not yet solved)."""
    return scaled_grid(grid_name(graph), graph.load_scale.numpy(), graph.gen_scale.numpy(), graph.sgen_scale.numpy())


def _make(job: tuple[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    graph = sample(*job)
    return {field: graph[field] for field in _FIELDS}


def power_flow_graphs(grids: Sequence[str], count: int, *, seed: int = 0, workers: int | None = None,
                      cache: Path | None = None, progress: bool = False) -> list[Data]:
    """``count`` samples, the ``i``-th of grid ``grids[i % len(grids)]`` with seed ``(seed, i)``.

    ``workers`` processes generate them (default: one per core for 64 samples or more, else in
    this process); the result does not depend on it. With ``cache``, the samples are stored
    there (tensors only) and reused when asked for with the same arguments.
    """
    if count < 1 or not grids:
        raise ValueError(f"need count ≥ 1 and at least one grid (got {count}, {list(grids)})")
    for name in grids:
        if name not in GRIDS:
            raise ValueError(f"unknown grid {name!r}; choose one of {', '.join(GRIDS)}")
    key = {"grids": list(grids), "count": count, "seed": seed, "pandapower": pandapower().__version__,
           "version": 1}
    stored = load_entry(cache, key)
    if stored is not None:
        return [Data(**fields) for fields in stored["graphs"]]
    jobs = [(grids[index % len(grids)], (seed, index)) for index in range(count)]
    if workers is None:
        workers = (os.cpu_count() or 1) if count >= 64 else 1
    bar = functools.partial(tqdm, total=count, desc="power flows", disable=not progress, leave=False)
    if workers > 1:
        # Spawned, not forked: a forked child would inherit the parent's numba and torch thread pools.
        with ProcessPoolExecutor(min(workers, count), mp_context=multiprocessing.get_context("spawn")) as pool:
            made = list(bar(pool.map(_make, jobs)))
    else:
        made = [_make(job) for job in bar(jobs)]
    store_entry(cache, key, graphs=made)
    return [Data(**fields) for fields in made]


@functools.cache
def _warm_up() -> None:
    """One untimed solve per process, so that timings exclude numba's first-call compilation."""
    run_ac(grid("case9"))


def solve_seconds(graph: Data) -> float:
    """Wall time of ``pp.runpp`` (Newton–Raphson, pandapower's conversion included) on the
    sample ``graph``, rebuilt from its grid and factors; the rebuilding is not timed."""
    _warm_up()
    net = rebuild(graph)
    start = time.perf_counter()
    run_ac(net)
    return time.perf_counter() - start
