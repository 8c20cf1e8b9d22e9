"""Exact TreeSHAP for the boosted champions, fast enough to explain every appointment of a horizon.

The values are the path-dependent TreeSHAP values that LightGBM (``predict(..., pred_contrib=True)``),
XGBoost (``predict(DMatrix, pred_contribs=True)``) and the ``shap`` package compute — the same numbers,
in log-odds of the uncalibrated model — but with a cheaper algorithm (the "Fast TreeSHAP v2" idea,
Yang 2021):

For a leaf l with value v, let U be the distinct features split on along its path, d = |U|. For a
feature f in U, r_f is the product of the cover fractions of the path's edges on f, and the row
*agrees* with f if it takes the path's direction at every node on f (A = the agreeing features). The
tree's expectation given a feature set S is a sum over leaves of products, so each leaf is a small
game over U whose Shapley values are, with G(B) = sum over S ⊆ B of |S|!(d-|S|-1)!/d! · prod_{B\\S} r:

* f in A:      v · (1 - r_f) · prod_{U\\A} r · G(A \\ {f})
* f not in A:  -v · prod_{U\\A} r · G(A)

They depend on the row only through A, so each leaf gets a table of 2^d x d values once per model
(d is small: the benchmark's champion has d <= 11, 2.4 M numbers in all), and explaining a row costs
one comparison per split node plus one table row per leaf, instead of TreeSHAP's O(leaves x depth^2)
path arithmetic per tree. Two sibling leaves share one table, indexed by their parent's mask and the
row's direction there. Agreement masks are built edge by edge from the root; a categorical split is a
lookup in a byte table per split (category -> direction), the row's category position computed once
per feature. The kernel is compiled
with numba (cached on disk), runs blocks of rows in parallel and, inside a block, each step as a loop
over the block's rows (SIMD).

Models: LightGBM and XGBoost binary classifiers (numeric and categorical splits, missing values as the
libraries route them). The tests check every value against the libraries' own ``pred_contrib`` and
against the ``shap`` package; at run time each batch's row sums are checked against the model's own
margin (:func:`explain` falls back to the native values if they ever differ).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numba
import numpy as np

log = logging.getLogger(__name__)

#: node flags: a categorical split (bitset of categories); its listed categories go right (XGBoost) rather
#: than left (LightGBM); missing values go left; NaN is missing; zero is missing (LightGBM "Zero")
FLAG_CATEGORICAL, FLAG_LISTED_RIGHT, FLAG_DEFAULT_LEFT, FLAG_MISSING_NAN, FLAG_MISSING_ZERO = 1, 2, 4, 8, 16
#: leaves whose path has more distinct features than this are refused (table 2^d x d)
MAX_PATH_FEATURES = 20
#: rows per parallel work item (the tables of one tree stay in cache across them)
BLOCK_ROWS = 256


@dataclass
class TreeTables:
    """A tree ensemble flattened into arrays, with the per-leaf SHAP tables.

    Per tree t: its split nodes ``[node_start[t], node_start[t+1])`` (numeric ones first, then the
    categorical ones from ``node_start[t] + n_numeric[t]``), its edges ``[edge_start[t], edge_start[t+1])``
    in pre-order (a parent before its children), and its leaves ``[leaf_start[t], leaf_start[t+1])``.
    Nodes and leaves of a tree share one numbering of "slots": split node i is slot i, leaf j of the tree
    is slot (number of split nodes + j). Each leaf's distinct path features are numbered in the order
    the path meets them, so the agreement mask of a leaf is built edge by edge from its parent's."""

    n_features: int
    bias: float                  # base margin + every tree's expected value
    max_slots: int               # the most split nodes + leaves of a tree
    node_start: np.ndarray       # int64 [trees + 1]
    n_numeric: np.ndarray        # int64 [trees]
    root_slot: np.ndarray        # int64 [trees]
    node_feature: np.ndarray     # int64
    node_threshold: np.ndarray   # float64: a numeric split sends value <= threshold left
    node_flags: np.ndarray       # int64 FLAG_*
    cat_size: np.ndarray         # int64 per feature: 1 + the largest category any split lists (0: numeric)
    node_lut: np.ndarray         # int64 per node: offset into luts (categorical splits)
    luts: np.ndarray             # uint8: per categorical split, 1 = left for each category 0..size-1, then
                                 # for any other category (or an invalid one), then for a missing value
    edge_start: np.ndarray       # int64 [trees + 1]
    edge_parent: np.ndarray      # int64 slot (split node) of the parent
    edge_child: np.ndarray       # int64 slot of the child
    edge_left: np.ndarray        # int64 1 if the edge is the parent's left branch
    edge_bit: np.ndarray         # int64 bit of the parent's feature in the path's feature numbering
    edge_new: np.ndarray         # int64 1 if the path meets that feature for the first time
    leaf_start: np.ndarray       # int64 [trees + 1]
    leaf_slot: np.ndarray        # int64 slot whose agreement mask indexes the table
    leaf_width: np.ndarray       # int64 1 for a leaf; 2 for two sibling leaves merged (see _Builder)
    leaf_node: np.ndarray        # int64 the siblings' parent (its direction picks the table row); any for a leaf
    leaf_feat_start: np.ndarray  # int64 [leaves + 1] into leaf_feats
    leaf_feats: np.ndarray       # int64 the leaf's distinct path features, in path order
    leaf_table_start: np.ndarray  # int64 [leaves] into tables
    tables: np.ndarray           # float64, per leaf (2^d, d) row-major
    float32_inputs: bool         # XGBoost compares float32 values

    @property
    def n_trees(self) -> int:
        return len(self.node_start) - 1

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
                _kernel(X, out, self.max_slots, self.node_start, self.n_numeric, self.root_slot, self.node_feature,
                        self.node_threshold, self.node_flags, self.cat_size, self.node_lut, self.luts,
                        self.edge_start, self.edge_parent, self.edge_child, self.edge_left, self.edge_bit,
                        self.edge_new, self.leaf_start, self.leaf_slot, self.leaf_width, self.leaf_node,
                        self.leaf_feat_start, self.leaf_feats, self.leaf_table_start, self.tables, BLOCK_ROWS)
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


