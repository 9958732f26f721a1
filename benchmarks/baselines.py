"""Non-neural baselines: most popular, next-item transitions, EASE^R.

Each ``fit_*`` follows the registry contract ``fit(task, seed, **options) -> scorer``.
"""
import numpy as np
import scipy.linalg

from benchmarks.registry import Fitted
from trainer.candidates.item_to_item import history_matrix
from trainer.candidates.sources import TransitionSource
from trainer.metrics import item_counts


def fit_popular(task, seed):
    """Every user gets the same ranking: item frequency in the train sequences (the
    popularity of trainer/metrics.py; equal counts rank by item index)."""
    counts = item_counts(task.train, task.n_items).astype(np.float32)

    def scorer(histories):
        return np.broadcast_to(counts, (len(histories), task.n_items)).copy()
    return scorer


def transition_scorer(task, window, decay, normalize):
    """Scores of every item: the product's transitions source (``trainer.candidates``
    ``TransitionSource``) fitted on the train sequences: the last ``window`` history items
    weighted ``decay ** age`` (last item: age 0) times their transition weights, plus the
    popularity tie-break."""
    return TransitionSource.fit(task.train, task.n_items, window, decay, normalize).scores


def fit_transitions(task, seed, normalize=True):
    """Items that most often directly followed the user's last item in train sequences."""
    return transition_scorer(task, 1, 1.0, normalize)


def fit_transitions3(task, seed, window=3, decays=(0.1, 0.2, 0.3, 0.5), normalize=False,
                     select="ndcg@10"):
    """Transitions from the last ``window`` items, weighted ``decay ** age`` (last item: 1);
    ``decay`` chosen on the unfiltered validation ``select`` metric."""
    best, curve = None, {}
    for decay in decays:
        scorer = transition_scorer(task, window, decay, normalize)
        curve[str(decay)] = task.validate(scorer)["unfiltered"][select]
        if best is None or curve[str(decay)] > best[0]:
            best = (curve[str(decay)], float(decay), scorer)
    return Fitted(best[2], {"decay": best[1], f"validation_{select}_by_decay": curve})


def ease_weights(gram, lam):
    """EASE^R item-item weights B from the Gram matrix X^T X (Steck, WWW 2019).

    P = (G + lam I)^-1; B_ij = -P_ij / P_jj; diag(B) = 0. Float32 Cholesky inverse, in place
    on one Fortran-ordered copy of the Gram matrix; returns a C-ordered array.
    """
    g = np.array(gram, dtype=np.float32, order="F")
    g[np.diag_indices_from(g)] += lam
    chol, info = scipy.linalg.lapack.spotrf(g, lower=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky failed (info={info}); increase lambda")
    p, info = scipy.linalg.lapack.spotri(chol, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (info={info})")
    # spotri fills the lower triangle of a Fortran array: its transpose is a C-ordered view
    # with the upper triangle filled (P is symmetric, so P^T = P).
    b = np.ascontiguousarray(p.T)
    mirror_upper_to_lower(b)
    b /= -np.diag(b).copy()[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def mirror_upper_to_lower(a, block=1024):
    """Copy the upper triangle of square C-ordered ``a`` onto its lower one, in place."""
    n = a.shape[0]
    for r0 in range(0, n, block):
        r1 = min(n, r0 + block)
        diag = a[r0:r1, r0:r1]
        a[r0:r1, r0:r1] = np.triu(diag) + np.triu(diag, 1).T
        a[r0:r1, :r0] = a[:r0, r0:r1].T


def _ease_scorer(b, active, n_items):
    def scorer(histories):
        x = history_matrix(histories, n_items)[:, active]
        scores = np.zeros((len(histories), n_items), dtype=np.float32)
        scores[:, active] = x @ b
        return scores
    return scorer


def fit_ease(task, seed, lambdas=(250.0, 500.0, 1000.0), select="ndcg@10",
             variant="unfiltered"):
    """EASE^R on the binary train user x item matrix; lambda chosen on the validation
    ``select`` metric of ``variant`` (both variants' curves are recorded).

    Only items occurring in train get weights (others score 0; exact, since their Gram rows
    are zero).
    """
    x = history_matrix(task.train, task.n_items)
    active = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
    xa = x[:, active]
    gram = (xa.T @ xa).toarray()
    best, curves = None, {v: {} for v in ("unfiltered", "filtered")}
    lambdas = list(lambdas)
    for lam in (task.progress(lambdas) if task.progress else lambdas):
        b = ease_weights(gram, float(lam))
        metrics = task.validate(_ease_scorer(b, active, task.n_items))
        for v in curves:
            curves[v][str(lam)] = metrics[v][select]
        if best is None or metrics[variant][select] > best[0]:
            best = (metrics[variant][select], float(lam), b)
        del b
    _, lam, b = best
    return Fitted(_ease_scorer(b, active, task.n_items),
                  {"lambda": lam, f"validation_{select}_by_lambda": curves,
                   "active_items": int(len(active))})


def fit_ease_filtered(task, seed, lambdas=(50.0, 100.0, 250.0), select="ndcg@10"):
    """EASE^R with lambda chosen on the *filtered* validation metric. On Beauty the filtered
    optimum is far smaller (about 50 vs 500): scores of history items matter less there."""
    return fit_ease(task, seed, lambdas, select, variant="filtered")
