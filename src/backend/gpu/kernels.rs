//! The WGSL kernels, embedded from `shaders/` at compile time (the browser build
//! has no file system), and the cache that compiles each (kernel, constants)
//! pair into a pipeline once.
//!
//! Adding a kernel: write the entry point in `shaders/` (uniform parameters at
//! binding 0, storage buffers at 1, 2, …), declare its parameter struct in
//! [`super::params`] with the WGSL struct's fields, add one line to the
//! `kernels!` table below, and dispatch it with
//! `ctx.dispatch(kernels::NAME, &[], &params, &binds, groups)`.
//! `tests/shaders_validate.rs` checks the line and the struct against the WGSL.
//! An elementwise op of the registry ([`crate::backend::Pointwise`]) needs
//! only its line: the GPU backend finds it by entry name ([`pointwise`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use super::params::*;
use crate::backend::Pointwise;

/// What the pipeline cache and the tests need to know of one WGSL entry point,
/// with its parameter type erased: [`all_kernels`] lists these.
#[derive(Clone, Copy, Debug)]
pub struct KernelInfo {
    /// The entry point's name.
    pub entry: &'static str,
    /// Its file in `shaders/`.
    pub file: &'static str,
    source: &'static str,
    /// Whether it calls the Philox library (`shaders/philox.wgsl`, prepended).
    pub uses_rng: bool,
    /// The Rust parameter struct's name.
    pub params_type: &'static str,
    /// `size_of` the parameter struct (before [`uniform_size`] rounding).
    pub params_size: usize,
    /// The parameter struct's fields, to compare with the WGSL's.
    pub params_fields: &'static [ParamField],
    /// Storage buffers bound after the uniform: bindings 1 ..= `bindings`.
    pub bindings: usize,
}

/// An entry point is identified by (file, entry): the rest is derived from them.
impl PartialEq for KernelInfo {
    fn eq(&self, other: &Self) -> bool {
        (self.file, self.entry) == (other.file, other.entry)
    }
}

impl Eq for KernelInfo {}

impl Hash for KernelInfo {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.file, self.entry).hash(state);
    }
}

/// One WGSL entry point whose uniform block (binding 0) is a `P`: dispatching
/// it takes a `&P`, so parameters cannot be handed to the wrong kernel.
pub struct Kernel<P> {
    pub info: KernelInfo,
    params: PhantomData<fn(P)>,
}

impl<P> Clone for Kernel<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for Kernel<P> {}

impl<P> std::fmt::Debug for Kernel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.info.fmt(f)
    }
}

