//! `diversity_vendi`: the Vendi score (Friedman & Dieng 2023, "The Vendi Score: A Diversity
//! Evaluation Metric for Machine Learning", TMLR; reference code `vendi-score`):
//! VS = exp(−Σ_i λ_i ln λ_i) with λ_i the eigenvalues of K / n, K_ij the cosine similarity of the
//! MiniLM embeddings of a group's n continuations (K_ii = 1, so Σ λ_i = 1). It reads as an
//! effective number of distinct samples: 1 when all are alike, n when they are mutually
//! orthogonal; unlike a mean of pairwise similarities it does not count a near-duplicate pair as
//! half the diversity of a distinct one. Needs at least 2 samples and an embedder.
//!
//! The eigenvalues come from cyclic Jacobi rotations in f64 (K is symmetric and small: one row
//! per sample), checked in the tests against closed forms and the trigonometric solution of the
//! 3×3 characteristic polynomial.

use super::metric::{Compute, Family, Metric, Needs};
use crate::embed::cosine;

pub const DIVERSITY_VENDI: Metric = Metric {
    name: "diversity_vendi",
    family: Family::Diversity,
    higher_is_better: Some(true),
    unit: "effective samples",
    needs: Needs::EMBEDDER,
    description:
        "Vendi score: exp of the entropy of the eigenvalues of the MiniLM cosine matrix / n",
    compute: Compute::Group(|g| g.embeddings.and_then(vendi_score)),
};

/// The Vendi score of a group's embeddings; `None` for fewer than 2.
pub fn vendi_score(embeddings: &[Vec<f32>]) -> Option<f64> {
    let n = embeddings.len();
    if n < 2 {
        return None;
    }
    let mut k = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        k[i][i] = 1.0;
        for j in i + 1..n {
            let c = cosine(&embeddings[i], &embeddings[j]);
            k[i][j] = c;
            k[j][i] = c;
        }
    }
    Some(vendi_of_similarity(&k))
}

