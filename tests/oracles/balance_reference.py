"""Plain-Python reference for the selection, the balance score and the (T, τ) search.

Written the straightforward way (loops over queries and samples, sets for uniqueness, a scan
over cap values like the official `find_rewardbase`), independent of the array code in
`balance.py` / `metrics.py`. Tests check the array code against it; benchmarks/balance.py times
both. Not for use in the training loop: it is slow on purpose of being obvious.
"""
from __future__ import annotations

import numpy as np

TIE_TOL = 1e-12  # same tie rule as balance.TIE_TOL


def _lists(*arrays):
    return [np.asarray(x).tolist() for x in arrays]


def reference_select(reward, valid, tau, target_size, text_id):
    """bool [Q][K] lists: valid and reward > τ (float32), ranked by reward (ties: lower index),
    uniform cap c = smallest in 1..K reaching `target_size` distinct (query, text) pairs, else K;
    repeated texts dropped, the first kept."""
    reward = np.asarray(reward, np.float32) + np.float32(0.0)
    reward, valid, text_id = _lists(reward, valid, text_id)
    tau = float(np.float32(tau))
    num_q, num_k = len(reward), len(reward[0])
    ranked = []
    for i in range(num_q):
        candidates = [k for k in range(num_k) if valid[i][k] and reward[i][k] > tau]
        candidates.sort(key=lambda k: -reward[i][k])  # stable: equal rewards keep index order
        ranked.append(candidates)
    cap = num_k
    for c in range(1, num_k + 1):
        total = 0
        for i in range(num_q):
            total += len({text_id[i][k] for k in ranked[i][:c]})
        if total >= target_size:
            cap = c
            break
    selected = [[False] * num_k for _ in range(num_q)]
    for i in range(num_q):
        seen = set()
        for k in ranked[i][:cap]:
            if text_id[i][k] not in seen:
                seen.add(text_id[i][k])
                selected[i][k] = True
    return selected


def reference_balance_score(correct, selected, text_id, n_star, mean_over="all"):
    """Eq. 3: bs_i = min(n'_i / n*, 1) * n'_i / n_i (0 if n_i = 0), mean over all queries or
    over queries with a selection."""
    correct, selected, text_id = _lists(correct, selected, text_id)
    total, active = 0.0, 0
    for i in range(len(correct)):
        texts = {t for t, s in zip(text_id[i], selected[i]) if s}
        correct_texts = {t for t, s, c in zip(text_id[i], selected[i], correct[i]) if s and c}
        if texts:
            n, n_correct = len(texts), len(correct_texts)
            total += min(n_correct / n_star, 1.0) * n_correct / n
            active += 1
    denominator = len(correct) if mean_over == "all" else active
    return total / denominator if denominator else 0.0


def reference_with_reference(correct, reward, valid, text_id):
    """Appends the reference solution per query: reward 1.0, correct, valid, id = max id + 1."""
    new_id = int(np.max(text_id)) + 1
    add = lambda x, v: np.concatenate([np.asarray(x), np.full(np.shape(x)[:-1] + (1,), v)], axis=-1)
    return add(correct, True), add(np.asarray(reward, np.float32), np.float32(1.0)), add(valid, True), add(text_id, new_id)


def reference_search(correct_TxQxK, reward_TxQxK, valid_TxQxK, text_id_TxQxK, temperatures, thresholds,
                     *, target_size, n_star=None, mode="paper", include_reference=False, mean_over="all"):
    """Every (T, τ): select, score; then the choice. Returns (temperature, threshold, best
    score, table as a list of lists). Tie rules as in balance.search."""
    if include_reference:
        correct_TxQxK, reward_TxQxK, valid_TxQxK, text_id_TxQxK = reference_with_reference(
            correct_TxQxK, reward_TxQxK, valid_TxQxK, text_id_TxQxK)
    num_q = len(correct_TxQxK[0])
    if n_star is None:
        n_star = -(-target_size // num_q)
    table = []
    for t in range(len(temperatures)):
        row = []
        for tau in thresholds:
            selected = reference_select(reward_TxQxK[t], valid_TxQxK[t], tau, target_size, text_id_TxQxK[t])
            row.append(reference_balance_score(correct_TxQxK[t], selected, text_id_TxQxK[t], n_star, mean_over))
        table.append(row)
    best = max(max(row) for row in table)
    if mode == "paper":
        choice = None
        for t, temperature in enumerate(temperatures):
            for u, tau in enumerate(thresholds):
                if table[t][u] >= best - TIE_TOL:
                    key = (-temperature, tau)  # lower T first, then higher τ
                    if choice is None or key > choice[0]:
                        choice = (key, t, u)
        _, t, u = choice
    else:
        row_best = [max(row) for row in table]
        t = next(t for t in range(len(temperatures)) if row_best[t] >= best - TIE_TOL)
        u = next(u for u in range(len(thresholds)) if table[t][u] >= row_best[t] - TIE_TOL)
    return float(temperatures[t]), float(thresholds[u]), table[t][u], table