/// Declares every kernel, one line each, and the list [`all_kernels`] returns:
///
/// `NAME: ParamsType = "file.wgsl"::entry_point, bindings: N[, rng];`
///
/// `bindings` counts the storage buffers after the uniform; `rng` prepends
/// the Philox library.
macro_rules! kernels {
    (@rng) => { false };
    (@rng rng) => { true };
    ($(
        $(#[$meta:meta])*
        $name:ident : $params:ty = $file:literal :: $entry:ident,
            bindings: $bindings:literal $(, $rng:ident)? ;
    )*) => {
        $(
            $(#[$meta])*
            pub const $name: Kernel<$params> = Kernel {
                info: KernelInfo {
                    entry: stringify!($entry),
                    file: $file,
                    source: include_str!(concat!("../../../shaders/", $file)),
                    uses_rng: kernels!(@rng $($rng)?),
                    params_type: <$params as KernelParams>::NAME,
                    params_size: std::mem::size_of::<$params>(),
                    params_fields: <$params as KernelParams>::FIELDS,
                    bindings: $bindings,
                },
                params: PhantomData,
            };
        )*

        /// Every kernel declared in this file.
        const ALL: &[KernelInfo] = &[$($name.info),*];
    };
}

kernels! {
    // Backend (gpu/primitives.rs)
    RNG_FILL: RngFillParams = "rng_fill.wgsl"::rng_fill, bindings: 1, rng;
    MATMUL_VEC4: MatmulParams = "matmul.wgsl"::matmul_vec4, bindings: 3;
    MATMUL_TRANSPOSE: MatmulTransposeParams = "matmul_transpose.wgsl"::matmul_transpose, bindings: 2;
    MATMUL_ANY: MatmulAnyParams = "matmul_any.wgsl"::matmul_any, bindings: 3;
    MATMUL_TILED: MatmulAnyParams = "matmul_tiled.wgsl"::matmul_tiled, bindings: 3;
    STRIDED_PACK: StridedPackParams = "strided_pack.wgsl"::strided_pack, bindings: 2;
    STRIDED_PACK_ROWS4: StridedPackParams = "strided_pack_rows4.wgsl"::strided_pack_rows4, bindings: 2;
    BMM: BmmParams = "bmm.wgsl"::bmm, bindings: 3;
    SUM_BATCH: ReduceParams = "reduce.wgsl"::sum_batch, bindings: 2;
    CONCAT_CHANNELS: ChannelsParams = "channels.wgsl"::concat_channels, bindings: 3;
    SLICE_CHANNELS: ChannelsParams = "channels.wgsl"::slice_channels, bindings: 2;
    CONCAT_CHANNELS_VEC4: ChannelsParams = "channels_vec4.wgsl"::concat_channels_vec4, bindings: 3;
    SLICE_CHANNELS_VEC4: ChannelsParams = "channels_vec4.wgsl"::slice_channels_vec4, bindings: 2;

    // The elementwise registry (backend::pointwise), found by entry name:
    // bindings = the op's operands + 1 (the output).
    AXPBY: ElementwiseParams = "elementwise.wgsl"::axpby, bindings: 3;
    MUL: ElementwiseParams = "elementwise.wgsl"::mul, bindings: 3;
    SILU: ElementwiseParams = "elementwise.wgsl"::silu, bindings: 2;
    SILU_BACKWARD: ElementwiseParams = "elementwise.wgsl"::silu_backward, bindings: 3;

    // ModuleOps (gpu/module_ops.rs, gpu/conv.rs)
    CONV2D_K1S1: Conv2dParams = "conv2d.wgsl"::conv2d_k1s1, bindings: 6;
    CONV2D_K1S2: Conv2dParams = "conv2d.wgsl"::conv2d_k1s2, bindings: 6;
    CONV2D_K3S1: Conv2dParams = "conv2d.wgsl"::conv2d_k3s1, bindings: 6;
    CONV2D_K3S2: Conv2dParams = "conv2d.wgsl"::conv2d_k3s2, bindings: 6;
    CONV2D_TILED: Conv2dParams = "conv2d_tiled.wgsl"::conv2d_tiled, bindings: 6;
    CONV2D_K3S1_SUBGROUP: Conv2dParams = "conv2d_subgroup.wgsl"::conv2d_k3s1_subgroup, bindings: 6;
    CONV2D_K3S1_SUBGROUP_ROWS2: Conv2dParams = "conv2d_subgroup.wgsl"::conv2d_k3s1_subgroup_rows2, bindings: 6;
    CONV2D_K3S1_SUBGROUP_ROWS4: Conv2dParams = "conv2d_subgroup.wgsl"::conv2d_k3s1_subgroup_rows4, bindings: 6;
    CONV2D_K1S1_SUBGROUP: Conv2dParams = "conv2d_subgroup.wgsl"::conv2d_k1s1_subgroup, bindings: 6;
    CONV_WEIGHT_PACK: ConvWeightPackParams = "conv_weight_pack.wgsl"::conv_weight_pack, bindings: 2;
    CONV2D_BACKWARD_INPUT_K1S2: Conv2dBackwardInputParams = "conv2d_backward_input.wgsl"::conv2d_backward_input_k1s2, bindings: 3;
    CONV2D_BACKWARD_INPUT_K3S2: Conv2dBackwardInputParams = "conv2d_backward_input.wgsl"::conv2d_backward_input_k3s2, bindings: 3;
    CONV2D_BACKWARD_WEIGHT: Conv2dBackwardWeightParams = "conv2d_backward_weight.wgsl"::conv2d_backward_weight, bindings: 3;
    CONV2D_BACKWARD_WEIGHT_SUBGROUP: Conv2dBackwardWeightParams = "conv2d_backward_weight_subgroup.wgsl"::conv2d_backward_weight_subgroup, bindings: 3;
    CONV2D_BACKWARD_WEIGHT_ROW3: Conv2dBackwardWeightParams = "conv2d_backward_weight_row3.wgsl"::conv2d_backward_weight_row3, bindings: 3;
    CONV2D_BACKWARD_WEIGHT_ROW3_SUBGROUP: Conv2dBackwardWeightParams = "conv2d_backward_weight_row3_subgroup.wgsl"::conv2d_backward_weight_row3_subgroup, bindings: 3;
    CONV2D_BACKWARD_REDUCE: Conv2dBackwardReduceParams = "conv2d_backward_reduce.wgsl"::conv2d_backward_reduce, bindings: 2;
    CONV2D_BACKWARD_BIAS: Conv2dBackwardBiasParams = "conv2d_backward_bias.wgsl"::conv2d_backward_bias, bindings: 2;
    GROUP_NORM: GroupNormParams = "group_norm.wgsl"::group_norm, bindings: 5;
    GROUP_NORM_SILU_GRAD: GroupNormParams = "group_norm.wgsl"::group_norm_silu_grad, bindings: 6;
    GROUP_NORM_BACKWARD_DX: GroupNormBackwardParams = "group_norm_backward.wgsl"::group_norm_backward_dx, bindings: 5;
    GROUP_NORM_PARAM_GRAD: GroupNormParamGradParams = "group_norm_param_grad.wgsl"::group_norm_param_grad, bindings: 5;
    GROUP_NORM_VEC4: GroupNormParams = "group_norm_vec4.wgsl"::group_norm_vec4, bindings: 5;
    GROUP_NORM_SILU_GRAD_VEC4: GroupNormParams = "group_norm_vec4.wgsl"::group_norm_silu_grad_vec4, bindings: 6;
    GROUP_NORM_BACKWARD_DX_VEC4: GroupNormBackwardParams = "group_norm_backward_vec4.wgsl"::group_norm_backward_dx_vec4, bindings: 5;
    GROUP_NORM_PARAM_GRAD_VEC4: GroupNormParamGradParams = "group_norm_param_grad_vec4.wgsl"::group_norm_param_grad_vec4, bindings: 5;
    SOFTMAX: SoftmaxParams = "softmax.wgsl"::softmax, bindings: 2;
    SOFTMAX_BACKWARD: SoftmaxParams = "softmax_backward.wgsl"::softmax_backward, bindings: 3;
    SOFTMAX_ROW: SoftmaxParams = "softmax.wgsl"::softmax_row, bindings: 2;
    SOFTMAX_BACKWARD_ROW: SoftmaxParams = "softmax_backward.wgsl"::softmax_backward_row, bindings: 3;
    ADD_BIAS: ElementwiseParams = "elementwise.wgsl"::add_bias, bindings: 3;
    ADD_SAMPLE_BIAS: ElementwiseParams = "elementwise.wgsl"::add_sample_bias, bindings: 3;
    REDUCE_ROWS: ReduceParams = "reduce.wgsl"::reduce_rows, bindings: 2;
    UPSAMPLE2X: ResampleParams = "resample.wgsl"::upsample2x, bindings: 2;
    AVGPOOL2X: ResampleParams = "resample.wgsl"::avgpool2x, bindings: 2;
    UPSAMPLE2X_VEC4: ResampleParams = "resample_vec4.wgsl"::upsample2x_vec4, bindings: 2;
    AVGPOOL2X_VEC4: ResampleParams = "resample_vec4.wgsl"::avgpool2x_vec4, bindings: 2;
    FIR_UP: FirParams = "fir.wgsl"::fir_up, bindings: 2;
    FIR_DOWN: FirParams = "fir.wgsl"::fir_down, bindings: 2;
    DROPOUT_MASK: DropoutParams = "dropout.wgsl"::dropout_mask, bindings: 1, rng;

    // ScoreDdOps (gpu/scoredd_ops.rs)
    PERTURB: PerturbParams = "perturb.wgsl"::perturb, bindings: 4, rng;
    PAIRED_STEP: PairedStepParams = "paired_step.wgsl"::paired_step, bindings: 6, rng;
    PAIR_DISTANCE: PairDistanceParams = "pair_distance.wgsl"::pair_distance, bindings: 2;

    // TrainOps (gpu/train_ops.rs)
    SUM_SQUARES_PARTIAL: SumSquaresParams = "sum_squares.wgsl"::sum_squares_partial, bindings: 2;
    SUM_PARTIALS: SumSquaresParams = "sum_squares.wgsl"::sum_partials, bindings: 3;
    DSM_LOSS_PARTIAL: DsmLossParams = "dsm_loss.wgsl"::dsm_loss_partial, bindings: 5;
    ADAM_STEP: AdamParams = "optim.wgsl"::adam_step, bindings: 5;
    ADAM_EMA_STEP: AdamParams = "optim.wgsl"::adam_ema_step, bindings: 6;
    EMA_UPDATE: EmaParams = "ema.wgsl"::ema_update, bindings: 2;
}

pub const PHILOX_LIBRARY: &str = include_str!("../../../shaders/philox.wgsl");

impl KernelInfo {
    /// The full WGSL text handed to the compiler.
    pub fn wgsl(&self) -> String {
        if self.uses_rng {
            format!("{PHILOX_LIBRARY}\n{}", self.source)
        } else {
            self.source.to_string()
        }
    }
}

/// Pipeline-overridable constants, e.g. `[("KSIZE", 3), ("STRIDE", 1)]`.
pub type Constants = Vec<(&'static str, u32)>;

#[derive(Default)]
pub struct PipelineCache {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    pipelines: HashMap<(KernelInfo, Constants), wgpu::ComputePipeline>,
}

impl PipelineCache {
    pub fn get(
        &mut self,
        device: &wgpu::Device,
        kernel: KernelInfo,
        constants: &[(&'static str, u32)],
    ) -> wgpu::ComputePipeline {
        let key = (kernel, constants.to_vec());
        if let Some(p) = self.pipelines.get(&key) {
            return p.clone();
        }
        let module = self
            .modules
            .entry(kernel.file)
            .or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.file),
                    source: wgpu::ShaderSource::Wgsl(kernel.wgsl().into()),
                })
            })
            .clone();
        let consts: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.entry),
            layout: None,
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &consts,
                ..Default::default()
            },
            cache: None,
        });
        self.pipelines.insert(key, pipeline.clone());
        pipeline
    }
}

/// The file holding the elementwise registry's kernels.
pub const POINTWISE_FILE: &str = "elementwise.wgsl";

impl<P: KernelParams> Kernel<P> {
    /// The declared kernel `file::entry`, if there is one and its uniform
    /// block is a `P`.
    pub fn find(file: &str, entry: &str) -> Option<Kernel<P>> {
        ALL.iter()
            .find(|k| k.file == file && k.entry == entry && k.params_type == P::NAME)
            .map(|&info| Kernel {
                info,
                params: PhantomData,
            })
    }
}

/// The kernel of an elementwise op: the entry point of [`POINTWISE_FILE`]
/// named after it (`tests/shaders_validate.rs` checks every op has one, with
/// one binding per operand after the output).
pub fn pointwise(op: Pointwise) -> Option<Kernel<ElementwiseParams>> {
    Kernel::find(POINTWISE_FILE, op.name())
}

/// Every kernel, for tests that check them all against their WGSL with naga.
pub fn all_kernels() -> Vec<KernelInfo> {
    ALL.to_vec()
}
