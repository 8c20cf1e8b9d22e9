"""Exact TreeSHAP for the boosted champions, fast enough to explain every appointment of a horizon.

The values are the path-dependent TreeSHAP values that LightGBM (``predict(..., pred_contrib=True)``),
XGBoost (``predict(DMatrix, pred_contribs=True)``) and the ``shap`` package compute — the same numbers,
in log-odds of the uncalibrated model — but with a cheaper algorithm (the "Fast TreeSHAP v2" idea,
Yang 2021, taken further):

For a leaf l with value v, let U be the distinct features split on along its path, d = |U|. For a
feature f in U, r_f is the product of the cover fractions of the path's edges on f, and the row
*agrees* with f if it takes the path's direction at every node on f (A = the agreeing features). The
tree's expectation given a feature set S is a sum over leaves of products, so each leaf is a small
game over U whose Shapley values are, with G(B) = sum over S ⊆ B of |S|!(d-|S|-1)!/d! · prod_{B\\S} r:

* f in A:      v · (1 - r_f) · prod_{U\\A} r · G(A \\ {f})
* f not in A:  -v · prod_{U\\A} r · G(A)

They depend on the row only through A, so each leaf has a table of 2^d x d values (:func:`_leaf_table`).

**Subtree groups.** A leaf's mask follows from the mask at any node n above it (over the distinct
features of the path to n) and the row's decisions at the split nodes between n and the leaf. So the
sum of the tables of all leaves below n is one table indexed by (mask at n, decision bits of the s split
nodes of n's subtree), 2^(d_n + s) rows, whose columns are the path's features and the subtree's (built
from the leaves' tables, :meth:`_Builder._group`). Groups are chosen top-down: a subtree is one group
when its table has at most ``GROUP_ROWS`` rows, otherwise its children are tried (a leaf is always a
group). A row then costs, per tree: one decision per split node, agreement masks only on the edges
above the groups, and one table row per group, added feature by feature (one addition per column).

**Memory.** A model whose tables at GROUP_ROWS would exceed ``TABLE_BUDGET`` bytes gets smaller groups.
Smaller groups do not shrink the leaves' own tables (2^d x d each), and a large model's leaves alone can
need gigabytes (a LightGBM model of 600 trees x 128 leaves on the benchmark's data: 5.1 GB, most of it in
its leaves with 9-14 distinct path features); then its leaves with the most distinct path features get no
table and are computed row by row from the formulas above (O(d^2) per leaf and row; that model: 4.9 ms per
row within 64 MB, 2.4 ms within 1 GB, against 20 ms for LightGBM's own pred_contrib). Leaves with more
than ``MAX_TABLE_FEATURES`` distinct path features never get a table.

**Kernel.** Compiled with numba (cached on disk), it runs blocks of ``BLOCK_ROWS`` rows in parallel and,
inside a block, each step as a loop over the block's rows. Decisions are bytes, computed by one loop per
kind of split (value <= threshold; not value > threshold, which sends NaN left; LightGBM's missing type
Zero), so the missing-value rules of each library are resolved when the tables are built; a tree's
categorical splits on one feature are decided up to 64 at a time with one 64-bit word looked up per row
(bit b: the direction of split b for that category). A group's table row is a uint32 per row; a tree's
terms are added feature by feature, up to four groups per pass over the rows, so each feature's sum is
read and written once per tree.

**Measured** (the benchmark champion: LightGBM, 400 trees of 31 leaves, 50 features; 100,000 rows of its
input matrix; one thread, the least of 3 runs; a shared 2-core Sapphire Rapids VM, load average 0.3-0.9)::

    tables = from_lightgbm(model.learner.model.booster_)      # model: the pickled NoShowModel
    tables.contributions(X[:100_000], threads=1)              # X: its input matrix (``_coded``)

3,105 groups add 12,395 table values per row (leaf tables with sibling pairs: 8,822 groups, 32,981
values); 6.7 M numbers (51 MB, 2.0 M before) built in 0.8 s (1.2 s); 7.3-8.1 us of CPU per row instead of
31.1-32.9 (both, in turn, at four times; 1M rows on 2 threads: 4.1 s instead of 15.9). Compiling the
kernel takes about 10 s once per environment (numba's disk cache). Where it goes (the kernel cut after
each step, 8.0 us in all): reading the block 0.25, numeric decisions 0.65, categorical 0.85, masks 0.6,
table rows 1.0, additions 4.7. GROUP_ROWS by measurement (same runs, in turn, load average 1.6-1.8): 256
rows 10.5 us (21 MB), 1024 9.1 (33 MB), 2048 8.6 (51 MB), 4096 8.6 (88 MB), 8192 8.8 (149 MB): beyond 2048
rows fewer additions are offset by tables that no longer stay in cache. Tables of float32 would differ
from LightGBM's values by 1e-7 (the tests ask 1e-9): float64.

**Saved.** The tables are built at training and logged with the model (:meth:`ModelExplainer.save`, a
compressed ``.npz``); scoring reads them (:meth:`ModelExplainer.load`, which refuses the tables of another
model, another format or another set of members: the caller then builds them).

Models: LightGBM and XGBoost binary classifiers, scikit-learn trees and forests (numeric and
categorical splits, missing values as the libraries route them; LightGBM reads any |x| <= float32(1e-35)
as 0). The tests check every value against the libraries' own ``pred_contrib``, against the ``shap``
package and against Shapley values from their definition, at several group limits and without tables;
at run time :mod:`scoring.stage` checks the probabilities from each batch's sums against
``pyfunc.predict`` and scores a batch that differs by the pyfunc and the model's own contributions.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numba
import numpy as np

log = logging.getLogger(__name__)

#: node flags: a categorical split (bitset of categories); its listed categories go right (XGBoost) rather
#: than left (LightGBM); missing values go left; NaN is missing; zero is missing (LightGBM "Zero")
FLAG_CATEGORICAL, FLAG_LISTED_RIGHT, FLAG_DEFAULT_LEFT, FLAG_MISSING_NAN, FLAG_MISSING_ZERO = 1, 2, 4, 8, 16
#: leaves whose path has more distinct features than this are refused (their agreement masks are int32)
MAX_PATH_FEATURES = 30
#: leaves with more distinct path features than this (table 2^d x d) are computed without a table
MAX_TABLE_FEATURES = 20
#: a subtree becomes one group when its table has at most this many rows (2^(path features + splits))
GROUP_ROWS = 2048
#: the most bytes of tables per model: a model whose groups at GROUP_ROWS would need more gets smaller groups,
#: and if its leaves' own tables need more, its leaves with the most distinct path features get none (see
#: :meth:`_Builder._plan`)
TABLE_BUDGET = 64 << 20
#: rows per parallel work item (the tables of one tree stay in cache across them)
BLOCK_ROWS = 1024
#: format of the tables :meth:`ModelExplainer.save` writes; a file of another format is not read (rebuilt)
SAVED_FORMAT = 1
#: LightGBM's kZeroThreshold (``const double kZeroThreshold = 1e-35f``: the float, widened)
ZERO_THRESHOLD = float(np.float32(1e-35))
#: kinds of split nodes, each decided by its own loop: value <= threshold (NaN right); not value > threshold
#: (NaN left); LightGBM missing type Zero (NaN and |value| <= ZERO_THRESHOLD go the default way); categorical
KIND_LE, KIND_NGT, KIND_ZERO, KIND_CAT = range(4)
#: a tree's categorical splits on one feature are decided 64 at a time: one lookup of a 64-bit word per row


@dataclass
class TreeTables:
    """A tree ensemble flattened into arrays, with the SHAP tables of its groups.

    Per tree t: its split nodes ``[kind_start[t, 0], kind_start[t, 4])``, sorted by kind (the nodes of kind
    k are ``[kind_start[t, k], kind_start[t, k + 1])``); node i of the tree has decision slot
    ``i - kind_start[t, 0]`` (1 = the row goes left). Its categorical splits, sorted by feature, form chunks
    ``[chunk_start[t], chunk_start[t + 1])`` of at most 64 splits on one feature: per position of the
    feature's value a word whose bit b is the direction of the chunk's split b. Its edges
    ``[edge_start[t], edge_start[t + 1])``, in pre-order, lead from the root to the roots of its groups: each
    computes the agreement mask of its child (a mask slot; the root's is 0) from its parent's. Its groups
    ``[group_start[t], group_start[t + 1])``: a group is a subtree (or a leaf) whose table row is the agreement
    mask at its root followed by the decision bits of its split nodes (``group_bits``, in order). A row's
    values are added feature by feature: the tree's sums ``[sum_start[t], sum_start[t + 1])``, each the
    terms ``[term_start[u], term_start[u + 1])`` (a group of the tree and a column of its table) that add to
    feature ``sum_feature[u]``. Its leaves without a table ``[direct_start[t], direct_start[t + 1])`` (only
    when a model's tables would exceed the budget) are computed row by row from the mask at the leaf."""

    n_features: int
    bias: float                  # base margin + every tree's expected value
    group_rows: int              # the group limit the tables were built with
    max_nodes: int               # the most split nodes of a tree
    max_masks: int               # the most mask slots of a tree
    max_groups: int              # the most groups of a tree
    kind_start: np.ndarray       # int64 [trees, 5]
    node_feature: np.ndarray     # int64 feature (numeric kinds)
    node_threshold: np.ndarray   # float64: value <= threshold goes left (numeric kinds)
    node_default: np.ndarray     # int64 KIND_ZERO: 1 if the default direction is left
    cat_feature: np.ndarray      # int64 the categorical features
    cat_size: np.ndarray         # int64 per categorical feature: 1 + the largest category any split lists
    chunk_start: np.ndarray      # int64 [trees + 1]
    chunk_cat: np.ndarray        # int64 the chunk's feature (its row of cat_feature)
    chunk_slot: np.ndarray       # int64 decision slot of the chunk's first split
    chunk_count: np.ndarray      # int64 splits in the chunk
    chunk_offset: np.ndarray     # int64 into words
    words: np.ndarray            # int64 per chunk and position (a category 0..size-1, then size: another or
                                 # an invalid one, then size + 1: missing), bit b = 1 if split b goes left
    edge_start: np.ndarray       # int64 [trees + 1]
    edge_parent: np.ndarray      # int64 mask slot of the parent
    edge_child: np.ndarray       # int64 mask slot of the child
    edge_node: np.ndarray        # int64 decision slot of the parent
    edge_bit: np.ndarray         # int64 bit of the parent's feature in the path's feature numbering
    edge_code: np.ndarray        # int64 2 * (feature met before on the path) + (edge is the right branch)
    group_start: np.ndarray      # int64 [trees + 1]
    group_mask: np.ndarray       # int64 mask slot of the group's root
    group_bit_start: np.ndarray  # int64 [groups + 1] into group_bits
    group_bits: np.ndarray       # int64 decision slots of the group's split nodes (pre-order)
    group_width: np.ndarray      # int64 columns of the group's table
    sum_start: np.ndarray        # int64 [trees + 1]
    sum_feature: np.ndarray      # int64
    term_start: np.ndarray       # int64 [sums + 1]
    term_group: np.ndarray       # int64 the group, numbered within its tree
    term_offset: np.ndarray      # int64 into tables: the group's table + the feature's column
    direct_start: np.ndarray     # int64 [trees + 1]
    direct_mask: np.ndarray      # int64 mask slot of the leaf
    direct_value: np.ndarray     # float64 the leaf's value
    direct_feat_start: np.ndarray  # int64 [direct leaves + 1] into the three below
    direct_feats: np.ndarray     # int64 the leaf's distinct path features, in path order
    direct_ratio: np.ndarray     # float64 r of each (the product of its edges' cover fractions)
    direct_weight: np.ndarray    # float64 the Shapley weights k!(d-k-1)!/d!, k = 0..d-1
    tables: np.ndarray           # float64, per group (2^(path features + splits), columns) row-major
    float32_inputs: bool         # XGBoost and scikit-learn compare float32 values
    tiny_is_zero: bool = False   # LightGBM reads an input with |value| <= ZERO_THRESHOLD as 0

    @property
    def n_trees(self) -> int:
        return len(self.edge_start) - 1

    def contributions(self, X: np.ndarray, threads: int = 0) -> np.ndarray:
        """SHAP values, shape (n, n_features + 1): one column per feature, the last is the bias.
        ``threads``: 0 = numba's default (every core)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} feature columns, got {X.shape}")
        if self.float32_inputs:
            X = X.astype(np.float32).astype(np.float64)
        out = np.zeros((X.shape[0], self.n_features + 1))
        if X.shape[0]:
            previous = numba.get_num_threads()
            if threads:
                numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            try:
                _kernel(X, out, self.max_nodes, self.max_masks, self.kind_start, self.node_feature,
                        self.node_threshold, self.node_default, self.cat_feature, self.cat_size, self.chunk_start,
                        self.chunk_cat, self.chunk_slot, self.chunk_count, self.chunk_offset, self.words,
                        self.edge_start, self.edge_parent, self.edge_child, self.edge_node, self.edge_bit,
                        self.edge_code, self.group_start, self.group_mask, self.group_bit_start, self.group_bits,
                        self.group_width, self.max_groups, self.sum_start, self.sum_feature, self.term_start,
                        self.term_group, self.term_offset, self.tables, self.direct_start, self.direct_mask,
                        self.direct_value, self.direct_feat_start, self.direct_feats, self.direct_ratio,
                        self.direct_weight, self.tiny_is_zero, BLOCK_ROWS)
            finally:
                numba.set_num_threads(previous)
        out[:, -1] = self.bias
        return out


# --------------------------------------------------------------------------------------------------
# building the tables


@dataclass
class Split:
    feature: int
    threshold: float             # numeric: value <= threshold goes left
    flags: int
    categories: list[int] | None
    left: int                    # index of the child node in the tree's node list
    right: int
    cover: float


@dataclass
class Leaf:
    value: float
    cover: float


class _Tree:
    """A tree's nodes (the root first) and, per node, its subtree's split nodes in pre-order, its distinct
    features in the order a pre-order walk meets them, and the most distinct path features of a leaf below."""

    def __init__(self, nodes: list[Split | Leaf]) -> None:
        self.nodes = nodes
        order, stack = [], [0]
        while stack:
            i = stack.pop()
            order.append(i)
            node = nodes[i]
            if isinstance(node, Split):
                stack += [node.right, node.left]
        self.splits: dict[int, list[int]] = {}
        self.features: dict[int, list[int]] = {}
        self.deepest: dict[int, int] = {}
        path_features = {0: frozenset()}
        for i in order:
            node = nodes[i]
            if isinstance(node, Split):
                path_features[node.left] = path_features[node.right] = path_features[i] | {node.feature}
        for i in reversed(order):
            node = nodes[i]
            if isinstance(node, Leaf):
                self.splits[i], self.features[i] = [], []
                self.deepest[i] = len(path_features[i])
            else:
                self.splits[i] = [i, *self.splits[node.left], *self.splits[node.right]]
                self.features[i] = list(dict.fromkeys(
                    [node.feature, *self.features[node.left], *self.features[node.right]]))
                self.deepest[i] = max(self.deepest[node.left], self.deepest[node.right])
        self.leaf_features = [self.deepest[i] for i in order if isinstance(nodes[i], Leaf)]

    def is_group(self, i: int, path_features: int, limit: int, table_features: int) -> bool:
        """Whether node i (the path to it meets ``path_features`` distinct features) is a group: a leaf with at
        most ``table_features`` of them, or a subtree whose table has at most ``limit`` rows and no leaf with
        more. (A leaf that is not a group is computed without a table.)"""
        if isinstance(self.nodes[i], Leaf):
            return path_features <= table_features
        return (1 << (path_features + len(self.splits[i]))) <= limit and self.deepest[i] <= table_features

    def table_size(self, limit: int, table_features: int) -> int:
        """Numbers in the tables of this tree's groups (top-down: the first node that is a group)."""
        total, stack = 0, [(0, ())]
        while stack:
            i, path = stack.pop()
            node = self.nodes[i]
            if self.is_group(i, len(path), limit, table_features):
                total += (1 << (len(path) + len(self.splits[i]))) * len(set(path).union(self.features[i]))
            elif isinstance(node, Split):
                below = path if node.feature in path else (*path, node.feature)
                stack += [(node.right, below), (node.left, below)]
        return total


class _Builder:
    """Collects trees (lists of Split / Leaf nodes, the root first), groups and flattens them.

    ``group_rows``: the group limit (None: chosen by :meth:`_plan` so that the tables fit in ``table_budget``
    bytes, default TABLE_BUDGET)."""

    def __init__(self, n_features: int, float32_inputs: bool, group_rows: int | None = None,
                 table_budget: int | None = None, tiny_is_zero: bool = False) -> None:
        self.n_features = n_features
        self.float32_inputs = float32_inputs
        self.tiny_is_zero = tiny_is_zero
        self.group_rows = group_rows
        self.table_budget = table_budget
        self.trees: list[_Tree | None] = []   # None: a constant tree
        self.expected = 0.0

    def add_tree(self, nodes: list[Split | Leaf]) -> None:
        if isinstance(nodes[0], Leaf):  # a constant tree: only the bias
            self.expected += nodes[0].value
            self.trees.append(None)
            return
        tree = _Tree(nodes)
        if tree.deepest[0] > MAX_PATH_FEATURES:
            raise ValueError(f"a leaf's path splits on {tree.deepest[0]} distinct features (more than "
                             f"{MAX_PATH_FEATURES}): its agreement mask would not fit in 32 bits")
        self.trees.append(tree)

    def _plan(self) -> tuple[int, int]:
        """The group limit and the most distinct path features of a leaf with a table. Explicit ``group_rows``:
        it, every leaf a table (up to MAX_TABLE_FEATURES). Otherwise the largest power of two up to GROUP_ROWS
        whose tables fit in the budget; if even the leaves' own tables do not fit (groups of 1 row: every leaf
        its own table), the leaves with the most distinct path features go without one until they do."""
        if self.group_rows is not None:
            return self.group_rows, MAX_TABLE_FEATURES
        trees = [t for t in self.trees if t is not None]
        budget_bytes = TABLE_BUDGET if self.table_budget is None else self.table_budget
        budget = budget_bytes // 8
        leaves = np.bincount([d for t in trees for d in t.leaf_features], minlength=MAX_PATH_FEATURES + 1)
        numbers = leaves * (1 << np.arange(len(leaves), dtype=np.int64)) * np.arange(len(leaves))
        table_features = MAX_TABLE_FEATURES
        while table_features > 0 and numbers[:table_features + 1].sum() > budget:
            table_features -= 1
        without = int(leaves[table_features + 1:].sum())
        if without:
            log.warning("the SHAP tables of this model's leaves alone would need %.0f MB (budget %.0f MB): its %d "
                        "leaves with more than %d distinct path features are computed without tables (slower)",
                        numbers.sum() * 8 / 2**20, budget_bytes / 2**20, without, table_features)
        limit = GROUP_ROWS
        while limit > 1 and sum(t.table_size(limit, table_features) for t in trees) > budget:
            limit //= 2
        if limit < GROUP_ROWS:
            log.info("SHAP tables with groups of at most %d rows (those of %d would exceed %.0f MB)", limit,
                     GROUP_ROWS, budget_bytes / 2**20)
        return limit, table_features

    def build(self, base_margin: float) -> TreeTables:
        limit, table_features = self._plan()
        splits = [n for t in self.trees if t is not None for n in t.nodes if isinstance(n, Split)]
        # categorical features: positions 0..size-1 (a category), size (another), size + 1 (missing)
        cat_size: dict[int, int] = {}
        for n in splits:
            if n.categories is not None:
                cat_size[n.feature] = max(cat_size.get(n.feature, 1),
                                          max([int(c) + 1 for c in n.categories if int(c) >= 0], default=1))
        cat_feature = sorted(cat_size)
        cat_row = {f: q for q, f in enumerate(cat_feature)}
        a: dict[str, list] = {name: [] for name in (
            "node_feature", "node_threshold", "node_default", "chunk_cat", "chunk_slot", "chunk_count",
            "chunk_offset", "edge_parent", "edge_child", "edge_node", "edge_bit", "edge_code", "group_mask",
            "group_bits", "group_width", "sum_feature", "term_group", "term_offset", "direct_mask", "direct_value",
            "direct_feats", "direct_ratio", "direct_weight")}
        words: list[np.ndarray] = []
        n_words = 0
        kind_start, chunk_start, edge_start, group_start = [], [0], [0], [0]
        group_bit_start, sum_start, term_start, direct_start, direct_feat_start = [0], [0], [0], [0], [0]
        tables: list[np.ndarray] = []
        n_numbers = 0
        max_nodes = max_masks = max_groups = 1
        for tree in self.trees:
            first = len(a["node_feature"])
            if tree is None:
                kind_start.append([first] * 5)
                for start in (chunk_start, edge_start, group_start, sum_start, direct_start):
                    start.append(start[-1])
                continue
            nodes = tree.nodes
            kinds = {i: _kind(nodes[i]) for i in tree.splits[0]}
            # by kind, categorical ones by feature (stable: pre-order within each)
            order = sorted(tree.splits[0], key=lambda i: (kinds[i], nodes[i].feature if kinds[i] == KIND_CAT else 0))
            slot = {i: k for k, i in enumerate(order)}
            max_nodes = max(max_nodes, len(order))
            kind_start.append([first + sum(kinds[i] < k for i in order) for k in range(4)] + [first + len(order)])
            for i in order:
                n = nodes[i]
                a["node_feature"].append(n.feature)
                a["node_threshold"].append(n.threshold)
                a["node_default"].append(int(bool(n.flags & FLAG_DEFAULT_LEFT)))
            categorical = [i for i in order if kinds[i] == KIND_CAT]
            for k, i in enumerate(categorical):
                if k % 64 and nodes[i].feature == nodes[categorical[k - 1]].feature and a["chunk_count"][-1] < 64:
                    a["chunk_count"][-1] += 1
                    b = np.uint64(a["chunk_count"][-1] - 1)
                else:                                   # a new chunk
                    a["chunk_cat"].append(cat_row[nodes[i].feature])
                    a["chunk_slot"].append(slot[i])
                    a["chunk_count"].append(1)
                    a["chunk_offset"].append(n_words)
                    words.append(np.zeros(cat_size[nodes[i].feature] + 2, dtype=np.uint64))
                    n_words += len(words[-1])
                    b = np.uint64(0)
                words[-1] |= _directions(nodes[i], cat_size[nodes[i].feature]).astype(np.uint64) << b
            chunk_start.append(len(a["chunk_cat"]))
            total = nodes[0].cover
            # from the root down to the group roots: (node, distinct path features, their cover fractions,
            # mask slot)
            stack: list[tuple[int, list[int], list[float], int]] = [(0, [], [], 0)]
            n_masks = 1
            terms: dict[int, list[tuple[int, int]]] = {}   # feature: (group in the tree, offset of its column)
            while stack:
                i, feats, ratios, mask_slot = stack.pop()
                node = nodes[i]
                if isinstance(node, Leaf) and not tree.is_group(i, len(feats), limit, table_features):
                    d = len(feats)                      # a leaf without a table
                    a["direct_mask"].append(mask_slot)
                    a["direct_value"].append(node.value)
                    a["direct_feats"] += feats
                    a["direct_ratio"] += ratios
                    a["direct_weight"] += [math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d)
                                           for k in range(d)]
                    direct_feat_start.append(len(a["direct_feats"]))
                    self.expected += node.value * _fraction(node.cover, total)
                    continue
                if tree.is_group(i, len(feats), limit, table_features):
                    table, columns = self._group(tree, i, feats, ratios, total)
                    for j, f in enumerate(columns):
                        terms.setdefault(f, []).append((len(a["group_mask"]) - group_start[-1], n_numbers + j))
                    a["group_mask"].append(mask_slot)
                    a["group_bits"] += [slot[k] for k in tree.splits[i]]
                    a["group_width"].append(len(columns))
                    group_bit_start.append(len(a["group_bits"]))
                    tables.append(table.ravel())
                    n_numbers += table.size
                    continue
                new = node.feature not in feats
                bit = len(feats) if new else feats.index(node.feature)
                below = [*feats, node.feature] if new else feats
                for child, right in ((node.right, 1), (node.left, 0)):
                    fraction = _fraction(nodes[child].cover, node.cover)
                    child_ratios = [*ratios, fraction] if new else [
                        r * fraction if k == bit else r for k, r in enumerate(ratios)]
                    a["edge_parent"].append(mask_slot)
                    a["edge_child"].append(n_masks)
                    a["edge_node"].append(slot[i])
                    a["edge_bit"].append(bit)
                    a["edge_code"].append(2 * (not new) + right)
                    stack.append((child, below, child_ratios, n_masks))
                    n_masks += 1
            max_masks = max(max_masks, n_masks)
            max_groups = max(max_groups, len(a["group_mask"]) - group_start[-1])
            edge_start.append(len(a["edge_parent"]))
            group_start.append(len(a["group_mask"]))
            for f in sorted(terms):
                a["sum_feature"].append(f)
                a["term_group"] += [g for g, _ in terms[f]]
                a["term_offset"] += [offset for _, offset in terms[f]]
                term_start.append(len(a["term_group"]))
            sum_start.append(len(a["sum_feature"]))
            direct_start.append(len(a["direct_mask"]))

        def i64(values) -> np.ndarray:
            return np.asarray(values, dtype=np.int64).reshape(-1)

        return TreeTables(
            n_features=self.n_features, bias=float(base_margin + self.expected), group_rows=limit,
            max_nodes=max_nodes, max_masks=max_masks, max_groups=max_groups,
            kind_start=np.asarray(kind_start, dtype=np.int64).reshape(-1, 5),
            node_feature=i64(a["node_feature"]),
            node_threshold=np.asarray(a["node_threshold"], dtype=np.float64).reshape(-1),
            node_default=i64(a["node_default"]), cat_feature=i64(cat_feature),
            cat_size=i64([cat_size[f] for f in cat_feature]), chunk_start=i64(chunk_start),
            chunk_cat=i64(a["chunk_cat"]), chunk_slot=i64(a["chunk_slot"]), chunk_count=i64(a["chunk_count"]),
            chunk_offset=i64(a["chunk_offset"]),
            words=np.concatenate(words).view(np.int64) if words else np.zeros(1, dtype=np.int64),
            edge_start=i64(edge_start), edge_parent=i64(a["edge_parent"]), edge_child=i64(a["edge_child"]),
            edge_node=i64(a["edge_node"]), edge_bit=i64(a["edge_bit"]), edge_code=i64(a["edge_code"]),
            group_start=i64(group_start), group_mask=i64(a["group_mask"]), group_bit_start=i64(group_bit_start),
            group_bits=i64(a["group_bits"]), group_width=i64(a["group_width"]), sum_start=i64(sum_start),
            sum_feature=i64(a["sum_feature"]), term_start=i64(term_start), term_group=i64(a["term_group"]),
            term_offset=i64(a["term_offset"]), direct_start=i64(direct_start), direct_mask=i64(a["direct_mask"]),
            direct_value=np.asarray(a["direct_value"], dtype=np.float64),
            direct_feat_start=i64(direct_feat_start), direct_feats=i64(a["direct_feats"]),
            direct_ratio=np.asarray(a["direct_ratio"], dtype=np.float64),
            direct_weight=np.asarray(a["direct_weight"], dtype=np.float64),
            tables=np.concatenate(tables) if tables else np.zeros(0), float32_inputs=self.float32_inputs,
            tiny_is_zero=self.tiny_is_zero,
        )

    def _group(self, tree: _Tree, root: int, feats: list[int], ratios: list[float],
               total: float) -> tuple[np.ndarray, list[int]]:
        """The table of the group rooted at ``root`` (the path to it meets ``feats`` with cover fractions
        ``ratios``): the sum over its leaves of each leaf's table at the leaf's agreement mask, which follows
        from the row's mask at the root and its decisions at the group's split nodes. Also adds the leaves'
        expected values to the bias."""
        nodes = tree.nodes
        inner = tree.splits[root]
        s = len(inner)
        columns = list(dict.fromkeys([*feats, *tree.features[root]]))
        position = {f: j for j, f in enumerate(columns)}
        rows = np.arange(1 << (len(feats) + s), dtype=np.int64)
        goes_left = {k: (rows >> (s - 1 - q)) & 1 for q, k in enumerate(inner)}
        table = np.zeros((len(rows), len(columns)))
        stack: list[tuple[int, list[int], list[float], np.ndarray]] = [(root, feats, ratios, rows >> s)]
        while stack:
            i, path, r, mask = stack.pop()
            node = nodes[i]
            if isinstance(node, Leaf):
                if path:
                    _add_rows(table, np.array([position[f] for f in path], dtype=np.int64),
                              _leaf_table(node.value, np.array(r)), mask)
                self.expected += node.value * _fraction(node.cover, total)
                continue
            new = node.feature not in path
            bit = len(path) if new else path.index(node.feature)
            below = [*path, node.feature] if new else path
            go = goes_left[i]
            for child, agree in ((node.right, 1 - go), (node.left, go)):
                fraction = _fraction(nodes[child].cover, node.cover)
                child_r = [*r, fraction] if new else [x * fraction if k == bit else x for k, x in enumerate(r)]
                child_mask = mask | (agree << bit) if new else mask & ~((1 - agree) << bit)
                stack.append((child, below, child_r, child_mask))
        return table, columns


def _kind(node: Split) -> int:
    if node.categories is not None:
        return KIND_CAT
    if node.flags & FLAG_MISSING_ZERO:
        return KIND_ZERO
    # NaN goes the default way (NaN is missing), or as a zero would (LightGBM missing type None)
    nan_left = bool(node.flags & FLAG_DEFAULT_LEFT) if node.flags & FLAG_MISSING_NAN else node.threshold >= 0.0
    return KIND_NGT if nan_left else KIND_LE


def _directions(node: Split, size: int) -> np.ndarray:
    """A categorical split's direction (True = left) for positions 0..size + 1 (see TreeTables.words)."""
    listed = np.zeros(size + 2, dtype=bool)
    listed[[int(c) for c in node.categories if 0 <= int(c) < size]] = True
    lut = listed != bool(node.flags & FLAG_LISTED_RIGHT)     # position `size`: not listed (or invalid)
    if node.flags & FLAG_MISSING_NAN:                          # position size + 1: a missing value
        lut[size + 1] = bool(node.flags & FLAG_DEFAULT_LEFT)
    return lut


def _leaf_table(value: float, r: np.ndarray) -> np.ndarray:
    """Table (2^d, d) of one leaf: row ``mask`` (bit j = the row agrees with feature j of the path) holds
    the SHAP value of each of the leaf's d features."""
    d = len(r)
    if d == 0:
        return np.zeros((1, 0))
    w = np.array([math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d) for k in range(d)])
    return _leaf_table_of(float(value), np.asarray(r, dtype=np.float64), w)


