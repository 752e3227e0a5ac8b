//! The WGSL kernels, embedded from `shaders/` at compile time (the browser build
//! has no file system), and the cache that compiles each (kernel, constants)
//! pair into a pipeline once.

use std::collections::HashMap;

/// One WGSL entry point: the file it lives in and whether it calls the Philox
/// library (`shaders/philox.wgsl`, prepended to the source).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub entry: &'static str,
    pub file: &'static str,
    source: &'static str,
    uses_rng: bool,
}

macro_rules! kernel {
    ($name:ident, $file:literal, $entry:literal, $rng:expr) => {
        pub const $name: Kernel = Kernel {
            entry: $entry,
            file: $file,
            source: include_str!(concat!("../../../shaders/", $file)),
            uses_rng: $rng,
        };
    };
}

kernel!(MATMUL_VEC4, "matmul.wgsl", "matmul_vec4", false);
kernel!(
    MATMUL_TRANSPOSE,
    "matmul_transpose.wgsl",
    "matmul_transpose",
    false
);
kernel!(MATMUL_ANY, "matmul_any.wgsl", "matmul_any", false);
kernel!(CONV2D_K1S1, "conv2d.wgsl", "conv2d_k1s1", false);
kernel!(CONV2D_K1S2, "conv2d.wgsl", "conv2d_k1s2", false);
kernel!(CONV2D_K3S1, "conv2d.wgsl", "conv2d_k3s1", false);
kernel!(CONV2D_K3S2, "conv2d.wgsl", "conv2d_k3s2", false);
kernel!(
    CONV_WEIGHT_PACK,
    "conv_weight_pack.wgsl",
    "conv_weight_pack",
    false
);
kernel!(PERTURB, "perturb.wgsl", "perturb", true);
kernel!(PAIRED_STEP, "paired_step.wgsl", "paired_step", true);
kernel!(RNG_FILL, "rng_fill.wgsl", "rng_fill", true);
// LayerOps (gpu/layer_ops.rs)
kernel!(AXPBY, "elementwise.wgsl", "axpby", false);
kernel!(MUL, "elementwise.wgsl", "mul", false);
kernel!(SILU, "elementwise.wgsl", "silu", false);
kernel!(SILU_BACKWARD, "elementwise.wgsl", "silu_backward", false);
kernel!(ADD_BIAS, "elementwise.wgsl", "add_bias", false);
kernel!(
    ADD_SAMPLE_BIAS,
    "elementwise.wgsl",
    "add_sample_bias",
    false
);
kernel!(CONCAT_CHANNELS, "channels.wgsl", "concat_channels", false);
kernel!(SLICE_CHANNELS, "channels.wgsl", "slice_channels", false);
kernel!(UPSAMPLE2X, "resample.wgsl", "upsample2x", false);
kernel!(AVGPOOL2X, "resample.wgsl", "avgpool2x", false);
kernel!(FIR_UP, "fir.wgsl", "fir_up", false);
kernel!(FIR_DOWN, "fir.wgsl", "fir_down", false);
kernel!(REDUCE_ROWS, "reduce.wgsl", "reduce_rows", false);
kernel!(SUM_BATCH, "reduce.wgsl", "sum_batch", false);
kernel!(PAIR_DISTANCE, "pair_distance.wgsl", "pair_distance", false);
kernel!(GROUP_NORM, "group_norm.wgsl", "group_norm", false);
kernel!(
    GROUP_NORM_BACKWARD_DX,
    "group_norm_backward.wgsl",
    "group_norm_backward_dx",
    false
);
kernel!(
    GROUP_NORM_PARAM_GRAD,
    "group_norm_param_grad.wgsl",
    "group_norm_param_grad",
    false
);
kernel!(DROPOUT_MASK, "dropout.wgsl", "dropout_mask", true);

