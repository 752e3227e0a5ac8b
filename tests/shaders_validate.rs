//! naga parses and validates every WGSL file in shaders/ (as the GPU backend
//! compiles it: kernels that draw random numbers get philox.wgsl prepended),
//! every file is used by a registered kernel, and each kernel's Rust
//! declaration (parameter struct, binding count) matches its WGSL.

use std::collections::HashSet;

use naga::valid::ModuleInfo;
use naga::{AddressSpace, Module, ScalarKind, ShaderStage, TypeInner};
use scoredd::backend::gpu::kernels::{self, all_kernels, KernelInfo, PHILOX_LIBRARY};
use scoredd::backend::gpu::params::uniform_size;

fn validate(name: &str, src: &str) -> (Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        // The subgroup kernels run only where the device has subgroups.
        naga::valid::Capabilities::SUBGROUP,
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    (module, info)
}

/// A WGSL type spelt as the Rust parameter structs spell it (`u32`, `[u32; 4]`).
fn rust_spelling(module: &Module, ty: naga::Handle<naga::Type>) -> String {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (ScalarKind::Uint, 4) => "u32".to_string(),
        (ScalarKind::Sint, 4) => "i32".to_string(),
        (ScalarKind::Float, 4) => "f32".to_string(),
        _ => format!("{s:?}"),
    };
    match &module.types[ty].inner {
        TypeInner::Scalar(s) => scalar(*s),
        TypeInner::Vector { size, scalar: s } => format!("[{}; {}]", scalar(*s), *size as u8),
        other => format!("{other:?}"),
    }
}

/// What is wrong with `k`'s Rust declaration against its WGSL (empty: nothing).
fn declaration_mismatches(k: &KernelInfo) -> Vec<String> {
    let src = k.wgsl();
    let (module, info) = validate(k.entry, &src);
    let Some(index) = module
        .entry_points
        .iter()
        .position(|ep| ep.name == k.entry && ep.stage == ShaderStage::Compute)
    else {
        return vec![format!(
            "no compute entry point `{}` in {}",
            k.entry, k.file
        )];
    };
    let uses = info.get_entry_point(index);
    let mut wrong = Vec::new();
    let mut uniforms = Vec::new();
    let mut storage = Vec::new();
    for (h, var) in module.global_variables.iter() {
        let Some(b) = var.binding else {
            continue; // workgroup memory, private globals
        };
        if uses[h].is_empty() {
            continue;
        }
        let name = var.name.as_deref().unwrap_or("?");
        if b.group != 0 {
            wrong.push(format!("`{name}` is in group {}, not 0", b.group));
        }
        match var.space {
            AddressSpace::Uniform => uniforms.push((b.binding, var.ty)),
            AddressSpace::Storage { .. } => storage.push(b.binding),
            other => wrong.push(format!("`{name}` is in address space {other:?}")),
        }
    }
    // GpuContext::dispatch binds the parameters at 0 and the buffers at 1, 2, ….
    storage.sort_unstable();
    let expected: Vec<u32> = (1..=k.bindings as u32).collect();
    if storage != expected {
        wrong.push(format!(
            "uses storage bindings {storage:?}; the declaration says {} (bindings {expected:?})",
            k.bindings
        ));
    }
    let [(0, ty)] = uniforms[..] else {
        wrong.push(format!(
            "uses uniform bindings {:?}; expected exactly one, at binding 0",
            uniforms.iter().map(|u| u.0).collect::<Vec<_>>()
        ));
        return wrong;
    };
    let TypeInner::Struct { members, span } = &module.types[ty].inner else {
        wrong.push("its uniform is not a struct".to_string());
        return wrong;
    };
    if *span as usize != uniform_size(k.params_size) {
        wrong.push(format!(
            "uniform struct is {span} bytes; {} is {} (uploaded as {})",
            k.params_type,
            k.params_size,
            uniform_size(k.params_size)
        ));
    }
    let wgsl: Vec<(String, usize, String)> = members
        .iter()
        .map(|m| {
            (
                m.name.clone().unwrap_or_default(),
                m.offset as usize,
                rust_spelling(&module, m.ty),
            )
        })
        .collect();
    let rust: Vec<(String, usize, String)> = k
        .params_fields
        .iter()
        .map(|f| {
            (
                f.name.to_string(),
                f.offset,
                f.ty.replace(' ', "").replace(';', "; "),
            )
        })
        .collect();
    if wgsl != rust {
        wrong.push(format!(
            "{}'s fields (name, offset, type) differ from the WGSL's:\n      rust: {rust:?}\n      wgsl: {wgsl:?}",
            k.params_type
        ));
    }
    wrong
}

#[test]
fn every_kernel_validates() {
    for k in all_kernels() {
        validate(k.entry, &k.wgsl());
    }
}

/// naga reflection of each entry point against its `kernels!` line: the
/// uniform at binding 0 is the declared parameter struct (same fields, offsets,
/// types and padded size), and the storage buffers it uses are exactly
/// bindings 1 ..= `bindings`.
#[test]
fn every_kernel_matches_its_rust_declaration() {
    let kernels = all_kernels();
    assert!(kernels.len() >= 46, "only {} kernels listed", kernels.len());
    let mut seen = HashSet::new();
    let mut report = Vec::new();
    for k in &kernels {
        if !seen.insert((k.file, k.entry)) {
            report.push(format!("{}::{} is declared twice", k.file, k.entry));
        }
        for w in declaration_mismatches(k) {
            report.push(format!("{}::{}: {w}", k.file, k.entry));
        }
    }
    assert!(report.is_empty(), "\n  {}", report.join("\n  "));
}