class _Builder:
    """Collects trees (lists of Split / Leaf nodes, the root first) and flattens them."""

    def __init__(self, n_features: int, float32_inputs: bool) -> None:
        self.n_features = n_features
        self.float32_inputs = float32_inputs
        self.arrays: dict[str, list] = {name: [] for name in (
            "n_numeric", "root_slot", "node_feature", "node_threshold", "node_flags", "node_cats", "edge_parent",
            "edge_child", "edge_left", "edge_bit", "edge_new", "leaf_slot", "leaf_width", "leaf_node", "leaf_feats")}
        self.node_start, self.edge_start, self.leaf_start, self.leaf_feat_start = [0], [0], [0], [0]
        self.tables: list[np.ndarray] = []
        self.expected = 0.0
        self.max_slots = 1

    def add_tree(self, nodes: list[Split | Leaf]) -> None:
        a = self.arrays
        root = nodes[0]
        if isinstance(root, Leaf):  # a constant tree: only the bias
            self.expected += root.value
            a["n_numeric"].append(0)
            a["root_slot"].append(0)
            for start in (self.node_start, self.edge_start, self.leaf_start):
                start.append(start[-1])
            return
        splits = [i for i, n in enumerate(nodes) if isinstance(n, Split)]
        splits.sort(key=lambda i: nodes[i].categories is not None)  # numeric first (stable)
        slot = {i: k for k, i in enumerate(splits)}
        leaves = [i for i, n in enumerate(nodes) if isinstance(n, Leaf)]
        slot.update({i: len(splits) + j for j, i in enumerate(leaves)})
        self.max_slots = max(self.max_slots, len(slot))
        a["n_numeric"].append(sum(nodes[i].categories is None for i in splits))
        a["root_slot"].append(slot[0])
        for i in splits:
            n = nodes[i]
            a["node_feature"].append(n.feature)
            a["node_threshold"].append(n.threshold)
            a["node_flags"].append(n.flags)
            a["node_cats"].append(n.categories)
        total = root.cover
        # pre-order walk: (node, distinct features met so far, their cover fractions)
        stack: list[tuple[int, list[int], list[float]]] = [(0, [], [])]
        while stack:
            i, path_feats, ratios = stack.pop()
            node = nodes[i]
            if isinstance(node, Leaf):
                self._leaf(path_feats, slot[i], 1, 0, _leaf_table(node.value, np.array(ratios, dtype=np.float64)))
                self.expected += node.value * _fraction(node.cover, total)
                continue
            new = node.feature not in path_feats
            bit = len(path_feats) if new else path_feats.index(node.feature)
            feats = [*path_feats, node.feature] if new else path_feats

            def child_ratios(child: int) -> list[float]:
                fraction = _fraction(nodes[child].cover, node.cover)  # noqa: B023 (used at once)
                return [*ratios, fraction] if new else [  # noqa: B023
                    r * fraction if k == bit else r for k, r in enumerate(ratios)]  # noqa: B023

            left, right = nodes[node.left], nodes[node.right]
            if isinstance(left, Leaf) and isinstance(right, Leaf):
                # two sibling leaves: one table indexed by the parent's mask and direction, so a row reads
                # one table row for both
                t_left = _leaf_table(left.value, np.array(child_ratios(node.left)))
                t_right = _leaf_table(right.value, np.array(child_ratios(node.right)))
                m = np.arange(1 << len(path_feats))[:, None]
                g = np.array([[0, 1]])                         # 1: the row goes left at the parent
                if new:
                    mask_left, mask_right = m | (g << bit), m | ((1 - g) << bit)
                else:
                    mask_left, mask_right = m & ~((1 - g) << bit), m & ~(g << bit)
                table = t_left[mask_left.ravel()] + t_right[mask_right.ravel()]
                self._leaf(feats, slot[i], 2, slot[i], table)
                self.expected += (left.value * _fraction(left.cover, total)
                                  + right.value * _fraction(right.cover, total))
                continue
            for child, goes_left in ((node.right, False), (node.left, True)):
                a["edge_parent"].append(slot[i])
                a["edge_child"].append(slot[child])
                a["edge_left"].append(int(goes_left))
                a["edge_bit"].append(bit)
                a["edge_new"].append(int(new))
                stack.append((child, feats, child_ratios(child)))
        self.node_start.append(len(a["node_feature"]))
        self.edge_start.append(len(a["edge_parent"]))
        self.leaf_start.append(len(a["leaf_slot"]))

    def _leaf(self, feats: list[int], mask_slot: int, width: int, node: int, table: np.ndarray) -> None:
        if len(feats) > MAX_PATH_FEATURES:
            raise ValueError(f"a leaf's path splits on {len(feats)} distinct features (more than "
                             f"{MAX_PATH_FEATURES}): its SHAP table would be too large")
        a = self.arrays
        a["leaf_slot"].append(mask_slot)
        a["leaf_width"].append(width)
        a["leaf_node"].append(node)
        a["leaf_feats"] += feats
        self.leaf_feat_start.append(len(a["leaf_feats"]))
        self.tables.append(table.ravel())

    def build(self, base_margin: float) -> TreeTables:
        a = self.arrays
        n_nodes = len(a["node_feature"])
        cat_size = np.zeros(self.n_features, dtype=np.int64)
        for f, cats in zip(a["node_feature"], a["node_cats"], strict=True):
            if cats is not None:
                cat_size[f] = max(cat_size[f], max([int(c) + 1 for c in cats if int(c) >= 0], default=1))
        node_lut = np.zeros(n_nodes, dtype=np.int64)
        luts: list[np.ndarray] = []
        offset = 0
        for k, cats in enumerate(a["node_cats"]):
            if cats is None:
                continue
            flags = a["node_flags"][k]
            size = int(cat_size[a["node_feature"][k]])
            listed = np.zeros(size + 2, dtype=bool)
            listed[[int(c) for c in cats if 0 <= int(c) < size]] = True
            lut = listed != bool(flags & FLAG_LISTED_RIGHT)      # slot `size`: not listed (or invalid)
            if flags & FLAG_MISSING_NAN:                           # slot size + 1: a missing value
                lut[size + 1] = bool(flags & FLAG_DEFAULT_LEFT)
            node_lut[k] = offset
            luts.append(lut.astype(np.uint8))
            offset += size + 2
        sizes = [t.size for t in self.tables]

        def i64(values) -> np.ndarray:
            return np.asarray(values, dtype=np.int64).reshape(-1)

        return TreeTables(
            n_features=self.n_features, bias=float(base_margin + self.expected), max_slots=self.max_slots,
            node_start=i64(self.node_start), n_numeric=i64(a["n_numeric"]), root_slot=i64(a["root_slot"]),
            node_feature=i64(a["node_feature"]),
            node_threshold=np.asarray(a["node_threshold"], dtype=np.float64).reshape(-1),
            node_flags=i64(a["node_flags"]), cat_size=cat_size, node_lut=node_lut,
            luts=np.concatenate(luts) if luts else np.zeros(1, dtype=np.uint8), edge_start=i64(self.edge_start),
            edge_parent=i64(a["edge_parent"]),
            edge_child=i64(a["edge_child"]), edge_left=i64(a["edge_left"]), edge_bit=i64(a["edge_bit"]),
            edge_new=i64(a["edge_new"]), leaf_start=i64(self.leaf_start), leaf_slot=i64(a["leaf_slot"]),
            leaf_width=i64(a["leaf_width"]), leaf_node=i64(a["leaf_node"]),
            leaf_feat_start=i64(self.leaf_feat_start), leaf_feats=i64(a["leaf_feats"]),
            leaf_table_start=i64(np.concatenate([[0], np.cumsum(sizes)[:-1]]) if sizes else []),
            tables=np.concatenate(self.tables) if self.tables else np.zeros(0), float32_inputs=self.float32_inputs,
        )