// MatOps (gpu/mat_ops.rs)
kernel!(STRIDED_PACK, "strided_pack.wgsl", "strided_pack", false);
kernel!(BMM, "bmm.wgsl", "bmm", false);
kernel!(
    CONV2D_BACKWARD_INPUT_K1S2,
    "conv2d_backward_input.wgsl",
    "conv2d_backward_input_k1s2",
    false
);
kernel!(
    CONV2D_BACKWARD_INPUT_K3S2,
    "conv2d_backward_input.wgsl",
    "conv2d_backward_input_k3s2",
    false
);
kernel!(
    CONV2D_BACKWARD_WEIGHT,
    "conv2d_backward_weight.wgsl",
    "conv2d_backward_weight",
    false
);
kernel!(
    CONV2D_BACKWARD_REDUCE,
    "conv2d_backward_reduce.wgsl",
    "conv2d_backward_reduce",
    false
);
kernel!(
    CONV2D_BACKWARD_BIAS,
    "conv2d_backward_bias.wgsl",
    "conv2d_backward_bias",
    false
);
kernel!(SOFTMAX, "softmax.wgsl", "softmax", false);
kernel!(
    SOFTMAX_BACKWARD,
    "softmax_backward.wgsl",
    "softmax_backward",
    false
);
kernel!(SOFTMAX_ROW, "softmax.wgsl", "softmax_row", false);
kernel!(
    SOFTMAX_BACKWARD_ROW,
    "softmax_backward.wgsl",
    "softmax_backward_row",
    false
);

// TrainOps (gpu/train_ops.rs)
kernel!(
    SUM_SQUARES_PARTIAL,
    "sum_squares.wgsl",
    "sum_squares_partial",
    false
);
kernel!(SUM_PARTIALS, "sum_squares.wgsl", "sum_partials", false);
kernel!(DSM_LOSS_PARTIAL, "dsm_loss.wgsl", "dsm_loss_partial", false);
kernel!(ADAM_STEP, "optim.wgsl", "adam_step", false);
kernel!(EMA_UPDATE, "ema.wgsl", "ema_update", false);

pub const PHILOX_LIBRARY: &str = include_str!("../../../shaders/philox.wgsl");

impl Kernel {
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
    pipelines: HashMap<(Kernel, Constants), wgpu::ComputePipeline>,
}

impl PipelineCache {
    pub fn get(
        &mut self,
        device: &wgpu::Device,
        kernel: Kernel,
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

/// Every kernel, for tests that validate them all with naga.
pub fn all_kernels() -> Vec<Kernel> {
    vec![
        MATMUL_VEC4,
        MATMUL_TRANSPOSE,
        MATMUL_ANY,
        CONV2D_K1S1,
        CONV2D_K1S2,
        CONV2D_K3S1,
        CONV2D_K3S2,
        CONV_WEIGHT_PACK,
        PERTURB,
        PAIRED_STEP,
        RNG_FILL,
        AXPBY,
        MUL,
        SILU,
        SILU_BACKWARD,
        ADD_BIAS,
        ADD_SAMPLE_BIAS,
        CONCAT_CHANNELS,
        SLICE_CHANNELS,
        UPSAMPLE2X,
        AVGPOOL2X,
        FIR_UP,
        FIR_DOWN,
        REDUCE_ROWS,
        SUM_BATCH,
        PAIR_DISTANCE,
        GROUP_NORM,
        GROUP_NORM_BACKWARD_DX,
        GROUP_NORM_PARAM_GRAD,
        DROPOUT_MASK,
        STRIDED_PACK,
        BMM,
        CONV2D_BACKWARD_INPUT_K1S2,
        CONV2D_BACKWARD_INPUT_K3S2,
        CONV2D_BACKWARD_WEIGHT,
        CONV2D_BACKWARD_REDUCE,
        CONV2D_BACKWARD_BIAS,
        SOFTMAX,
        SOFTMAX_BACKWARD,
        SOFTMAX_ROW,
        SOFTMAX_BACKWARD_ROW,
        SUM_SQUARES_PARTIAL,
        SUM_PARTIALS,
        DSM_LOSS_PARTIAL,
        ADAM_STEP,
        EMA_UPDATE,
    ]
}