@numba.njit(cache=True, nogil=True)
def _leaf_table_of(value, r, w):
    """:func:`_leaf_table` with the Shapley weights w(k) = k!(d-k-1)!/d!, mask by mask: a mask's elementary
    symmetric polynomials of its features' r are those of the mask without its highest feature times
    (1 + r_h x)."""
    d = r.shape[0]
    n = 1 << d
    e = np.zeros((n, d + 1))
    e[0, 0] = 1.0
    size = np.zeros(n, dtype=np.int64)
    high = 0
    for mask in range(1, n):
        if mask >= 2 << high:
            high += 1
        below = mask ^ (1 << high)
        size[mask] = size[below] + 1
        rh = r[high]
        e[mask, 0] = e[below, 0]
        for i in range(1, d + 1):
            e[mask, i] = e[below, i] + rh * e[below, i - 1]
    # G(B) = sum_k w(k) e_{|B|-k}(r_B); only needed for |B| < d (B never holds every feature)
    g = np.zeros(n)
    for mask in range(n):
        total = 0.0
        for k in range(min(d - 1, size[mask]) + 1):
            total += w[k] * e[mask, size[mask] - k]
        g[mask] = total
    table = np.empty((n, d))
    for mask in range(n):
        r_out = 1.0                                                          # product over U \\ A
        for j in range(d):
            if not (mask >> j) & 1:
                r_out *= r[j]
        for j in range(d):
            if (mask >> j) & 1:
                table[mask, j] = value * (1.0 - r[j]) * r_out * g[mask & ~(1 << j)]
            else:
                table[mask, j] = -value * r_out * g[mask]
    return table