def _leaf_table(value: float, r: np.ndarray) -> np.ndarray:
    """Table (2^d, d) of one leaf: row ``mask`` (bit j = the row agrees with feature j of the path) holds
    the SHAP value of each of the leaf's d features."""
    d = len(r)
    if d == 0:
        return np.zeros((1, 0))
    w = np.array([math.factorial(k) * math.factorial(d - k - 1) / math.factorial(d) for k in range(d)])
    masks = np.arange(1 << d)
    bits = ((masks[:, None] >> np.arange(d)[None, :]) & 1).astype(bool)       # (2^d, d)
    # elementary symmetric polynomials e_j of the r of each mask's features
    e = np.zeros((1 << d, d + 1))
    e[:, 0] = 1.0
    for j in range(d):
        rj = np.where(bits[:, j], r[j], 0.0)[:, None]
        e[:, 1:] = e[:, 1:] + rj * e[:, :-1]
    size = bits.sum(axis=1)
    # G(B) = sum_k w(k) e_{|B|-k}(r_B); only needed for |B| < d (B never holds every feature)
    g = np.zeros(1 << d)
    for k in range(d):
        has = size >= k
        g[has] += w[k] * e[masks[has], size[has] - k]
    r_out = np.prod(np.where(bits, 1.0, r[None, :]), axis=1)                  # product over U \\ A
    table = np.empty((1 << d, d))
    for j in range(d):
        without = masks & ~(1 << j)
        table[:, j] = np.where(bits[:, j], value * (1.0 - r[j]) * r_out * g[without], -value * r_out * g)
    return table


