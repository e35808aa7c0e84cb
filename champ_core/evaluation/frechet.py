"""Frechet distance between Gaussians fitted to two feature sets (FID, FID-VID, FVD).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

The trace term is computed in float64 without the general matrix square root of S1 S2 (the scipy
`sqrtm` route of pytorch-fid and DisCo), which turns complex or inaccurate on the rank-deficient
covariances of small sets. Two exact routes, equal to the scipy one on well-conditioned covariances
(checked by the tests):
- from the statistics: symmetric eigen-decompositions, tr((S1^1/2 S2 S1^1/2)^1/2);
- from the features, when a set has no more samples than dimensions: with centred feature matrices
  A, B (S1 = A'A / (n1-1), S2 = B'B / (n2-1)) the trace term is the sum of the singular values of
  A B' / sqrt((n1-1)(n2-1)), an n1 x n2 problem free of the D - n spurious zero eigenvalues.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, rows = samples) of (N, D) features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D) for a covariance, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: means {mu1.shape}, {mu2.shape}; covariances {sigma1.shape}, "
                         f"{sigma2.shape}")
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigen = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_root = float(np.sqrt(np.clip(eigen, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def frechet_distance_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature sets."""
    mu1, sigma1 = gaussian_stats(features1)
    mu2, sigma2 = gaussian_stats(features2)
    if max(len(features1), len(features2)) > mu1.size:
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    a = np.asarray(features1, np.float64) - mu1
    b = np.asarray(features2, np.float64) - mu2
    cross = (a @ b.T) / np.sqrt((len(a) - 1) * (len(b) - 1))
    trace_root = float(np.linalg.svd(cross, compute_uv=False).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)