@numba.njit(cache=True, nogil=True)
def _add_rows(table, columns, leaf, mask):
    """table[i, columns] += leaf[mask[i]] for every row i."""
    for i in range(mask.shape[0]):
        source = leaf[mask[i]]
        target = table[i]
        for j in range(columns.shape[0]):
            target[columns[j]] += source[j]


def _fraction(child: float, parent: float) -> float:
    return child / parent if parent > 0 else 0.0


def from_lightgbm(booster, group_rows: int | None = None, table_budget: int | None = None) -> TreeTables:
    """Tables of a LightGBM binary model (``lightgbm.Booster``); cover = the training rows of a node."""
    dump = booster.dump_model()
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise ValueError("only single-output LightGBM models are supported")
    # LightGBM keeps a row's values as (feature, value) pairs without those within ZERO_THRESHOLD of zero
    builder = _Builder(int(dump["max_feature_idx"]) + 1, float32_inputs=False, group_rows=group_rows,
                       table_budget=table_budget, tiny_is_zero=True)
    missing_flags = {"None": 0, "Zero": FLAG_MISSING_ZERO, "NaN": FLAG_MISSING_NAN}
    for tree in dump["tree_info"]:
        nodes: list[Split | Leaf | None] = []

        def add(node: dict, nodes: list = nodes) -> int:
            index = len(nodes)
            nodes.append(None)
            if "split_index" not in node:
                nodes[index] = Leaf(float(node["leaf_value"]), float(node.get("leaf_count", 1.0)))
                return index
            if node["decision_type"] == "==":  # listed categories go left; NaN and negatives right
                threshold, flags = 0.0, FLAG_CATEGORICAL
                cats = [int(c) for c in str(node["threshold"]).split("||")]
            elif node["decision_type"] == "<=":  # NaN counts as 0 unless the missing type is NaN
                threshold, cats = float(node["threshold"]), None
                flags = missing_flags[node["missing_type"]] | (FLAG_DEFAULT_LEFT if node["default_left"] else 0)
            else:
                raise ValueError(f"unsupported LightGBM decision type {node['decision_type']!r}")
            left = add(node["left_child"])
            right = add(node["right_child"])
            nodes[index] = Split(int(node["split_feature"]), threshold, flags, cats, left, right,
                                 float(node["internal_count"]))
            return index

        add(tree["tree_structure"])
        builder.add_tree(nodes)
    return builder.build(0.0)