/// exp(−Σ λ ln λ) over the eigenvalues λ of `k / n` (`k` symmetric with unit diagonal).
pub fn vendi_of_similarity(k: &[Vec<f64>]) -> f64 {
    let n = k.len() as f64;
    let entropy: f64 = symmetric_eigenvalues(k)
        .into_iter()
        .map(|l| (l / n).max(0.0)) // a Gram matrix is PSD; clip rounding below zero
        .filter(|&l| l > 0.0)
        .map(|l| -l * l.ln())
        .sum();
    entropy.exp()
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (unsorted).
pub fn symmetric_eigenvalues(m: &[Vec<f64>]) -> Vec<f64> {
    let n = m.len();
    let mut a: Vec<Vec<f64>> = m.to_vec();
    let norm: f64 = a.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * norm.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q] == 0.0 {
                    continue;
                }
                // the rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.4.1)
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // columns p and q, then rows p and q: A <- J^T A J
                for row in a.iter_mut() {
                    let (arp, arq) = (row[p], row[q]);
                    row[p] = c * arp - s * arq;
                    row[q] = s * arp + c * arq;
                }
                let (upper, lower) = a.split_at_mut(q);
                for (apr, aqr) in upper[p].iter_mut().zip(lower[0].iter_mut()) {
                    let (x, y) = (*apr, *aqr);
                    *apr = c * x - s * y;
                    *aqr = s * x + c * y;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entropy_exp(ls: &[f64]) -> f64 {
        ls.iter()
            .filter(|&&l| l > 0.0)
            .map(|&l| -l * l.ln())
            .sum::<f64>()
            .exp()
    }

    #[test]
    fn identical_samples_count_once_orthogonal_ones_fully() {
        let same = vec![vec![1.0f32, 2.0, 3.0]; 4];
        assert!((vendi_score(&same).unwrap() - 1.0).abs() < 1e-9);
        let orth = vec![
            vec![1.0f32, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 1.0],
        ];
        assert!((vendi_score(&orth).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(vendi_score(&same[..1]), None);
    }

    /// [[1, c], [c, 1]] / 2 has eigenvalues (1 ± c) / 2.
    #[test]
    fn two_samples_closed_form() {
        for c in [-0.3, 0.0, 0.2, 0.9, 0.999] {
            let k = vec![vec![1.0, c], vec![c, 1.0]];
            let want = entropy_exp(&[(1.0 + c) / 2.0, (1.0 - c) / 2.0]);
            assert!((vendi_of_similarity(&k) - want).abs() < 1e-12, "c = {c}");
        }
    }

    /// Random 3x3 Gram matrices: Jacobi against the trigonometric solution of the
    /// characteristic polynomial (Smith 1961), an independent route to the same eigenvalues.
    #[test]
    fn three_by_three_against_the_characteristic_polynomial() {
        let mut x = 0.37f64;
        let mut next = || {
            x = (x * 9301.0 + 0.49297).fract();
            x - 0.5
        };
        for _ in 0..200 {
            let v: Vec<Vec<f32>> = (0..3)
                .map(|_| (0..5).map(|_| next() as f32).collect())
                .collect();
            let mut k = vec![vec![0.0; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    k[i][j] = if i == j { 1.0 } else { cosine(&v[i], &v[j]) };
                }
            }
            let q = (k[0][0] + k[1][1] + k[2][2]) / 3.0;
            let p1 = k[0][1].powi(2) + k[0][2].powi(2) + k[1][2].powi(2);
            let p2 = (0..3).map(|i| (k[i][i] - q).powi(2)).sum::<f64>() + 2.0 * p1;
            let p = (p2 / 6.0).sqrt();
            let b: Vec<Vec<f64>> = (0..3)
                .map(|i| {
                    (0..3)
                        .map(|j| (k[i][j] - if i == j { q } else { 0.0 }) / p)
                        .collect()
                })
                .collect();
            let det = b[0][0] * (b[1][1] * b[2][2] - b[1][2] * b[2][1])
                - b[0][1] * (b[1][0] * b[2][2] - b[1][2] * b[2][0])
                + b[0][2] * (b[1][0] * b[2][1] - b[1][1] * b[2][0]);
            let phi = (det / 2.0).clamp(-1.0, 1.0).acos() / 3.0;
            let l1 = q + 2.0 * p * phi.cos();
            let l3 = q + 2.0 * p * (phi + 2.0 * std::f64::consts::PI / 3.0).cos();
            let l2 = 3.0 * q - l1 - l3;
            let want = entropy_exp(&[l1 / 3.0, l2 / 3.0, l3 / 3.0]);
            let got = vendi_of_similarity(&k);
            assert!((got - want).abs() < 1e-9, "{got} vs {want} for {k:?}");
            assert!((1.0 - 1e-9..=3.0 + 1e-9).contains(&got));
            let mut ev = symmetric_eigenvalues(&k);
            ev.sort_by(f64::total_cmp);
            let mut cf = vec![l1, l2, l3];
            cf.sort_by(f64::total_cmp);
            for (a, b) in ev.iter().zip(&cf) {
                assert!((a - b).abs() < 1e-9, "{ev:?} vs {cf:?}");
            }
        }
    }

    /// The circulant [[1,c,c],[c,1,c],[c,c,1]] has eigenvalues 1 + 2c, 1 - c, 1 - c.
    #[test]
    fn circulant_closed_form() {
        for c in [0.0, 0.25, 0.5, 0.95] {
            let k = vec![vec![1.0, c, c], vec![c, 1.0, c], vec![c, c, 1.0]];
            let want = entropy_exp(&[(1.0 + 2.0 * c) / 3.0, (1.0 - c) / 3.0, (1.0 - c) / 3.0]);
            assert!((vendi_of_similarity(&k) - want).abs() < 1e-12, "c = {c}");
        }
    }
}
