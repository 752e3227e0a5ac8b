//! The elementwise ops, declared once: out\[i\] = f(a\[i\], b\[i\], …) over
//! same-shaped operands, with two optional scalars α, β.
//!
//! Each op's line in `pointwise_ops!` below gives its WGSL entry point in
//! `shaders/elementwise.wgsl` (also the op's name in errors), its operands,
//! and, for a backward, the forward op it differentiates. Nothing else in the
//! backends names an op: [`Backend::pointwise`](super::Backend::pointwise)
//! validates once ([`super::plan::pointwise`]), the CPU evaluates its
//! per-element function (`cpu/pointwise.rs`, one `match` arm per op), and the
//! GPU looks the kernel up by entry name in the `kernels!` table and
//! dispatches it with generic code.
//!
//! Adding an op with its backward, e.g. softplus (tried: 4 files, 28 lines,
//! no test edited):
//! 1. two lines here: `Softplus = softplus(x);` and
//!    `SoftplusBackward = softplus_backward(x, dy), backward of Softplus;`
//! 2. two `match` arms in `cpu/pointwise.rs`, e.g.
//!    `Pointwise::Softplus => unary(inputs, out, |x| (1.0 + exp_f32(x)).ln()),`
//! 3. two entry points in `shaders/elementwise.wgsl`, the shape of `silu`'s
//!    (a name that is a WGSL built-in, like `tanh`, would shadow it: naga
//!    refuses that, and the tests say so);
//! 4. two lines in the `kernels!` table (`gpu/kernels.rs`), bindings =
//!    operands + 1: `SOFTPLUS: ElementwiseParams = "elementwise.wgsl"::softplus, bindings: 2;`
//! 5. optionally a convenience method on a trait (`be.softplus(x)`).
//!
//! The tests iterate [`Pointwise::ALL`]: every op CPU against GPU, every
//! backward against finite differences of its forward, every op's kernel
//! declared with the right bindings.

/// Declares the registry: the enum, its list and its per-op facts.
///
/// `Variant = wgsl_entry(operand, …)[, backward of Forward];` — a backward
/// takes `(x, dy)` and returns dy ⊙ Forward′(x), Forward being unary.
macro_rules! pointwise_ops {
    (@forward) => { None };
    (@forward $f:ident) => { Some(Pointwise::$f) };
    ($(
        $(#[$doc:meta])*
        $variant:ident = $entry:ident ( $($operand:ident),+ ) $(, backward of $forward:ident)? ;
    )*) => {
        /// An elementwise op of the registry (see the module docs).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Pointwise {
            $( $(#[$doc])* $variant, )*
        }

        impl Pointwise {
            /// Every op, in declaration order.
            pub const ALL: &'static [Pointwise] = &[$(Pointwise::$variant),*];

            /// The op's name in errors, and its entry point in `shaders/elementwise.wgsl`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Pointwise::$variant => stringify!($entry),)*
                }
            }

            /// The operands' names, in binding order.
            pub const fn operands(self) -> &'static [&'static str] {
                match self {
                    $(Pointwise::$variant => &[$(stringify!($operand)),+],)*
                }
            }

            /// For a backward op, the unary forward op it differentiates.
            pub const fn backward_of(self) -> Option<Pointwise> {
                match self {
                    $(Pointwise::$variant => pointwise_ops!(@forward $($forward)?),)*
                }
            }
        }
    };
}

pointwise_ops! {
    /// x·sigmoid(x).
    Silu = silu(x);
    /// dy ⊙ silu′(x), silu′(x) = σ(x)·(1 + x·(1 − σ(x))).
    SiluBackward = silu_backward(x, dy), backward of Silu;
    /// a ⊙ b.
    Mul = mul(a, b);
    /// α·a + β·b (residuals, skip rescaling; scaling when β = 0 and b = a).
    Axpby = axpby(a, b);
}

impl Pointwise {
    /// Number of operands.
    pub const fn arity(self) -> usize {
        self.operands().len()
    }
}
