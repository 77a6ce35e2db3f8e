"""Static draft trees grown from measured head accuracies (Medusa's greedy construction).

A node is a path of ranks (r_1, .., r_d): the rank-r_1 guess of the depth-1
source, then the rank-r_2 guess of the depth-2 source, and so on. With
accuracy[d][r] the measured chance that depth d+1's rank-r guess is the
target's token, the node is accepted with probability prod accuracy[i][r_i]
(the depths treated as independent), and the expected number of accepted
tokens of a tree is the sum over its nodes. Growing one node at a time, always
the frontier node of highest probability, gives the best tree for each node
budget under that model (every node's probability is at most its parent's, so
the best tree of n + 1 nodes is the best of n plus one frontier node).

The nodes keep the order they were grown in, so every prefix of a tree is the
best tree of its size: the per-step sizing (jaxspec/draft_sizing.py) verifies
a prefix when the whole tree would not pay.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple, Sequence

import numpy as np


class StaticTree(NamedTuple):
    """Nodes in the order grown, most likely first (so parents before children); hashable, so a drafter
    holding one stays static under jit."""

    parents: tuple[int, ...]  # parent node index, -1 under the last emitted token
    depth: tuple[int, ...]  # 1-based
    rank: tuple[int, ...]  # which guess of its depth's source the node takes

    @property
    def size(self) -> int:
        return len(self.parents)

    @property
    def max_rank(self) -> int:
        return max(self.rank) + 1


def grow(accuracy: Sequence[Sequence[float]], size: int) -> StaticTree:
    """The `size`-node tree of highest expected accepted length; accuracy[d][r] for depth d + 1, rank r."""
    depths, ranks = len(accuracy), len(accuracy[0])
    frontier = [(-float(accuracy[0][r]), (r,)) for r in range(ranks)]
    heapq.heapify(frontier)
    chosen: list[tuple[int, ...]] = []
    while frontier and len(chosen) < size:
        neg, path = heapq.heappop(frontier)
        chosen.append(path)
        if len(path) < depths:
            for r in range(ranks):
                heapq.heappush(frontier, (neg * float(accuracy[len(path)][r]), path + (r,)))
    index = {path: i for i, path in enumerate(chosen)}
    return StaticTree(
        parents=tuple(index[p[:-1]] if len(p) > 1 else -1 for p in chosen),
        depth=tuple(len(p) for p in chosen),
        rank=tuple(p[-1] for p in chosen),
    )


def node_accuracy(tree: StaticTree, accuracy: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """Each node's chance of acceptance given its parent's: accuracy[depth - 1][rank]."""
    return tuple(float(accuracy[d - 1][r]) for d, r in zip(tree.depth, tree.rank))


def expected_accepted(tree: StaticTree, accuracy: Sequence[Sequence[float]]) -> float:
    """Expected accepted drafts per step under the independence model above."""
    prob = np.zeros(tree.size)
    for i, (parent, h) in enumerate(zip(tree.parents, node_accuracy(tree, accuracy))):
        prob[i] = (1.0 if parent < 0 else prob[parent]) * h
    return float(prob.sum())


def prior_accuracy(depths: int, ranks: int = 4) -> tuple[tuple[float, ...], ...]:
    """What untrained or unmeasured heads are assumed to reach: depth d's top guess right 0.6^d of the
    time, each further rank half as often as the one before."""
    return tuple(tuple(0.6 ** (d + 1) * 0.5**r for r in range(ranks)) for d in range(depths))