def _fraction(child: float, parent: float) -> float:
    return child / parent if parent > 0 else 0.0


def from_lightgbm(booster) -> TreeTables:
    """Tables of a LightGBM binary model (``lightgbm.Booster``); cover = the training rows of a node."""
    dump = booster.dump_model()
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise ValueError("only single-output LightGBM models are supported")
    builder = _Builder(int(dump["max_feature_idx"]) + 1, float32_inputs=False)
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


def from_xgboost(booster) -> TreeTables:
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
    builder = _Builder(int(params["num_feature"]), float32_inputs=True)
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


def from_sklearn(estimator) -> TreeTables:
    """Tables of a scikit-learn binary ``DecisionTreeClassifier`` or ``RandomForestClassifier``: values in
    probability of the second class (a forest averages its trees); cover = weighted training samples."""
    trees = [e.tree_ for e in estimator.estimators_] if hasattr(estimator, "estimators_") else [estimator.tree_]
    if len(getattr(estimator, "classes_", [0, 1])) != 2:
        raise ValueError("only binary scikit-learn classifiers are supported")
    builder = _Builder(int(estimator.n_features_in_), float32_inputs=True)   # scikit-learn compares float32
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


@numba.njit(inline="always")
def _numeric_left(x, k, threshold, flags):
    """A numeric split as LightGBM (Tree::NumericalDecision) and XGBoost route a value (branch-free)."""
    f = flags[k]
    nan = np.isnan(x)
    x0 = 0.0 if nan else x
    missing = (nan & ((f & FLAG_MISSING_NAN) != 0)) | (((f & FLAG_MISSING_ZERO) != 0) & (-1e-35 <= x0 <= 1e-35))
    return ((f & FLAG_DEFAULT_LEFT) != 0) if missing else x0 <= threshold[k]