/// Every op of the elementwise registry has its kernel: an entry point of
/// `elementwise.wgsl` named after the op, declared in the `kernels!` table
/// with `ElementwiseParams` and one storage binding per operand after the
/// output (the GPU backend binds exactly those), matching its WGSL.
#[test]
fn every_pointwise_op_has_a_fitting_kernel() {
    use scoredd::backend::Pointwise;
    let mut report = Vec::new();
    for &op in Pointwise::ALL {
        let Some(k) = kernels::pointwise(op) else {
            report.push(format!(
                "{}: no `{}` kernel with ElementwiseParams declared in {}",
                op.name(),
                op.name(),
                kernels::POINTWISE_FILE
            ));
            continue;
        };
        if k.info.bindings != op.arity() + 1 {
            report.push(format!(
                "{}: the kernel declares {} storage bindings; the op binds its output and {} operands",
                op.name(),
                k.info.bindings,
                op.arity()
            ));
        }
        for w in declaration_mismatches(&k.info) {
            report.push(format!("{}: {w}", op.name()));
        }
    }
    assert!(report.is_empty(), "\n  {}", report.join("\n  "));
}

#[test]
fn the_philox_library_validates_alone() {
    validate(
        "philox.wgsl",
        &format!("{PHILOX_LIBRARY}\n@compute @workgroup_size(1) fn main() {{}}"),
    );
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let registered: Vec<String> = all_kernels().iter().map(|k| k.wgsl()).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().unwrap() == "philox.wgsl" {
            continue;
        }
        validate(
            &path.display().to_string(),
            &format!("{PHILOX_LIBRARY}\n{text}"),
        );
        assert!(
            registered.iter().any(|r| r.contains(&text)),
            "{} is not used by any kernel in backend::gpu::kernels",
            path.display()
        );
    }
}

/// The reflection check above notices a declaration that drifted.
#[test]
fn the_declaration_check_catches_drift() {
    use scoredd::backend::gpu::kernels::{ADAM_STEP, AXPBY};
    use scoredd::backend::gpu::params::{ElementwiseParams, KernelParams};
    assert!(declaration_mismatches(&AXPBY.info).is_empty());

    let mut k = AXPBY.info;
    k.bindings = 2;
    assert!(declaration_mismatches(&k)[0].contains("storage bindings"));

    let mut k = AXPBY.info;
    k.params_size = 64;
    assert!(declaration_mismatches(&k)[0].contains("bytes"));

    // The same size and offsets, but `alpha` read as a u32.
    let mut fields = ElementwiseParams::FIELDS.to_vec();
    fields[4].ty = "u32";
    let mut k = AXPBY.info;
    k.params_fields = Box::leak(fields.into_boxed_slice());
    assert!(declaration_mismatches(&k)[0].contains("fields"));

    // Another kernel's parameters, of the same size.
    let mut k = ADAM_STEP.info;
    k.params_fields = <scoredd::backend::gpu::params::BmmParams as KernelParams>::FIELDS;
    assert!(declaration_mismatches(&k)[0].contains("fields"));
}

#[path = "support/skip.rs"]
mod skip;

/// The unrolled kernels are generated (shaders/gen_unrolled.py): the
/// committed files must be exactly what the script writes, so an edit to a
/// generated file (lost at the next run) or to the script without rerunning
/// it fails here. Needs `python3` (skipped without it, except under CI).
#[test]
fn generated_shaders_match_their_generator() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shaders = root.join("shaders");
    let out = std::env::temp_dir().join(format!("scoredd-gen-unrolled-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let run = std::process::Command::new("python3")
        .arg(shaders.join("gen_unrolled.py"))
        .arg(&out)
        .output();
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&out);
            skip::skip(&format!(
                "cannot run python3 ({e}): install it (.ci/setup does)"
            ));
            return;
        }
    };
    assert!(
        run.status.success(),
        "python3 shaders/gen_unrolled.py failed ({}): {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let mut generated: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    generated.sort();
    let mut differ = Vec::new();
    for path in &generated {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let want = std::fs::read(path).unwrap();
        match std::fs::read(shaders.join(&name)) {
            Ok(have) if have == want => {}
            Ok(have) => {
                let line = have
                    .split(|&b| b == b'\n')
                    .zip(want.split(|&b| b == b'\n'))
                    .position(|(a, b)| a != b)
                    .map_or_else(
                        || "lengths differ".to_string(),
                        |i| format!("first difference on line {}", i + 1),
                    );
                differ.push(format!("shaders/{name} ({line})"));
            }
            Err(e) => differ.push(format!("shaders/{name} (not committed: {e})")),
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(!generated.is_empty(), "gen_unrolled.py wrote no files");
    assert!(
        differ.is_empty(),
        "generated shaders differ from shaders/gen_unrolled.py's output: {}; run `python3 shaders/gen_unrolled.py` from the repository root (and edit the script, not the generated file)",
        differ.join(", ")
    );
}