def from_xgboost(booster, group_rows: int | None = None, table_budget: int | None = None) -> TreeTables:
    """Tables of an XGBoost binary model (``xgboost.Booster``, gbtree); cover = the hessian sum."""
    model = json.loads(bytes(booster.save_raw("json")))
    learner = model["learner"]
    gbm = learner["gradient_booster"]
    if gbm.get("name") != "gbtree":
        raise ValueError(f"only gbtree XGBoost models are supported, not {gbm.get('name')!r}")
    params = learner["learner_model_param"]
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) > 1:
        raise ValueError("only single-output XGBoost models are supported")
    base = float(str(params["base_score"]).strip("[]"))
    objective = learner["objective"]["name"]
    if objective in ("binary:logistic", "reg:logistic"):
        base_margin = math.log(base / (1 - base))
    elif objective in ("binary:logitraw", "reg:squarederror"):
        base_margin = base
    else:
        raise ValueError(f"unsupported XGBoost objective {objective!r}")
    builder = _Builder(int(params["num_feature"]), float32_inputs=True, group_rows=group_rows,
                       table_budget=table_budget)
    for tree in gbm["model"]["trees"]:
        left, right = tree["left_children"], tree["right_children"]
        cover = tree["sum_hessian"]
        cond = np.asarray(tree["split_conditions"], dtype=np.float32).astype(np.float64)
        cats = {}
        for node, start, size in zip(tree.get("categories_nodes", []), tree.get("categories_segments", []),
                                     tree.get("categories_sizes", []), strict=True):
            cats[int(node)] = tree["categories"][int(start): int(start) + int(size)]
        nodes: list[Split | Leaf] = []
        for k in range(len(left)):
            if left[k] == -1:
                nodes.append(Leaf(float(cond[k]), float(cover[k])))
                continue
            flags = FLAG_MISSING_NAN | (FLAG_DEFAULT_LEFT if tree["default_left"][k] else 0)
            if int(tree["split_type"][k]) == 1:  # listed categories go right, the others (and invalid ones) left
                nodes.append(Split(int(tree["split_indices"][k]), 0.0, flags | FLAG_CATEGORICAL | FLAG_LISTED_RIGHT,
                                   cats.get(k, []), int(left[k]), int(right[k]), float(cover[k])))
            else:  # value < condition (float32) is value <= the float64 just below it
                nodes.append(Split(int(tree["split_indices"][k]), float(np.nextafter(cond[k], -np.inf)), flags,
                                   None, int(left[k]), int(right[k]), float(cover[k])))
        builder.add_tree(nodes)
    return builder.build(base_margin)