@numba.njit(parallel=True, cache=True, nogil=True)
def _kernel(X, out, max_slots, node_start, n_numeric, root_slot, node_feature, node_threshold, node_flags,
            cat_size, node_lut, luts, edge_start, edge_parent, edge_child, edge_left, edge_bit,
            edge_new, leaf_start, leaf_slot, leaf_width, leaf_node, leaf_feat_start, leaf_feats, leaf_table_start,
            tables, block):
    """Blocks of rows in parallel; inside a block every step is a loop over the block's rows (SIMD)."""
    n, n_features = X.shape
    n_trees = node_start.shape[0] - 1
    n_blocks = (n + block - 1) // block
    for b in numba.prange(n_blocks):
        lo = b * block
        m = min(n, lo + block) - lo
        xt = np.empty((n_features, m))
        for r in range(m):
            for f in range(n_features):
                xt[f, r] = X[lo + r, f]
        # categories as lookup positions: the code, or `size` (another or an invalid one), or size + 1 (missing)
        cidx = np.zeros((n_features, m), dtype=np.int64)
        for f in range(n_features):
            size = cat_size[f]
            if size > 0:
                x = xt[f]
                c = cidx[f]
                for r in range(m):
                    v = x[r]
                    inside = (v >= 0.0) & (v < size)
                    c[r] = np.int64(v) if inside else (size + 1 if np.isnan(v) else size)
        acc = np.zeros((out.shape[1], m))
        left = np.zeros((max_slots, m), dtype=np.int64)
        mask_at = np.zeros((max_slots, m), dtype=np.int64)
        idx = np.zeros(m, dtype=np.int64)
        for t in range(n_trees):
            first = node_start[t]
            split = first + n_numeric[t]
            for k in range(first, split):
                x = xt[node_feature[k]]
                go = left[k - first]
                for r in range(m):
                    go[r] = _numeric_left(x[r], k, node_threshold, node_flags)
            for k in range(split, node_start[t + 1]):
                c = cidx[node_feature[k]]
                go = left[k - first]
                lut = luts[node_lut[k]:]
                for r in range(m):
                    go[r] = lut[c[r]]
            # agreement masks, parent before child: a new feature adds its bit if the row goes this way, a
            # repeated one clears it if it does not
            mask_at[root_slot[t]] = 0
            for e in range(edge_start[t], edge_start[t + 1]):
                parent = mask_at[edge_parent[e]]
                go = left[edge_parent[e]]
                child = mask_at[edge_child[e]]
                bit = edge_bit[e]
                way = edge_left[e]
                if edge_new[e]:
                    for r in range(m):
                        child[r] = parent[r] | (np.int64(go[r] == way) << bit)
                else:
                    for r in range(m):
                        child[r] = parent[r] & ~(np.int64(go[r] != way) << bit)
            for leaf in range(leaf_start[t], leaf_start[t + 1]):
                fs = leaf_feat_start[leaf]
                d = leaf_feat_start[leaf + 1] - fs
                masks = mask_at[leaf_slot[leaf]]
                go = left[leaf_node[leaf]]
                width = leaf_width[leaf]
                start = leaf_table_start[leaf]
                if width == 1:
                    for r in range(m):
                        idx[r] = start + masks[r] * d
                else:  # two sibling leaves: the row of (parent mask, direction)
                    for r in range(m):
                        idx[r] = start + (masks[r] * 2 + go[r]) * d
                for j in range(d):
                    target = acc[leaf_feats[fs + j]]
                    for r in range(m):
                        target[r] += tables[idx[r] + j]
        for r in range(m):
            for f in range(out.shape[1]):
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
        values = inputs[col].to_numpy(dtype=object)
        missing = pd.isna(values)
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            values = np.where(missing, None, values.astype(str))  # levels are compared as text
        codes = pd.Categorical(values, categories=levels[:-1]).codes.astype(np.int64)
        codes = np.where(codes >= 0, codes, len(levels) - 1)     # not a known level: __other__
        if booster_levels is not None:  # LightGBM codes categories as it stored them at training
            stored = list(booster_levels[encoder.categorical.index(col)])
            if stored != list(levels):
                codes = np.array([stored.index(v) if v in stored else -1 for v in levels], dtype=np.int64)[codes]
        out[:, j] = np.where(missing | (codes < 0), np.nan, codes)
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

    def __init__(self, model, threads: int = 0) -> None:
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
        for member, weight in parts:
            tables = None
            if isinstance(member, (models.LightGBMLearner, models.XGBoostLearner, models.TreeLearner)):
                tables = self._tables(member)
            elif not isinstance(member, models.LogisticLearner):
                self.fallback = True
            self.members.append(_Member(member, weight, tables,
                                        np.array([position[f] for f in member.features], dtype=np.int64)))

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
