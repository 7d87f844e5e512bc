//! Which instruction set the full-vocabulary passes run with: the widest the CPU has, detected
//! once at run time ([`Isa::detected`]; `DECLAB_SIMD` lowers it for comparisons), and the
//! `multiversion!` macro that compiles one `#[inline(always)]` body per ISA (portable SSE2, AVX2,
//! AVX-512) and picks one. No arithmetic lives here: each kernel fixes its own lane split and
//! accumulation order, which is what makes every ISA give the same bits.

use std::sync::OnceLock;

/// The instruction set a kernel runs with. Ordered: each level includes the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// The widest level this CPU supports, detected once. `DECLAB_SIMD=portable|avx2|avx512`
    /// lowers it (for comparisons); it can never raise it above what the CPU has.
    pub fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let cpu = Isa::cpu();
            match std::env::var("DECLAB_SIMD").ok().as_deref() {
                Some("portable") => Isa::Portable,
                Some("avx2") => cpu.min(Isa::Avx2),
                _ => cpu,
            }
        })
    }

    /// What the CPU supports (ignores `DECLAB_SIMD`).
    pub fn cpu() -> Isa {
        static CPU: OnceLock<Isa> = OnceLock::new();
        *CPU.get_or_init(Isa::probe)
    }

    fn probe() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every level this CPU can run, narrowest first.
    pub fn available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= Isa::cpu())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// Defines `$name(args)` (runs at [`Isa::detected`]) and `$at(isa, args)` (runs at `isa`, lowered
/// to what the CPU has) over an `#[inline(always)]` body `$imp`, compiled once per ISA. Generic
/// bodies cannot go through it; their files dispatch by hand in the same shape.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident / $at:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty = $imp:path) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($($arg: $ty),*) -> $ret {
            $at($crate::strategy::kernels::Isa::detected(), $($arg),*)
        }

        #[allow(dead_code)]
        $vis fn $at(isa: $crate::strategy::kernels::Isa, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::strategy::kernels::Isa;
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                match isa.min(Isa::cpu()) {
                    // SAFETY: the CPU supports the level (clamped to `Isa::cpu()` above)
                    Isa::Avx512 => return unsafe { v4($($arg),*) },
                    Isa::Avx2 => return unsafe { v3($($arg),*) },
                    Isa::Portable => {}
                }
            }
            let _ = isa;
            $imp($($arg),*)
        }
    };
}
pub(super) use multiversion;