def from_sklearn(estimator, group_rows: int | None = None, table_budget: int | None = None) -> TreeTables:
    """Tables of a scikit-learn binary ``DecisionTreeClassifier`` or ``RandomForestClassifier``: values in
    probability of the second class (a forest averages its trees); cover = weighted training samples."""
    trees = [e.tree_ for e in estimator.estimators_] if hasattr(estimator, "estimators_") else [estimator.tree_]
    if len(getattr(estimator, "classes_", [0, 1])) != 2:
        raise ValueError("only binary scikit-learn classifiers are supported")
    builder = _Builder(int(estimator.n_features_in_), float32_inputs=True,   # scikit-learn compares float32
                       group_rows=group_rows, table_budget=table_budget)
    for tree in trees:
        value = tree.value[:, 0, :]
        share = value[:, 1] / np.maximum(value.sum(axis=1), 1e-300) / len(trees)
        missing_left = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=np.uint8))
        nodes: list[Split | Leaf] = []
        for k in range(tree.node_count):
            cover = float(tree.weighted_n_node_samples[k])
            if tree.children_left[k] == -1:
                nodes.append(Leaf(float(share[k]), cover))
            else:
                flags = FLAG_MISSING_NAN | (FLAG_DEFAULT_LEFT if missing_left[k] else 0)
                nodes.append(Split(int(tree.feature[k]), float(tree.threshold[k]), flags, None,
                                   int(tree.children_left[k]), int(tree.children_right[k]), cover))
        builder.add_tree(nodes)
    return builder.build(0.0)


