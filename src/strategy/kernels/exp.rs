//! exp for non-positive arguments, written so that LLVM vectorises it and every ISA gives the
//! same bits (Cephes' polynomial by fused multiply-adds, 2^n built from bits). The moment passes
//! and the draw evaluate this one function, so the draw's weights agree with the sums it walks.

/// 2^y for y <= 0, written so LLVM vectorises it (libm's `exp2f` is a scalar call). y < -125
/// (including -inf) gives 0, so no result is subnormal. y = n + f with n = round(y), |f| <= 1/2,
/// and Cephes' degree-5 polynomial for 2^f (relative error < 2e-7), evaluated with fused
/// multiply-adds (faster per exp pass than separate multiplies and adds); 2^n is built
/// from bits. The AVX2 and AVX-512 builds have FMA instructions; the portable build of a
/// non-native binary calls libm's `fmaf` instead: the same results, much slower, and only on
/// CPUs older than AVX2.
#[inline(always)]
pub fn exp2_nonpos(y: f32) -> f32 {
    let yc = y.max(-125.0);
    let t = yc + EXP2_MAGIC;
    let n = t - EXP2_MAGIC;
    let f = yc - n;
    // Horner with fused multiply-adds (one rounding per step, the same on every ISA)
    let mut p = f.mul_add(EXP2_P[0], EXP2_P[1]);
    p = f.mul_add(p, EXP2_P[2]);
    p = f.mul_add(p, EXP2_P[3]);
    p = f.mul_add(p, EXP2_P[4]);
    p = f.mul_add(p, EXP2_P[5]);
    let e = f.mul_add(p, 1.0);
    // the low mantissa bits of t hold n (in [-125, 0]): 2^n = bits((n + 127) << 23)
    let pow2 = f32::from_bits(t.to_bits().wrapping_sub(EXP2_BIAS) << 23);
    // NaN (from an infinite temperature scale) gives 0, like the masked lanes of the passes
    if y >= -125.0 {
        e * pow2
    } else {
        0.0
    }
}

/// Round-to-nearest by adding 1.5·2^23 (vectorises; `round` may not).
pub(super) const EXP2_MAGIC: f32 = 12_582_912.0;
/// The bits of EXP2_MAGIC minus the f32 exponent bias: t.bits - EXP2_BIAS = n + 127.
pub(super) const EXP2_BIAS: u32 = 0x4B40_0000 - 127;
/// Cephes `exp2f`: 2^f = 1 + f·P(f) on [-1/2, 1/2], highest degree first.
pub(super) const EXP2_P: [f32; 6] = [
    1.535_336_2e-4,
    1.339_887_4e-3,
    9.618_437e-3,
    5.550_332_5e-2,
    2.402_264_8e-1,
    6.931_472e-1,
];

/// exp(x) for x <= 0 as `2^(x·log2 e)`: the same function the moment passes evaluate, so the
/// draw's weights agree with their sums. Relative error < 2e-7 + 7e-8·|x| (the second term is
/// the rounding of x·log2 e, the same size as the rounding already in a logit difference).
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    exp2_nonpos(x * std::f32::consts::LOG2_E)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_f64_exp() {
        let mut worst = 0f64;
        let mut y = -125.0f32;
        while y <= 0.0 {
            let got = exp2_nonpos(y) as f64;
            let want = (y as f64).exp2();
            worst = worst.max(((got - want) / want).abs());
            y += 0.0007;
        }
        assert!(worst < 2e-7, "exp2: worst relative error {worst}");
        let mut x = -86.0f32;
        while x <= 0.0 {
            let got = exp_nonpos(x) as f64;
            let want = (x as f64).exp();
            let err = ((got - want) / want).abs();
            assert!(err < 2e-7 + 7e-8 * x.abs() as f64, "exp({x}): {err}");
            x += 0.0007;
        }
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-100.0), 0.0);
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp2_nonpos(-1.0), 0.5);
    }
}
