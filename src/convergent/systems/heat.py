"""Steady heat conduction on triangle meshes, with scikit-fem as the finite-element ground truth.

**Problem.** ``−∇·(k ∇T) = f`` in a domain Ω, ``T = g`` on its boundary, in SI units on a
domain of side 1 m: conductivity ``k`` [W/(m·K)], heat source ``f`` [W/m³] (negative: a
sink), temperature ``T`` [K above a reference temperature].

**Domains and meshes** (:data:`KINDS`, drawn per problem): the unit square and the L-shape
(the unit square without its quadrant x, y > ½). A mesh of about ``n`` vertices is an
``s × s`` grid over the unit square (L-shape: without the quadrant's cells) whose cells are
cut into two right triangles along a diagonal chosen at random per cell; interior vertices
then move by up to ``jitter`` (default :data:`JITTER`) times the grid spacing ``h`` in each
coordinate, so that no two meshes are alike. A finer mesh of the same problem is a
refinement of the same domain, not a larger domain. Without jitter all angles are at most
90° and the stiffness matrix is an M-matrix (see :func:`cgs_form`); with it some angles are
obtuse and some off-diagonal entries can be positive.

**Fields** are functions of position, not of the mesh, seeded per problem: each is a sum of
random Fourier modes ``Σ_m a_m cos(2π ω_m·x + φ_m)`` (:class:`FourierField`, variance about 1).
``ln k = LOG_CONDUCTIVITY_SIGMA · F_k`` (median 1 W/(m·K), frequencies up to 2 per metre),
evaluated at element centroids (``k`` is constant per element); ``g = F_g`` (up to 1 per
metre) and ``f = SOURCE_SCALE · F_f`` (up to 2 per metre), evaluated at the vertices. The
same seed on a finer mesh samples the same fields.

**Discretisation** (:func:`solve_temperature`): P1 elements (``ElementTriP1``), stiffness
``K_ij = ∫ k ∇φ_i·∇φ_j``, load ``F = M f`` with ``M`` the mass matrix (``f`` interpolated in
P1), Dirichlet values ``g`` at the boundary vertices; scikit-fem's ``condense`` and ``solve``.

**As graphs** (PyG ``Data``): vertices are nodes; every mesh edge gives two directed edges,
``s → t`` (row 0 source, row 1 target). Units and scaling:

* ``x`` ``[N, 8]``: coordinates (m, 2), boundary flag, boundary temperature (K, 0 at interior
  vertices), the boundary temperatures interpolated inside (K, :func:`boundary_interpolation`),
  ``f / SOURCE_SCALE``, ``ln k̄`` with ``k̄`` the area-weighted mean of ``k`` over the vertex's
  triangles, and ``SWEEP_SCALE · F_i / K_ii`` (K): the temperature one Jacobi sweep adds from
  the source, which shrinks like the vertex's area (``h²``) on finer meshes;
* ``edge_attr`` ``[E, 3]``: edge length / the mesh's mean edge length, ``ln`` of the mean ``k``
  of the one or two triangles beside the edge, and the Jacobi weight ``−K_ts / K_tt`` of edge
  ``s → t`` (the coefficient of ``T_s`` in the equation of ``T_t``, independent of ``h`` in 2-D);
* ``y`` ``[N, 1]``: temperature (K), of order 1;
* kept for metrics and the classical solver: ``pos`` ``[N, 2]`` (m, float64), ``face``
  ``[3, F]`` (the triangles; PyG offsets it in batches), ``conductivity`` ``[F]``, ``source``
  ``[N]`` (``f``), ``boundary`` ``[N]`` bool and ``boundary_temperature`` ``[N]`` (``g``, 0
  inside), all float64.

scikit-fem is an optional dependency: ``pip install -e '.[heat]'``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
from torch import Tensor
from torch_geometric.data import Data
from tqdm import tqdm

from convergent.cache import load_entry, store_entry
from convergent.systems import porenet
from convergent.systems._optional import importable, optional_module

KINDS = ("square", "lshape")
#: Largest displacement of an interior vertex in each coordinate, as a fraction of the grid spacing.
JITTER = 0.2
#: Standard deviation of ``ln k`` (W/(m·K)); ``k`` spans about a factor 20.
LOG_CONDUCTIVITY_SIGMA = 0.8
#: Typical size of ``f`` (W/m³): the source moves temperatures by about as much as the boundary does.
SOURCE_SCALE = 20.0
#: Scale of the Jacobi-source feature, about 1/h² of the training meshes.
SWEEP_SCALE = 100.0
#: Fourier modes and largest frequency (per metre) of the conductivity, boundary and source fields.
CONDUCTIVITY_MODES, CONDUCTIVITY_FREQUENCY = 6, 2.0
BOUNDARY_MODES, BOUNDARY_FREQUENCY = 4, 1.0
SOURCE_MODES, SOURCE_FREQUENCY = 4, 2.0
#: Column of ``x`` holding :func:`boundary_interpolation`.
INTERPOLATION_FEATURE = 4
#: Off-diagonal stiffness entries up to this fraction of the diagonal count as zero in :func:`cgs_form`
#: (the hypotenuse of a right triangle gives ``cot 90° = 0`` up to rounding).
ROUNDING = 1e-12
_FIELDS = ("x", "edge_index", "edge_attr", "y", "pos", "face", "conductivity", "source", "boundary",
           "boundary_temperature")


def skfem():
    """The ``skfem`` module; an ImportError that says how to install it."""
    return optional_module("skfem", "heat", "heat", "scikit-fem")


def available() -> bool:
    """Whether scikit-fem can be imported."""
    return importable(skfem)


@dataclass(frozen=True)
class FourierField:
    """``F(x) = Σ_m a_m cos(2π ω_m·x + φ_m)``: ``frequencies`` ``[M, 2]`` (per metre), ``phases``,
    ``amplitudes`` ``[M]``."""

    frequencies: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, modes: int, max_frequency: float) -> FourierField:
        """Frequencies uniform in ``[−max, max]²``, uniform phases, amplitudes ``N(0, 2/M)``
        (so that ``F`` has variance about 1)."""
        return cls(rng.uniform(-max_frequency, max_frequency, (modes, 2)), rng.uniform(0, 2 * np.pi, modes),
                   rng.normal(0, np.sqrt(2 / modes), modes))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """``[P]`` values at ``points`` ``[P, 2]``."""
        return np.cos(2 * np.pi * points @ self.frequencies.T + self.phases) @ self.amplitudes


def grid_mesh(num_vertices: int, kind: str, rng: np.random.Generator,
              jitter: float = JITTER) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A jittered grid mesh of about ``num_vertices`` vertices of domain ``kind`` (module docstring).

    Returns:
        ``(points [N, 2], triangles [F, 3], boundary [N])``: coordinates (m), vertex indices
        (counter-clockwise) and whether each vertex is on the domain's boundary.
    """
    if not 0 <= jitter < 0.25:
        raise ValueError(f"`jitter` must be in [0, 0.25) so that no triangle folds over (got {jitter})")
    if kind == "square":
        side = max(3, round(num_vertices**0.5))
    elif kind == "lshape":  # 3/4 of the square's vertices; an odd side puts grid lines on x, y = ½
        side = max(5, 2 * round(((num_vertices / 0.75) ** 0.5 - 1) / 2) + 1)
    else:
        raise ValueError(f"unknown domain kind {kind!r}; choose one of {', '.join(KINDS)}")
    spacing = 1 / (side - 1)
    i, j = np.meshgrid(np.arange(side - 1), np.arange(side - 1), indexing="ij")
    i, j = i.ravel(), j.ravel()
    if kind == "lshape":
        keep = ~((i >= (side - 1) // 2) & (j >= (side - 1) // 2))
        i, j = i[keep], j[keep]
    corner = i + side * j  # the cell's corners: a = (i, j), b = (i + 1, j), c = (i + 1, j + 1), d = (i, j + 1)
    a, b, c, d = corner, corner + 1, corner + side + 1, corner + side
    flip = rng.random(corner.size) < 0.5
    triangles = np.concatenate([np.where(flip[:, None], np.stack([a, b, d], 1), np.stack([a, b, c], 1)),
                                np.where(flip[:, None], np.stack([b, c, d], 1), np.stack([a, c, d], 1))])
    used, triangles = np.unique(triangles, return_inverse=True)
    triangles = triangles.reshape(-1, 3)
    points = np.stack([used % side, used // side], 1) / (side - 1)  # divided, so that ½ is exact
    boundary = np.zeros(len(points), dtype=bool)
    boundary[_mesh(points, triangles.T).boundary_nodes()] = True
    points[~boundary] += rng.uniform(-jitter, jitter, (int((~boundary).sum()), 2)) * spacing
    return points, triangles, boundary


def _mesh(pos: np.ndarray, face: np.ndarray) -> Any:
    """scikit-fem's ``MeshTri`` of vertices ``pos`` ``[N, 2]`` and triangles ``face`` ``[3, F]``."""
    return skfem().MeshTri(np.ascontiguousarray(pos.T, dtype=np.float64), np.ascontiguousarray(face))


def _triangle_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``[F]`` signed areas (m², positive when counter-clockwise) of ``triangles`` ``[F, 3]``."""
    first, second = points[triangles[:, 1]] - points[triangles[:, 0]], points[triangles[:, 2]] - points[triangles[:, 0]]
    return 0.5 * (first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0])


def _per_vertex(face: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``[N]`` sums over every vertex's triangles of ``values`` ``[F]`` (``face`` ``[3, F]``)."""
    return np.bincount(face.ravel(), weights=np.tile(values, len(face)), minlength=int(face.max()) + 1)


def conduction_matrices(pos: np.ndarray, face: np.ndarray,
                        conductivity: np.ndarray) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix, Any]:
    """scikit-fem's P1 stiffness ``K`` (conductivity ``[F]`` per triangle) and mass matrix ``M``, ``[N, N]``
    each, and the mesh; ``pos`` ``[N, 2]``, ``face`` ``[3, F]``."""
    fem = skfem()
    from skfem.helpers import dot, grad

    mesh = _mesh(pos, face)
    basis = fem.Basis(mesh, fem.ElementTriP1())

    @fem.BilinearForm
    def conduction(u, v, w):
        return w.k * dot(grad(u), grad(v))

    @fem.BilinearForm
    def mass(u, v, w):
        return u * v

    per_point = np.repeat(conductivity[:, None], basis.X.shape[-1], axis=1)
    return fem.asm(conduction, basis, k=per_point).tocsr(), fem.asm(mass, basis).tocsr(), mesh


def solve_temperature(pos: np.ndarray, face: np.ndarray, conductivity: np.ndarray, source: np.ndarray,
                      boundary: np.ndarray, boundary_temperature: np.ndarray) -> np.ndarray:
    """``[N]`` P1 temperatures (K) by scikit-fem: assembly, ``condense`` and ``solve``.

    Args:
        pos: ``[N, 2]`` vertices (m). face: ``[3, F]`` triangles. conductivity: ``[F]`` (W/(m·K)).
        source: ``[N]`` ``f`` at the vertices (W/m³). boundary: ``[N]`` bool, the Dirichlet vertices.
        boundary_temperature: ``[N]`` ``g`` (K; read at the boundary vertices only).
    """
    fem = skfem()
    stiffness, mass, _ = conduction_matrices(pos, face, conductivity)
    fixed = np.flatnonzero(boundary)
    return fem.solve(*fem.condense(stiffness, mass @ source, x=np.where(boundary, boundary_temperature, 0.0),
                                   D=fixed))


def boundary_loop(mesh: Any) -> np.ndarray:
    """``[B]`` the boundary vertices of a scikit-fem mesh of a simply connected domain, in order around it."""
    ends = mesh.facets[:, mesh.boundary_facets()]
    pairs = np.concatenate([ends, ends[::-1]], 1)
    pairs = pairs[:, np.argsort(pairs[0], kind="stable")]
    if not np.array_equal(pairs[0, ::2], pairs[0, 1::2]) or len(np.unique(pairs[0])) * 2 != pairs.shape[1]:
        raise ValueError("the mesh boundary is not one closed loop (every boundary vertex needs two boundary edges)")
    neighbours = dict(zip(pairs[0, ::2].tolist(), zip(pairs[1, ::2].tolist(), pairs[1, 1::2].tolist())))
    order, previous = [int(pairs[0, 0])], -1
    while len(order) < len(neighbours):
        first, second = neighbours[order[-1]]
        order.append(first if first != previous else second)
        previous = order[-2]
    if len(set(order)) != len(order):
        raise ValueError("the mesh boundary is not one closed loop (the domain has holes or pieces)")
    return np.asarray(order)


def boundary_interpolation(pos: np.ndarray, loop: np.ndarray, boundary_temperature: np.ndarray,
                           boundary: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """``[N]`` the boundary temperatures interpolated into the interior by mean value coordinates (Floater 2003).

    At an interior point ``x``, with ``v_i`` the boundary vertices in ``loop`` order, ``r_i = |v_i − x|``
    and ``α_i`` the angle at ``x`` from ``v_i`` to ``v_{i+1}``, the weights are
    ``w_i = (tan(α_{i−1}/2) + tan(α_i/2)) / r_i`` and the value ``Σ w_i g_i / Σ w_i``: a smooth
    interpolant, exact for linear boundary data, that solves no system. Boundary vertices keep ``g``.
    """
    corners, values = pos[loop], boundary_temperature[loop]
    result = boundary_temperature.astype(np.float64)
    inside = np.flatnonzero(~boundary)
    for start in range(0, len(inside), chunk):
        points = inside[start:start + chunk]
        to = corners[None] - pos[points, None]  # [P, B, 2]
        after = np.roll(to, -1, axis=1)
        length = np.linalg.norm(to, axis=2)
        cross = to[..., 0] * after[..., 1] - to[..., 1] * after[..., 0]
        # tan(α/2) = sin α / (1 + cos α): finite for interior points, also collinear with a boundary edge.
        half_angle = cross / (length * np.roll(length, -1, axis=1) + (to * after).sum(2))
        weight = (np.roll(half_angle, 1, axis=1) + half_angle) / length
        result[points] = weight @ values / weight.sum(1)
    return result


def heat_problem(num_vertices: int, kind: str, seed: int | tuple[int, ...], jitter: float = JITTER) -> Data:
    """One problem of about ``num_vertices`` vertices on domain ``kind`` with its P1 temperatures, as a graph.

    The fields depend on ``seed`` alone, so a finer mesh with the same seed samples the same
    problem; the mesh depends on ``seed`` and ``num_vertices``.
    """
    entropy = (seed,) if isinstance(seed, int) else tuple(seed)
    fields = np.random.default_rng((*entropy, 0))
    log_conductivity = FourierField.random(fields, CONDUCTIVITY_MODES, CONDUCTIVITY_FREQUENCY)
    boundary_field = FourierField.random(fields, BOUNDARY_MODES, BOUNDARY_FREQUENCY)
    source_field = FourierField.random(fields, SOURCE_MODES, SOURCE_FREQUENCY)
    points, triangles, boundary = grid_mesh(num_vertices, kind, np.random.default_rng((*entropy, 1, num_vertices)),
                                            jitter)
    conductivity = np.exp(LOG_CONDUCTIVITY_SIGMA * log_conductivity(points[triangles].mean(1)))
    source = SOURCE_SCALE * source_field(points)
    boundary_temperature = np.where(boundary, boundary_field(points), 0.0)
    temperature = solve_temperature(points, triangles.T, conductivity, source, boundary, boundary_temperature)
    return as_graph(points, triangles.T, conductivity, source, boundary, boundary_temperature, temperature)


def as_graph(pos: np.ndarray, face: np.ndarray, conductivity: np.ndarray, source: np.ndarray, boundary: np.ndarray,
             boundary_temperature: np.ndarray, temperature: np.ndarray) -> Data:
    """The graph of a solved problem (arguments as in :func:`solve_temperature`; ``temperature`` ``[N]``)."""
    stiffness, mass, mesh = conduction_matrices(pos, face, conductivity)
    facets, beside = mesh.facets, mesh.f2t  # [2, edges]: the edge's vertices; its triangles (−1: none)
    edge_conductivity = np.where(beside >= 0, conductivity[np.maximum(beside, 0)], 0).sum(0) / (beside >= 0).sum(0)
    edge_index = np.concatenate([facets, facets[::-1]], 1)
    source_node, target_node = edge_index
    diagonal = stiffness.diagonal()
    jacobi = -np.asarray(stiffness[target_node, source_node]).ravel() / diagonal[target_node]
    length = np.linalg.norm(pos[facets[0]] - pos[facets[1]], axis=1)
    edge_attr = np.stack([np.tile(length / length.mean(), 2), np.tile(np.log(edge_conductivity), 2), jacobi], 1)
    areas = np.abs(_triangle_areas(pos, face.T))
    around = _per_vertex(face, areas * conductivity) / _per_vertex(face, areas)
    guess = boundary_interpolation(pos, boundary_loop(mesh), boundary_temperature, boundary)
    x = np.column_stack([pos, boundary, boundary_temperature, guess, source / SOURCE_SCALE, np.log(around),
                         SWEEP_SCALE * (mass @ source) / diagonal])
    as_float = {"dtype": torch.float32}
    return Data(x=torch.as_tensor(x, **as_float), edge_index=torch.as_tensor(edge_index, dtype=torch.long),
                edge_attr=torch.as_tensor(edge_attr, **as_float),
                y=torch.as_tensor(temperature, **as_float).unsqueeze(1), pos=torch.as_tensor(pos),
                face=torch.as_tensor(face, dtype=torch.long), conductivity=torch.as_tensor(conductivity),
                source=torch.as_tensor(source), boundary=torch.as_tensor(boundary),
                boundary_temperature=torch.as_tensor(boundary_temperature))


def problem_arrays(graph: Data) -> tuple[np.ndarray, ...]:
    """``(pos, face, conductivity, source, boundary, boundary_temperature)`` of a graph or batch, as
    :func:`solve_temperature` takes them."""
    return tuple(getattr(graph, name).numpy() for name in ("pos", "face", "conductivity", "source", "boundary",
                                                           "boundary_temperature"))


def cgs_form(graph: Data) -> dict[str, Any]:
    """The P1 equations of ``graph`` as one contracting CGS system, set by hand (float64).

    At an interior vertex ``T_t = Σ_s (−K_ts / K_tt) T_s + F_t / K_tt`` (Jacobi), at a boundary
    vertex ``T_t = g_t``. Every row of ``K`` sums to 0, so ``K_tt = Σ_s −K_ts`` and, when ``K``
    is an M-matrix (no positive off-diagonal entry; so it is when no angle is obtuse, as with
    ``jitter=0``), this is
    the pressure equation of a pore network with conductances ``−K_ts`` and Dirichlet vertices;
    :func:`convergent.systems.porenet.cgs_form` rescales it into ``q = γ Ã q + W⁻¹ b``, whose
    fixed point is ``q = W⁻¹ T``.

    Returns:
        dict with ``edge_index`` ``[2, E']``, ``edge_weight`` ``[E']``, ``bias`` ``[N]``, ``gamma``
        and ``scale`` ``[N]`` (temperature ``T = scale · q``).

    Raises:
        ValueError: when ``K`` has positive off-diagonal entries (the Jacobi map has negative
            weights, so the system is not of CGS form).
    """
    pos, face, conductivity, source, boundary, boundary_temperature = problem_arrays(graph)
    stiffness, mass, _ = conduction_matrices(pos, face, conductivity)
    source_node, target_node = graph.edge_index.numpy()
    diagonal = stiffness.diagonal()
    coupling = -np.asarray(stiffness[target_node, source_node]).ravel()
    tolerance = ROUNDING * diagonal[target_node]
    worst = int(np.argmin(coupling / diagonal[target_node]))
    if coupling[worst] < -tolerance[worst]:
        raise ValueError(f"the stiffness matrix has positive off-diagonal entries (K[{target_node[worst]}, "
                         f"{source_node[worst]}] = {-coupling[worst]:.3g}: obtuse angles), so the Jacobi map has "
                         "negative weights and no CGS form; use a mesh without obtuse angles (jitter=0)")
    form = porenet.cgs_form(graph.edge_index, torch.as_tensor(np.where(coupling < tolerance, 0.0, coupling)),
                            inlet=graph.boundary, outlet=torch.zeros_like(graph.boundary))
    jacobi_bias = np.where(boundary, boundary_temperature, (mass @ source) / diagonal)
    return {**form, "bias": torch.as_tensor(jacobi_bias) / form["scale"]}


def _make(seed: int, index: int, num_vertices: int, jitter: float) -> dict[str, Tensor]:
    kind = KINDS[int(np.random.default_rng((seed, index)).integers(len(KINDS)))]
    graph = heat_problem(num_vertices, kind, (seed, index, 1), jitter)
    return {field: graph[field] for field in _FIELDS}


def heat_graphs(count: int, *, vertices: tuple[int, int] = (100, 400), seed: int = 0, jitter: float = JITTER,
                cache: Path | None = None, progress: bool = False) -> list[Data]:
    """``count`` problems with vertex counts drawn uniformly from ``[vertices[0], vertices[1])`` (about:
    the grid side is rounded) and random domains, seeded by ``(seed, index)``.

    With ``cache``, the graphs are stored there (tensors only) and reused when asked for with
    the same arguments.
    """
    if count < 1 or not 9 <= vertices[0] < vertices[1]:
        raise ValueError(f"need count ≥ 1 and 9 ≤ vertices[0] < vertices[1] (got {count}, {vertices})")
    key = {"count": count, "vertices": list(vertices), "seed": seed, "jitter": jitter, "version": 1}
    stored = load_entry(cache, key)
    if stored is not None:
        return [Data(**fields) for fields in stored["graphs"]]
    sizes = np.random.default_rng((seed, 2**32 - 1)).integers(vertices[0], vertices[1], count)
    made = [_make(seed, index, int(size), jitter)
            for index, size in enumerate(tqdm(sizes, desc="heat problems", disable=not progress, leave=False))]
    store_entry(cache, key, graphs=made)
    return [Data(**fields) for fields in made]


def solve_seconds(graph: Data) -> float:
    """Wall time of scikit-fem's assembly, ``condense`` and ``solve`` on ``graph``."""
    arrays = problem_arrays(graph)
    start = time.perf_counter()
    solve_temperature(*arrays)
    return time.perf_counter() - start