# --------------------------------------------------------------------------------------------------
# the kernel


@numba.njit(parallel=True, cache=True, nogil=True)
def _kernel(X, out, max_nodes, max_masks, kind_start, node_feature, node_threshold, node_default, cat_feature,
            cat_size, chunk_start, chunk_cat, chunk_slot, chunk_count, chunk_offset, words, edge_start, edge_parent,
            edge_child, edge_node, edge_bit, edge_code, group_start, group_mask, group_bit_start, group_bits,
            group_width, max_groups, sum_start, sum_feature, term_start, term_group, term_offset, tables,
            direct_start, direct_mask, direct_value, direct_feat_start, direct_feats, direct_ratio, direct_weight,
            tiny_is_zero, block):
    """Blocks of rows in parallel; inside a block every step is a loop over the block's rows (SIMD)."""
    n, n_features = X.shape
    n_out = out.shape[1]
    n_trees = edge_start.shape[0] - 1
    n_blocks = (n + block - 1) // block
    for b in numba.prange(n_blocks):
        lo = b * block
        m = min(n, lo + block) - lo
        xt = np.empty((n_features, m))
        for r in range(m):
            for f in range(n_features):
                xt[f, r] = X[lo + r, f]
        if tiny_is_zero:
            for f in range(n_features):
                x = xt[f]
                for r in range(m):
                    v = x[r]
                    x[r] = 0.0 if (v >= -ZERO_THRESHOLD) & (v <= ZERO_THRESHOLD) else v
        # categories as positions: the code, or `size` (another or an invalid one), or size + 1 (missing)
        cpos = np.empty((cat_feature.shape[0], m), dtype=np.uint32)
        for c in range(cat_feature.shape[0]):
            size = cat_size[c]
            x = xt[cat_feature[c]]
            p = cpos[c]
            for r in range(m):
                v = x[r]
                inside = (v >= 0.0) & (v < size)
                p[r] = np.uint32(v) if inside else (size + 1 if np.isnan(v) else size)
        acc = np.zeros((n_out, m))
        dec = np.zeros((max_nodes, m), dtype=np.uint8)
        masks = np.zeros((max_masks, m), dtype=np.int32)
        rows = np.zeros((max_groups, m), dtype=np.uint32)   # per group of the tree: the row's table row
        word = np.zeros(m, dtype=np.int64)
        poly = np.zeros(MAX_PATH_FEATURES + 1)
        poly_without = np.zeros(MAX_PATH_FEATURES + 1)
        for t in range(n_trees):
            first = kind_start[t, 0]
            for k in range(kind_start[t, KIND_LE], kind_start[t, KIND_LE + 1]):
                x = xt[node_feature[k]]
                threshold = node_threshold[k]
                go = dec[k - first]
                for r in range(m):
                    go[r] = x[r] <= threshold
            for k in range(kind_start[t, KIND_NGT], kind_start[t, KIND_NGT + 1]):
                x = xt[node_feature[k]]
                threshold = node_threshold[k]
                go = dec[k - first]
                for r in range(m):
                    go[r] = not (x[r] > threshold)
            for k in range(kind_start[t, KIND_ZERO], kind_start[t, KIND_ZERO + 1]):
                x = xt[node_feature[k]]
                threshold = node_threshold[k]
                default = node_default[k] != 0
                go = dec[k - first]
                for r in range(m):
                    v = x[r]
                    missing = np.isnan(v) | ((v >= -ZERO_THRESHOLD) & (v <= ZERO_THRESHOLD))
                    go[r] = default if missing else v <= threshold
            for c in range(chunk_start[t], chunk_start[t + 1]):
                p = cpos[chunk_cat[c]]
                lookup = words[chunk_offset[c]:]
                for r in range(m):
                    word[r] = lookup[p[r]]
                for q in range(chunk_count[c]):
                    go = dec[chunk_slot[c] + q]
                    for r in range(m):
                        go[r] = (word[r] >> q) & 1
            # agreement masks down to the group roots, parent before child: a new feature adds its bit if the
            # row goes this way, a repeated one clears it if it does not
            for e in range(edge_start[t], edge_start[t + 1]):
                parent = masks[edge_parent[e]]
                child = masks[edge_child[e]]
                go = dec[edge_node[e]]
                bit = edge_bit[e]
                code = edge_code[e]
                if code == 0:    # new feature, left branch
                    for r in range(m):
                        child[r] = parent[r] | (np.int32(go[r]) << bit)
                elif code == 1:  # new feature, right branch
                    for r in range(m):
                        child[r] = parent[r] | (np.int32(go[r] ^ 1) << bit)
                elif code == 2:  # repeated feature, left branch
                    for r in range(m):
                        child[r] = parent[r] & ~(np.int32(go[r] ^ 1) << bit)
                else:            # repeated feature, right branch
                    for r in range(m):
                        child[r] = parent[r] & ~(np.int32(go[r]) << bit)
            for g in range(group_start[t], group_start[t + 1]):
                mask = masks[group_mask[g]]
                row = rows[g - group_start[t]]
                for r in range(m):
                    row[r] = mask[r]
                for q in range(group_bit_start[g], group_bit_start[g + 1]):
                    go = dec[group_bits[q]]
                    for r in range(m):
                        row[r] = (row[r] << 1) | go[r]
                width = group_width[g]
                for r in range(m):
                    row[r] *= width
            # feature by feature, the terms of its groups (up to four per pass over the rows)
            for u in range(sum_start[t], sum_start[t + 1]):
                target = acc[sum_feature[u]]
                q = term_start[u]
                end = term_start[u + 1]
                while q + 4 <= end:
                    i0, i1, i2, i3 = rows[term_group[q]], rows[term_group[q + 1]], rows[term_group[q + 2]], \
                        rows[term_group[q + 3]]
                    c0, c1, c2, c3 = tables[term_offset[q]:], tables[term_offset[q + 1]:], \
                        tables[term_offset[q + 2]:], tables[term_offset[q + 3]:]
                    for r in range(m):
                        target[r] += (c0[i0[r]] + c1[i1[r]]) + (c2[i2[r]] + c3[i3[r]])
                    q += 4
                if q + 2 <= end:
                    i0, i1 = rows[term_group[q]], rows[term_group[q + 1]]
                    c0, c1 = tables[term_offset[q]:], tables[term_offset[q + 1]:]
                    for r in range(m):
                        target[r] += c0[i0[r]] + c1[i1[r]]
                    q += 2
                if q < end:
                    i0 = rows[term_group[q]]
                    c0 = tables[term_offset[q]:]
                    for r in range(m):
                        target[r] += c0[i0[r]]
            # leaves without a table: the formulas row by row, G from the elementary symmetric polynomials
            # of the agreeing features' r (for A \\ {f}: divided by 1 + r_f x)
            for leaf in range(direct_start[t], direct_start[t + 1]):
                mask = masks[direct_mask[leaf]]
                value = direct_value[leaf]
                fs = direct_feat_start[leaf]
                d = direct_feat_start[leaf + 1] - fs
                for r in range(m):
                    agree = mask[r]
                    outside = 1.0                              # product of r over U \\ A
                    poly[:d + 1] = 0.0
                    poly[0] = 1.0
                    size = 0
                    for j in range(d):
                        if (agree >> j) & 1:
                            size += 1
                            rj = direct_ratio[fs + j]
                            for i in range(size, 0, -1):
                                poly[i] += rj * poly[i - 1]
                        else:
                            outside *= direct_ratio[fs + j]
                    g = 0.0
                    for k in range(min(d - 1, size) + 1):
                        g += direct_weight[fs + k] * poly[size - k]
                    for j in range(d):
                        rj = direct_ratio[fs + j]
                        if (agree >> j) & 1:
                            poly_without[0] = 1.0
                            for i in range(1, size):
                                poly_without[i] = poly[i] - rj * poly_without[i - 1]
                            g_without = 0.0
                            for k in range(size):
                                g_without += direct_weight[fs + k] * poly_without[size - 1 - k]
                            acc[direct_feats[fs + j], r] += value * (1.0 - rj) * outside * g_without
                        else:
                            acc[direct_feats[fs + j], r] -= value * outside * g
        for r in range(m):
            for f in range(n_out):
                out[lo + r, f] = acc[f, r]


# --------------------------------------------------------------------------------------------------
# the champion's contributions


def _coded(learner, inputs) -> np.ndarray:
    """LightGBM / XGBoost input matrix: numeric columns as float, categories as their codes (NaN if
    missing), in the learner's column order — what the libraries get from ``learner.encoder.transform``
    (the same rules, vectorised: a level not seen in training is ``__other__``)."""
    import pandas as pd

    encoder = learner.encoder
    booster_levels = getattr(getattr(learner.model, "booster_", None), "pandas_categorical", None)
    out = np.full((len(inputs), len(encoder.columns)), np.nan)
    for j, col in enumerate(encoder.columns):
        if col not in inputs:
            continue
        if col not in encoder.levels:
            out[:, j] = pd.to_numeric(inputs[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        levels = encoder.levels[col]
        # each distinct value is coded once (a million rows hold a few thousand), then spread by its index
        index, uniques = pd.factorize(inputs[col].to_numpy(dtype=object), use_na_sentinel=True)
        uniques = np.asarray(uniques, dtype=object)
        if pd.api.types.infer_dtype(uniques, skipna=True) not in ("string", "empty"):
            uniques = uniques.astype(str)  # levels are compared as text
        codes = pd.Categorical(uniques, categories=levels[:-1]).codes.astype(np.int64)
        codes = np.where(codes >= 0, codes, len(levels) - 1)     # not a known level: __other__
        if booster_levels is not None:  # LightGBM codes categories as it stored them at training
            stored = list(booster_levels[encoder.categorical.index(col)])
            if stored != list(levels):
                codes = np.array([stored.index(v) if v in stored else -1 for v in levels], dtype=np.int64)[codes]
        per_value = np.append(np.where(codes < 0, np.nan, codes.astype(np.float64)), np.nan)  # index -1: missing
        out[:, j] = per_value[index]
    return out


@dataclass
class _Member:
    learner: object
    weight: float
    tables: TreeTables | None     # None: the learner's own contributions
    columns: np.ndarray           # positions of the learner's features among the model's


class ModelExplainer:
    """SHAP contributions of a :class:`training.model.NoShowModel` (any algorithm), fast for tree models.

    Boosted models, the single tree and the forest use :class:`TreeTables`; logistic regression its exact
    linear terms (``learner.contributions``); a stacking ensemble the weighted sum of its members plus
    its intercept — the same values as ``model.contributions`` (see ``docs/model.md``), in log-odds of
    the uncalibrated model (probability for the tree and the forest). Unknown learners fall back to
    ``model.contributions``."""

    def __init__(self, model, threads: int = 0, saved: dict[int, TreeTables] | None = None) -> None:
        from training import models

        self.model = model
        self.threads = threads
        self.features = list(model.features)
        self.space = model.contribution_space
        learner = model.learner
        if isinstance(learner, models.StackingLearner):
            parts = [(m, float(w)) for m, w in zip(learner.members.values(), learner.weights, strict=True) if w != 0]
            self.intercept = float(learner.intercept)
        else:
            parts, self.intercept = [(learner, 1.0)], 0.0
        position = {f: i for i, f in enumerate(self.features)}
        self.members: list[_Member] = []
        self.fallback = False
        for i, (member, weight) in enumerate(parts):
            tables = None
            if isinstance(member, (models.LightGBMLearner, models.XGBoostLearner, models.TreeLearner)):
                if saved is None:
                    tables = self._tables(member)
                elif i in saved:
                    tables = saved[i]
                else:
                    raise ValueError(f"no saved tables for member {i}")
            elif not isinstance(member, models.LogisticLearner):
                self.fallback = True
            self.members.append(_Member(member, weight, tables,
                                        np.array([position[f] for f in member.features], dtype=np.int64)))

    def save(self, path: str | Path, digest: str) -> bool:
        """Write the tables of the tree members to ``path`` (compressed ``.npz``), for :meth:`load`. ``digest``
        identifies the model they belong to (``training.pyfunc.file_digest`` of its artifact). Returns False
        (nothing written) when no member has tables."""
        arrays: dict[str, np.ndarray] = {}
        for i, member in enumerate(self.members):
            if member.tables is not None:
                for f in fields(TreeTables):
                    arrays[f"{i}.{f.name}"] = np.asarray(getattr(member.tables, f.name))
        if not arrays:
            return False
        with open(path, "wb") as out:  # a file object: np.savez would append ".npz" to another name
            np.savez_compressed(out, format=np.asarray(SAVED_FORMAT), digest=np.asarray(digest),
                                members=np.asarray(len(self.members)), **arrays)
        return True

    @classmethod
    def load(cls, model, path: str | Path, digest: str, threads: int = 0) -> ModelExplainer | None:
        """The explainer of ``model`` with the tables :meth:`save` wrote to ``path``, without building them;
        None (with the reason logged) if the file was written for another model (``digest``), by another
        format or for other members, so that the caller builds them."""
        with np.load(path, allow_pickle=False) as saved:
            names = set(saved.files)
            found = int(saved["format"]) if "format" in names else None
            if found != SAVED_FORMAT:
                log.info("SHAP tables in %s are of format %s, not %s: they are built again", path, found,
                         SAVED_FORMAT)
                return None
            if str(saved["digest"]) != digest:
                log.warning("SHAP tables in %s belong to another model (digest %s, the model's %s): they are "
                            "built again", path, str(saved["digest"])[:12], digest[:12])
                return None
            members = int(saved["members"])
            tables: dict[int, TreeTables] = {}
            for i in range(members):
                if f"{i}.tables" in names:
                    values = {f.name: saved[f"{i}.{f.name}"] for f in fields(TreeTables)}
                    tables[i] = TreeTables(**{k: v.item() if v.ndim == 0 else v for k, v in values.items()})
        try:
            explainer = cls(model, threads, saved=tables)
        except ValueError as exc:
            explainer, reason = None, str(exc)
        else:
            used = {i for i, m in enumerate(explainer.members) if m.tables is not None}
            reason = "" if len(explainer.members) == members and used == set(tables) else (
                f"{members} members with tables {sorted(tables)}, the model {len(explainer.members)} "
                f"with {sorted(used)}")
        if reason:
            log.warning("SHAP tables in %s do not fit the model (%s): they are built again", path, reason)
            return None
        return explainer

    @staticmethod
    def _tables(learner) -> TreeTables:
        from training import models

        if isinstance(learner, models.LightGBMLearner):
            return from_lightgbm(learner.model.booster_)
        if isinstance(learner, models.XGBoostLearner):
            return from_xgboost(learner.model.get_booster())
        return from_sklearn(learner.model)

    def _member_values(self, member: _Member, inputs) -> np.ndarray:
        from training import models

        if member.tables is None:
            return member.learner.contributions(inputs).reindex(
                columns=[*member.learner.features, "bias"]).to_numpy(dtype=np.float64)
        if isinstance(member.learner, models.TreeLearner):
            matrix = member.learner._matrix(inputs)
        else:
            matrix = _coded(member.learner, inputs)
        return member.tables.contributions(matrix, self.threads)

    def contributions(self, inputs) -> np.ndarray:
        """(rows, features + 1): the model's SHAP values per feature (``self.features`` order) and the bias
        last. ``inputs``: the model's prepared input columns (``model.inputs(frame)``)."""
        if self.fallback:
            return self.model.contributions(inputs).reindex(columns=[*self.features, "bias"]).to_numpy()
        if len(self.members) == 1 and self.members[0].weight == 1.0 and self.intercept == 0.0 and \
                np.array_equal(self.members[0].columns, np.arange(len(self.features))):
            return self._member_values(self.members[0], inputs)  # a single model: its values as they are
        out = np.zeros((len(inputs), len(self.features) + 1))
        for member in self.members:
            values = self._member_values(member, inputs)
            out[:, member.columns] += member.weight * values[:, :-1]
            out[:, -1] += member.weight * values[:, -1]
        out[:, -1] += self.intercept
        return out

    def probabilities(self, contributions: np.ndarray) -> np.ndarray:
        """The champion's calibrated probabilities from its contributions: SHAP values add up to the model's
        output (log-odds, or probability for the tree and the forest), which the calibrator maps as
        ``model.predict_proba`` does."""
        total = contributions.sum(axis=1)
        raw = 1.0 / (1.0 + np.exp(-total)) if self.space == "log-odds" else total
        return self.model.calibrator.transform(raw)
